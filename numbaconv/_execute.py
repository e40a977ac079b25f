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
    gather = kernels.get("im2col", plan.layout, plan.dtype)
    t = plan.tables
    # One buffer for every chunk: the workspace bound is on this allocation.
    buf = workspace(plan.workspace_bytes, x.dtype)
    for n0 in range(0, g.n, plan.batch_chunk):
        nb = min(plan.batch_chunk, g.n - n0)
        for p0 in range(0, g.p, plan.row_chunk):
            pb = min(plan.row_chunk, g.p - p0)
            length = pb * g.q
            if plan.layout == "NCHW":
                cols = _view(buf[: nb * g.c * kk * length], (nb, g.c * kk, length))
                gather(x, n0, p0, cols, *t.args())
                o = _view(out[n0 : n0 + nb, :, p0 : p0 + pb], (nb, g.groups, g.og, length))
                np.matmul(wp, _view(cols, (nb, g.groups, g.cg * kk, length)), out=o)
                if bias is not None:
                    o += bias.reshape(g.groups, g.og, 1)
            else:
                rows = nb * length
                cols = _view(buf[: rows * kk * g.c], (rows, kk * g.c))
                gather(x, n0, p0, nb, g.groups, cols, t.htab, t.wtab)
                o2 = _view(out[n0 : n0 + nb, p0 : p0 + pb], (rows, g.o))
                o = _view(o2, (rows, g.groups, g.og)).transpose(1, 0, 2)
                a = _view(cols, (rows, g.groups, kk * g.cg)).transpose(1, 0, 2)
                np.matmul(a, wp, out=o)
                if bias is not None:
                    o2 += bias


RUNNERS = {"gemm_1x1": run_gemm_1x1, "im2col_gemm": run_im2col_gemm}
