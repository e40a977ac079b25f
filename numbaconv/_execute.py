"""What the algorithms' runners share at run time.

The per-thread workspace, the doors to the im2col/col2im kernels (gather
and scatter), how a Numba kernel is launched beside OpenBLAS's threads,
and NumPy's floating-point warnings.  The runners themselves live with
their algorithms (``numbaconv.algorithms``).
"""

from __future__ import annotations

import contextlib
import functools
import threading

import numba
import numpy as np

from . import _threads, config, kernels
from ._args import ceil_div


def view(a: np.ndarray, shape) -> np.ndarray:
    """``a.reshape(shape)`` that must not copy (we write through it)."""
    v = a.reshape(shape)
    if v.size and not np.may_share_memory(v, a):  # pragma: no cover - a planning bug
        raise AssertionError(f"reshape of {a.shape} to {shape} copied")
    return v


_local = threading.local()

# packed_gemm kernels of at least this much work stop OpenBLAS's spinning
# threads first; indirect_gemm's always do (docs/design/decisions.md,
# "Stopping OpenBLAS's threads before Numba kernels").
QUIET_BLAS_FLOPS = 10**9


def workspace(nbytes: int, dtype: np.dtype, slot: str = "conv") -> np.ndarray:
    """This thread's scratch buffer ``slot``, grown on demand and kept between calls.

    Reusing it saves the page faults of a fresh multi-MB allocation on every
    call (~1 ms for a 7 MB buffer here).  One buffer per Python thread keeps
    concurrent calls apart; each is at most ``config.max_workspace_bytes``
    (plus one output row, see ``algorithms._gemm.chunking``).  The 2-d
    algorithms use slot "conv"; the 3-d depth fold, whose rows a 2-d call
    then reads, has its own ("fold").
    """
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        _local.bufs = bufs = {}
    buf = bufs.get(slot)
    if buf is None or buf.nbytes < nbytes:
        bufs[slot] = buf = None  # free the old one before allocating the new
        bufs[slot] = buf = np.empty(nbytes, np.uint8)
    return buf[:nbytes].view(dtype)


def release_workspace() -> None:
    """Free the calling thread's scratch buffers (each up to ``config.max_workspace_bytes``).

    conv2d keeps it between calls to save a fresh allocation each time; call
    this when a thread is done convolving but goes on living.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> _ = numbaconv.conv2d(np.ones((1, 2, 6, 6)), np.ones((3, 2, 3, 3)))
    >>> numbaconv.release_workspace()
    """
    _local.bufs = None


# --------------------------------------------------------------------------
# gather / scatter: the only doors to the im2col/col2im kernels
# --------------------------------------------------------------------------
def _nchw_strides(cols: np.ndarray, nb: int, row_major: bool) -> tuple[int, int, int]:
    """(pb*Q, image stride, row stride) of a 3-d NCHW column buffer."""
    length = cols.shape[2]
    if row_major:  # (C*KH*KW, nb, pb*Q)
        return length, length, nb * length
    return length, cols.shape[1] * length, length  # (nb, C*KH*KW, pb*Q)


@contextlib.contextmanager
def serial_below(nbytes: int):
    """Kernels launched inside run on the calling thread alone if ``nbytes`` is small.

    Small means at most ``config.serial_kernel_bytes``: then OpenBLAS's worker,
    spinning after the last GEMM, keeps the other core to itself (see
    ``config``).  ``numba.set_num_threads`` is per calling thread, so
    concurrent callers keep their own counts.
    """
    if nbytes > config.serial_kernel_bytes:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


# A gather or col2im of at least this many bytes stops OpenBLAS's spinning
# threads first (``numba_only``): next to a GEMM, sharing the cores with them
# cost the copy more than the next GEMM pays to restart them, ~0.1-0.2 ms
# (docs/design/decisions.md, "Stopping OpenBLAS's threads before Numba kernels").
QUIET_COPY_BYTES = 4 << 20


def _copy_launch(nbytes: int):
    """How to launch a gather or col2im kernel of ``nbytes`` columns."""
    start = numba_only() if nbytes >= QUIET_COPY_BYTES else serial_below
    return start(nbytes)


