"""Running a plan: the gather kernels feed NumPy's BLAS-backed matmul.

Every GEMM writes straight into a view of the output (``np.matmul(out=...)``),
so there is no extra copy of the result, and every weight is used through a
reshaped view of the caller's layout (OIHW or HWIO), never repacked.

Runners receive arrays that are C-contiguous, native-endian and of the
compute dtype; they treat the inputs as read-only.
"""

from __future__ import annotations

import threading

import numpy as np

from . import kernels
from ._args import ceil_div
from ._plan import Plan


def _view(a: np.ndarray, shape) -> np.ndarray:
    """``a.reshape(shape)`` that must not copy (we write through it)."""
    v = a.reshape(shape)
    if not np.may_share_memory(v, a):  # pragma: no cover - a planning bug, not user input
        raise AssertionError(f"reshape of {a.shape} to {shape} copied")
    return v


_local = threading.local()


def workspace(nbytes: int, dtype: np.dtype) -> np.ndarray:
    """This thread's column buffer, grown on demand and kept between calls.

    Reusing it saves the page faults of a fresh multi-MB allocation on every
    call (~1 ms for a 7 MB buffer here).  One buffer per Python thread keeps
    concurrent calls apart; each is at most ``config.max_workspace_bytes``.
    """
    buf = getattr(_local, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        _local.buf = buf = None  # free the old one before allocating the new
        _local.buf = buf = np.empty(nbytes, np.uint8)
    return buf[:nbytes].view(dtype)


def release_workspace() -> None:
    """Free this thread's column buffer."""
    _local.buf = None


def packed_weight(plan: Plan, w: np.ndarray) -> np.ndarray:
    """The weight as (groups, K, ...) matrices for the GEMMs, as a view.

    NCHW: OIHW -> (G, Og, Cg*KH*KW), the left operand of W @ cols.
    NHWC: HWIO -> (G, KH*KW*Cg, Og), the right operand of cols @ W.
    """
    g = plan.geometry
    kk = g.kh * g.kw
    if plan.layout == "NCHW":
        return _view(w, (g.groups, g.og, g.cg * kk))
    return _view(w, (kk * g.cg, g.groups, g.og)).transpose(1, 0, 2)


# --------------------------------------------------------------------------
# gather / scatter: the only doors to the im2col/col2im kernels
# --------------------------------------------------------------------------
def gather(plan: Plan, x: np.ndarray, cols: np.ndarray, n0: int = 0, p0: int = 0,
           nb: int | None = None) -> None:
    """im2col of images ``n0:n0+nb``, output rows ``p0:p0+pb``, into ``cols``.

    ``cols`` is NCHW: (nb, C*KH*KW, pb*Q); NHWC: (nb*pb*Q, KH*KW*C) with
    group-major columns (see ``kernels.im2col``).  ``x`` is C-contiguous
    in the plan's dtype.
    """
    t = plan.tables
    kernel = kernels.get("im2col", plan.layout, plan.dtype)
    if plan.layout == "NCHW":
        kernel(x, n0, p0, cols, *t.args())
    else:
        nb = plan.geometry.n - n0 if nb is None else nb
        kernel(x, n0, p0, nb, plan.geometry.groups, cols, t.htab, t.wtab)


def scatter(plan: Plan, cols: np.ndarray, x: np.ndarray, n0: int = 0, p0: int = 0,
            nb: int | None = None) -> None:
    """col2im: ``x[n0:n0+nb] += `` the columns of output rows ``p0..``; the adjoint of gather.

    ``x`` must hold zeros (or values to add to).  Race-free in parallel.
    """
    t = plan.tables
    kernel = kernels.get("col2im", plan.layout, plan.dtype)
    if plan.layout == "NCHW":
        kernel(cols, n0, p0, x, *t.args())
        return
    g = plan.geometry
    nb = g.n - n0 if nb is None else nb
    # Enough channel blocks for every thread, but blocks of at least a few
    # channels so the innermost loop still vectorises.
    blocks = ceil_div(4 * plan.threads, max(nb, 1))
    cblock = max(ceil_div(g.c, blocks), min(g.c, 8))
    kernel(cols, n0, p0, nb, g.groups, cblock, x, t.htab, t.wtab)


def run_gemm_1x1(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray) -> None:
    g = plan.geometry
    wp = packed_weight(plan, w)
    if plan.layout == "NCHW":
        # One GEMM per image and group: W[Og, Cg] @ x[n, g][Cg, H*W].
        o = _view(out, (g.n, g.groups, g.og, g.p * g.q))
        np.matmul(wp, _view(x, (g.n, g.groups, g.cg, g.h * g.w)), out=o)
        if bias is not None:
            o += bias.reshape(g.groups, g.og, 1)
    else:
        # One GEMM over the whole batch per group: x[N*H*W, Cg] @ W[Cg, Og].
        rows = g.n * g.h * g.w
        o = _view(out, (rows, g.groups, g.og)).transpose(1, 0, 2)
        np.matmul(_view(x, (rows, g.groups, g.cg)).transpose(1, 0, 2), wp, out=o)
        if bias is not None:
            out += bias


def run_im2col_gemm(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray) -> None:
    g = plan.geometry
    kk = g.kh * g.kw
    wp = packed_weight(plan, w)
    # One buffer for every chunk: the workspace bound is on this allocation.
    buf = workspace(plan.workspace_bytes, x.dtype)
    for n0 in range(0, g.n, plan.batch_chunk):
        nb = min(plan.batch_chunk, g.n - n0)
        for p0 in range(0, g.p, plan.row_chunk):
            pb = min(plan.row_chunk, g.p - p0)
            length = pb * g.q
            if plan.layout == "NCHW":
                cols = _view(buf[: nb * g.c * kk * length], (nb, g.c * kk, length))
                gather(plan, x, cols, n0, p0, nb)
                o = _view(out[n0 : n0 + nb, :, p0 : p0 + pb], (nb, g.groups, g.og, length))
                np.matmul(wp, _view(cols, (nb, g.groups, g.cg * kk, length)), out=o)
                if bias is not None:
                    o += bias.reshape(g.groups, g.og, 1)
            else:
                rows = nb * length
                cols = _view(buf[: rows * kk * g.c], (rows, kk * g.c))
                gather(plan, x, cols, n0, p0, nb)
                o2 = _view(out[n0 : n0 + nb, p0 : p0 + pb], (rows, g.o))
                o = _view(o2, (rows, g.groups, g.og)).transpose(1, 0, 2)
                a = _view(cols, (rows, g.groups, kk * g.cg)).transpose(1, 0, 2)
                np.matmul(a, wp, out=o)
                if bias is not None:
                    o2 += bias


RUNNERS = {"gemm_1x1": run_gemm_1x1, "im2col_gemm": run_im2col_gemm}
