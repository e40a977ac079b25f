"""Activations fused into the convolution: names, codes, and their NumPy twins.

``conv2d(..., activation="relu")`` returns ``relu(conv2d(...) + bias)``.
The kernels apply it where they write their output (``kernels.epilogue``);
the BLAS paths, whose GEMM writes the output, apply :func:`apply` to each
chunk right after its GEMM and bias, while the chunk is still in cache.
The layers' backward uses :func:`backward`.
"""

from __future__ import annotations

import numpy as np

from ._args import shown
from .kernels.epilogue import ACT_NONE, ACT_RELU, ACT_RELU6, ACT_SILU

#: The activations ``activation=`` takes, by name, and their kernel codes.
ACTIVATIONS = {"relu": ACT_RELU, "relu6": ACT_RELU6, "silu": ACT_SILU}

__all__ = ["ACTIVATIONS", "activation_code", "apply", "backward"]


def activation_code(activation) -> int:
    """``None`` or a name of ``ACTIVATIONS`` -> its kernel code; else a clear error."""
    if activation is None:
        return ACT_NONE
    if not isinstance(activation, str):
        raise TypeError(f"activation: expected None or one of {list(ACTIVATIONS)}, got "
                        f"{shown(activation)}")
    code = ACTIVATIONS.get(activation)
    if code is None:
        raise ValueError(f"activation: expected None or one of {list(ACTIVATIONS)}, got "
                         f"{activation!r}")
    return code


def apply(a: np.ndarray, code: int) -> None:
    """``a = act(a)`` in place (``a`` may be a strided view), as ``kernels.epilogue.activate``.

    NaN stays NaN: ``np.maximum`` and ``np.minimum`` propagate it.
    """
    if code == ACT_RELU:
        np.maximum(a, 0, out=a)
    elif code == ACT_RELU6:
        np.maximum(a, 0, out=a)
        np.minimum(a, 6, out=a)
    elif code == ACT_SILU:
        with np.errstate(over="ignore"):  # exp(-v) -> inf for v << 0 gives v / inf = -0
            np.divide(a, 1 + np.exp(-a), out=a)


def backward(grad_out: np.ndarray, kept: np.ndarray, code: int) -> np.ndarray:
    """The gradient before the activation, from the one after it.

    ``kept`` is what the layer's forward kept: the activation's output for
    ReLU and ReLU6 (as PyTorch's threshold_backward reads), its input for
    SiLU.  The gradient at a kink (0, 6) is 0, and a NaN passes the
    gradient through, as in PyTorch's threshold_backward and
    hardtanh_backward.
    """
    if code == ACT_RELU:
        return np.where(kept <= 0, 0, grad_out).astype(grad_out.dtype, copy=False)
    if code == ACT_RELU6:
        return np.where((kept <= 0) | (kept >= 6), 0, grad_out).astype(grad_out.dtype,
                                                                         copy=False)
    if code == ACT_SILU:
        with np.errstate(over="ignore"):
            s = 1 / (1 + np.exp(-kept))
        return (grad_out * (s * (1 + kept * (1 - s)))).astype(grad_out.dtype, copy=False)
    return grad_out
