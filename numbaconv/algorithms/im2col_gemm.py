"""im2col_gemm: gather the receptive fields into a column matrix, then one BLAS GEMM.

The general algorithm: any kernel size, stride, dilation, padding mode
and groups.  The column buffer is chunked over images and output rows so
that it stays under ``config.max_workspace_bytes``.  Its gradients are
the same GEMMs transposed, with col2im (the gather's adjoint) for grad_x.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _activation
from .._execute import gather, quiet_fp, scatter, view, workspace
from ._base import Algorithm, Plan, Problem, register
from ._gemm import (
    Accumulator,
    channel_major,
    chunks,
    describe_gemm,
    plan_gemm,
    unbatch,
    weight_matrices,
)


def plan(problem: Problem) -> Plan:
    return plan_gemm(problem, "im2col_gemm", columns=True)


def cols_shape(plan: Plan, nb: int, pb: int) -> tuple[int, ...]:
    """The column matrix of images ``nb`` x output rows ``pb``, as the GEMMs read it.

    Channels last (nb*pb*Q, KH*KW*C); channels first (nb, C*KH*KW, pb*Q), or
    (C*KH*KW, nb, pb*Q) for a batched GEMM.
    """
    g = plan.geometry
    rows_k, length = g.c * g.kh * g.kw, pb * g.q
    if plan.layout.channels_last:
        return (nb * length, rows_k)
    return (rows_k, nb, length) if plan.gemm_batched else (nb, rows_k, length)


def chunk_columns(plan: Plan, buf: np.ndarray, nb: int, pb: int) -> tuple[np.ndarray, int]:
    """A chunk's column matrix at the start of the workspace ``buf``, and its size."""
    shape = cols_shape(plan, nb, pb)
    size = math.prod(shape)
    return view(buf[:size], shape), size


def multiply(plan: Plan, cols: np.ndarray, wp: np.ndarray, bias, out: np.ndarray,
             n0: int, nb: int, p0: int, pb: int, buf=None, act: int = 0) -> None:
    """out[images n0:n0+nb, rows p0:p0+pb] = the GEMM of ``cols`` (``cols_shape``) and the
    weight matrices ``wp``, plus bias, through the activation ``act``.  A batched GEMM's
    result passes through ``buf``."""
    g = plan.geometry
    kk, length = g.kh * g.kw, pb * g.q
    if plan.layout.channels_last:
        rows = nb * length
        o2 = view(out[n0 : n0 + nb, p0 : p0 + pb], (rows, g.o))
        o = view(o2, (rows, g.groups, g.og)).transpose(1, 0, 2)
        np.matmul(view(cols, (rows, g.groups, kk * g.cg)).transpose(1, 0, 2), wp, out=o)
        if bias is not None:
            o2 += bias
        _activation.apply(o2, act)  # the chunk just written, still in cache
    elif plan.gemm_batched:  # whole small images: pb == P
        tmp = view(buf[: g.o * nb * length], (g.groups, g.og, nb * length))
        np.matmul(wp, view(cols, (g.groups, g.cg * kk, nb * length)), out=tmp)
        unbatch(plan, tmp, out, n0, nb, bias, act)
    else:
        o = view(out[n0 : n0 + nb, :, p0 : p0 + pb], (nb, g.groups, g.og, length))
        np.matmul(wp, view(cols, (nb, g.groups, g.cg * kk, length)), out=o)
        if bias is not None:
            o += bias.reshape(g.groups, g.og, 1)
        _activation.apply(o, act)


def run(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray, panels=None,
        act: int = 0) -> None:
    wp = weight_matrices(plan, w)
    buf = workspace(plan.workspace_bytes, x.dtype)
    for n0, nb, p0, pb in chunks(plan):
        cols, size = chunk_columns(plan, buf, nb, pb)
        gather(plan, x, cols, n0, p0, nb, row_major=plan.gemm_batched)
        multiply(plan, cols, wp, bias, out, n0, nb, p0, pb, buf[size:], act)


