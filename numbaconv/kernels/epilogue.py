"""The fused epilogue: an activation applied where a kernel writes its output.

Kernels take the activation as an int code (``ACT_*``, from
``numbaconv._activation``) and call :func:`activate` on a run of output they
have just written, while it is still in L1/L2: no second pass over the
output in memory.  The test on the code is outside the loops, which then
vectorise (ReLU and ReLU6 are selects).

NaN stays NaN (``v < 0`` is false for it), as in PyTorch's activations.
"""

import numba
import numpy as np

from ._copy import U

ACT_NONE, ACT_RELU, ACT_RELU6, ACT_SILU = 0, 1, 2, 3


@numba.njit(inline="always")
def activate(a, start, n, act):
    """a[start:start+n] = act(a[start:start+n]), in place; nothing for ACT_NONE."""
    if act == ACT_RELU:
        for i in range(n):
            v = a[U(start + i)]
            a[U(start + i)] = 0 if v < 0 else v
    elif act == ACT_RELU6:
        for i in range(n):
            v = a[U(start + i)]
            a[U(start + i)] = 0 if v < 0 else (6 if v > 6 else v)
    elif act == ACT_SILU:
        for i in range(n):
            v = a[U(start + i)]
            a[U(start + i)] = v / (1 + np.exp(-v))