def gather(plan, x: np.ndarray, cols: np.ndarray, n0: int = 0, p0: int = 0,
           nb: int | None = None, row_major: bool = False) -> None:
    """im2col of images ``n0:n0+nb``, output rows ``p0:p0+pb``, into ``cols``.

    NCHW ``cols`` is (nb, C*KH*KW, pb*Q), or (C*KH*KW, nb, pb*Q) with
    ``row_major`` (the operand of one GEMM over all nb images).  NHWC ``cols``
    is (nb*pb*Q, KH*KW*C) with group-major columns (see ``kernels.im2col``).
    ``x`` is C-contiguous in the plan's dtype; ``cols`` C-contiguous.
    """
    g, t = plan.geometry, plan.tables
    nb = g.n - n0 if nb is None else nb
    kernel = kernels.get("im2col", plan.layout.name, plan.dtype)
    with _copy_launch(cols.nbytes):
        if plan.layout.channels_last:
            kernel(x, n0, p0, nb, g.groups, cols, t.htab, t.wtab, t.wint)
        else:
            length, bstride, rstride = _nchw_strides(cols, nb, row_major)
            kernel(x, n0, p0, nb, length // g.q, cols.reshape(-1), bstride, rstride, t.htab,
                   t.wtab, t.hint, t.wint, t.sh, t.sw)


def scatter(plan, cols: np.ndarray, x: np.ndarray, n0: int = 0, p0: int = 0,
            nb: int | None = None, row_major: bool = False) -> None:
    """col2im: ``x[n0:n0+nb] +=`` the columns of output rows ``p0..``; gather's adjoint.

    Same ``cols`` layouts as :func:`gather`.  ``x`` must hold zeros (or values
    to add to).  Race-free in parallel.
    """
    g, t = plan.geometry, plan.tables
    nb = g.n - n0 if nb is None else nb
    kernel = kernels.get("col2im", plan.layout.name, plan.dtype)
    with _copy_launch(cols.nbytes):
        if plan.layout.channels_last:
            kernel(cols, n0, p0, nb, g.groups, x, t.htab, t.wtab, t.wint)
        else:
            length, bstride, rstride = _nchw_strides(cols, nb, row_major)
            kernel(cols.reshape(-1), n0, p0, nb, length // g.q, bstride, rstride, x, t.htab,
                   t.wtab, t.wint, t.sw)


def channel_block(channels: int, images: int, threads: int, lanes: int = 8) -> int:
    """Channels per task of the NHWC depthwise input gradient (image x channel block).

    Enough blocks for every thread, but blocks of at least one vector's
    ``lanes`` channels, so that the innermost loop, over channels, still
    vectorises.
    """
    blocks = ceil_div(4 * threads, max(images, 1))
    return max(ceil_div(channels, blocks), min(channels, lanes))


# --------------------------------------------------------------------------
# Launching kernels
# --------------------------------------------------------------------------
@functools.cache
def _no_bias(dtype: np.dtype) -> np.ndarray:
    zero = np.zeros(1, dtype)
    zero.flags.writeable = False  # shared by every call; kernels only read a bias
    return zero


def bias_arg(bias, dtype) -> tuple[np.ndarray, bool]:
    """(array, has_bias) for a kernel: kernels take an array even without a bias."""
    return (bias, True) if bias is not None else (_no_bias(np.dtype(dtype)), False)


def quiet_blas_before(flops: int) -> None:
    """Stop OpenBLAS's spinning threads before a Numba GEMM kernel of QUIET_BLAS_FLOPS."""
    if flops >= QUIET_BLAS_FLOPS:
        _threads.quiet_blas()


def numba_only():
    """Before Numba kernels with no BLAS call between them: how to launch each.

    Stops OpenBLAS's idle, spinning threads (``_threads.quiet_blas``), so
    the kernels get every core.  Returns ``serial_below`` when it cannot
    (another Python thread exists): then small kernels stay on the calling
    thread; else a no-op for any size.
    """
    if _threads.quiet_blas():
        return lambda nbytes: contextlib.nullcontext()
    return serial_below


def check_reshapable(algorithm: str, x: np.ndarray, out: np.ndarray) -> None:
    """x and out must be C-contiguous: the runners reshape them, and a copy would lose writes."""
    if not (out.flags.c_contiguous and x.flags.c_contiguous):  # pragma: no cover - a caller's bug
        raise AssertionError(f"{algorithm}: x and out must be C-contiguous (reshaped)")


def quiet_fp(func):
    """Run ``func`` without NumPy's floating-point warnings.

    A NaN or inf in the input gives NaN or inf in the output, as a direct
    convolution does; it must not also raise ``RuntimeWarning: invalid value
    encountered in matmul`` from the GEMMs inside (``np.errstate`` is per
    thread, so concurrent callers keep their own settings).
    """

    @functools.wraps(func)
    def quiet(*args, **kwargs):
        with np.errstate(all="ignore"):
            return func(*args, **kwargs)

    return quiet