def run_keeping_columns(plan: Plan, x: np.ndarray, w: np.ndarray, bias,
                        cols: np.ndarray | None = None,
                        act: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(columns, output) of a one-chunk plan, the columns in a buffer the caller keeps.

    ``cols``, a buffer of the last call, is reused when its shape fits; the
    columns are what ``grad_weight(cols=...)`` expects.
    """
    g = plan.geometry
    shape = cols_shape(plan, g.n, g.p)
    if cols is None or cols.shape != shape or cols.dtype != x.dtype:
        cols = np.empty(shape, x.dtype)
    gather(plan, x, cols, row_major=plan.gemm_batched)
    out = np.empty(plan.layout.x_shape(g.n, g.o, g.p, g.q), x.dtype)
    buf = workspace(g.o * g.n * g.p * g.q * x.dtype.itemsize, x.dtype) if (
        plan.gemm_batched) else None
    multiply(plan, cols, weight_matrices(plan, w), bias, out, 0, g.n, 0, g.p, buf, act)
    return cols, out


def grad_input(plan: Plan, w: np.ndarray, gout: np.ndarray) -> np.ndarray:
    """col2im of W^T @ grad_out: the GEMM writes columns, the race-free scatter sums them."""
    g, layout = plan.geometry, plan.layout
    gx = np.zeros(layout.x_shape(g.n, g.c, g.h, g.w), gout.dtype)
    wt = weight_matrices(plan, w).transpose(0, 2, 1)  # (G, Cg*KK, Og) / (G, Og, KK*Cg)
    kk = g.kh * g.kw
    buf = workspace(plan.workspace_bytes, gout.dtype)
    for n0, nb, p0, pb in chunks(plan):
        length = pb * g.q
        cols, size = chunk_columns(plan, buf, nb, pb)
        if layout.channels_last:
            rows = nb * length
            go = gout[n0 : n0 + nb, p0 : p0 + pb].reshape(rows, g.groups, g.og)
            np.matmul(go.transpose(1, 0, 2), wt,
                      out=cols.reshape(rows, g.groups, kk * g.cg).transpose(1, 0, 2))
        elif plan.gemm_batched:  # small whole images: cols (C*KK, nb, P*Q)
            gt = channel_major(buf[size : size + g.o * nb * length], gout[n0 : n0 + nb])
            np.matmul(wt, gt.reshape(g.groups, g.og, nb * length),
                      out=cols.reshape(g.groups, g.cg * kk, nb * length))
        else:
            go = gout[n0 : n0 + nb, :, p0 : p0 + pb].reshape(nb, g.groups, g.og, length)
            np.matmul(wt, go, out=cols.reshape(nb, g.groups, g.cg * kk, length))
        scatter(plan, cols, gx, n0, p0, nb, row_major=plan.gemm_batched)
    return gx


def grad_weight(plan: Plan, x: np.ndarray, gout: np.ndarray, cols=None) -> np.ndarray:
    """grad_out @ cols^T over the im2col columns of x, chunk by chunk.

    ``cols``, when given, is the whole batch's column matrix as the plan's
    single chunk gathers it (``run_keeping_columns``), so the gather is skipped.
    """
    g, layout = plan.geometry, plan.layout
    gw = np.zeros(layout.w_shape(g.o, g.cg, g.kh, g.kw), gout.dtype)
    acc = Accumulator(weight_matrices(plan, gw))  # the GEMMs write into gw through this view
    kk = g.kh * g.kw
    buf = workspace(plan.workspace_bytes, gout.dtype)
    for n0, nb, p0, pb in chunks(plan):
        length = pb * g.q
        if cols is None:
            c, size = chunk_columns(plan, buf, nb, pb)
            gather(plan, x, c, n0, p0, nb, row_major=plan.gemm_batched)
        else:
            c, size = cols, cols.size
        if layout.channels_last:
            rows = nb * length
            go = gout[n0 : n0 + nb, p0 : p0 + pb].reshape(rows, g.groups, g.og)
            acc.matmul(c.reshape(rows, g.groups, kk * g.cg).transpose(1, 2, 0),
                       go.transpose(1, 0, 2))
        elif plan.gemm_batched:  # the batch joins the GEMM's K: gout_g (Og, nb*P*Q)
            gt = channel_major(buf[size : size + g.o * nb * length], gout[n0 : n0 + nb])
            acc.matmul(gt.reshape(g.groups, g.og, nb * length),
                       c.reshape(g.groups, g.cg * kk, nb * length).transpose(0, 2, 1))
        else:  # one GEMM per image (long enough on its own), summed into gw
            c3 = c.reshape(nb, g.groups, g.cg * kk, length)
            go = gout[n0 : n0 + nb, :, p0 : p0 + pb].reshape(nb, g.groups, g.og, length)
            for b in range(nb):
                acc.matmul(go[b], c3[b].transpose(0, 2, 1))
    return gw


ALGORITHM = register(Algorithm(
    "im2col_gemm", plan=plan, run=quiet_fp(run), describe=describe_gemm,
    grad_input=quiet_fp(grad_input), grad_weight=quiet_fp(grad_weight)))
