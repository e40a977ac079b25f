"""gemm_1x1: a 1x1, stride-1, unpadded convolution is a plain matrix product, run by BLAS.

No im2col: the input already is the column matrix.  Channels last, one
GEMM per group over the whole batch (x[N*H*W, Cg] @ W[Cg, Og]); channels
first, one per image and group (W[Og, Cg] @ x[n, g]), or, for small
images, one over a chunk of images copied side by side.
"""

from __future__ import annotations

import numpy as np

from .. import _activation
from .._execute import quiet_fp, view, workspace
from ._base import Algorithm, Plan, Problem, is_pointwise, register
from ._gemm import (
    Accumulator,
    channel_major,
    chunks,
    describe_gemm,
    plan_gemm,
    unbatch,
    weight_matrices,
)


def unsupported(problem: Problem) -> str | None:
    g = problem.geometry
    if is_pointwise(g):
        return None
    return (f"needs a 1x1 kernel, stride 1 and no padding, got kernel {g.kh}x{g.kw}, "
            f"stride {g.stride}, padding {g.pads}")


def plan(problem: Problem) -> Plan:
    return plan_gemm(problem, "gemm_1x1", columns=False)


def run(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray, panels=None,
        act: int = 0) -> None:
    g = plan.geometry
    wp = weight_matrices(plan, w)
    hw = g.h * g.w
    if plan.layout.channels_last:
        rows = g.n * hw
        o = view(out, (rows, g.groups, g.og)).transpose(1, 0, 2)
        np.matmul(view(x, (rows, g.groups, g.cg)).transpose(1, 0, 2), wp, out=o)
        if bias is not None:
            out += bias
        _activation.apply(out, act)
        return
    if not plan.gemm_batched:
        o = view(out, (g.n, g.groups, g.og, hw))
        np.matmul(wp, view(x, (g.n, g.groups, g.cg, hw)), out=o)
        if bias is not None:
            o += bias.reshape(g.groups, g.og, 1)
        _activation.apply(out, act)
        return
    # Small images: x[n0:n0+nb] as (C, nb*H*W), one GEMM, then into place.
    buf = workspace(plan.workspace_bytes, x.dtype)
    for n0 in range(0, g.n, plan.batch_chunk):
        nb = min(plan.batch_chunk, g.n - n0)
        xt = channel_major(buf[: g.c * nb * hw], x[n0 : n0 + nb])
        tmp = view(buf[g.c * nb * hw : (g.c + g.o) * nb * hw], (g.groups, g.og, nb * hw))
        np.matmul(wp, view(xt, (g.groups, g.cg, nb * hw)), out=tmp)
        unbatch(plan, tmp, out, n0, nb, bias, act)


def grad_input(plan: Plan, w: np.ndarray, gout: np.ndarray) -> np.ndarray:
    """x_g = W_g^T @ gout_g: no col2im, the GEMM writes the input's gradient in place."""
    g, layout = plan.geometry, plan.layout
    gx = np.empty(layout.x_shape(g.n, g.c, g.h, g.w), gout.dtype)
    wt = weight_matrices(plan, w).transpose(0, 2, 1)
    hw = g.h * g.w
    if layout.channels_last:  # x_g (NHW, Cg) = gout_g (NHW, Og) @ W_g^T, the whole batch
        rows = g.n * hw
        np.matmul(gout.reshape(rows, g.groups, g.og).transpose(1, 0, 2), wt,
                  out=gx.reshape(rows, g.groups, g.cg).transpose(1, 0, 2))
        return gx
    if not plan.gemm_batched:  # x[n, g] (Cg, HW) = W_g^T @ gout[n, g] (Og, HW)
        np.matmul(wt, gout.reshape(g.n, g.groups, g.og, hw),
                  out=gx.reshape(g.n, g.groups, g.cg, hw))
        return gx
    buf = workspace(plan.workspace_bytes, gout.dtype)
    for n0, nb, _, _ in chunks(plan):  # small images: one GEMM over (Og, nb*HW), then into place
        gt = channel_major(buf[: g.o * nb * hw], gout[n0 : n0 + nb])
        xt = buf[g.o * nb * hw : (g.o + g.c) * nb * hw].reshape(g.c, nb, hw)
        np.matmul(wt, gt.reshape(g.groups, g.og, nb * hw),
                  out=xt.reshape(g.groups, g.cg, nb * hw))
        np.copyto(gx[n0 : n0 + nb].reshape(nb, g.c, hw), xt.transpose(1, 0, 2))
    return gx


def grad_weight(plan: Plan, x: np.ndarray, gout: np.ndarray, cols=None) -> np.ndarray:
    """W_g = gout_g @ x_g^T, summed over the images (``cols`` is never needed: x is them)."""
    g, layout = plan.geometry, plan.layout
    gw = np.zeros(layout.w_shape(g.o, g.cg, g.kh, g.kw), gout.dtype)
    acc = Accumulator(weight_matrices(plan, gw))  # the GEMMs write into gw through this view
    hw = g.h * g.w
    if layout.channels_last:  # W_g (Cg, Og) = x_g^T (Cg, NHW) @ gout_g (NHW, Og): one GEMM
        rows = g.n * hw
        acc.matmul(x.reshape(rows, g.groups, g.cg).transpose(1, 2, 0),
                   gout.reshape(rows, g.groups, g.og).transpose(1, 0, 2))
        return gw
    if plan.gemm_batched:  # small images: the batch joins the GEMM's K
        buf = workspace(plan.workspace_bytes, gout.dtype)
        for n0, nb, _, _ in chunks(plan):
            size = g.c * nb * hw
            xt = channel_major(buf[:size], x[n0 : n0 + nb])
            gt = channel_major(buf[size : size + g.o * nb * hw], gout[n0 : n0 + nb])
            acc.matmul(gt.reshape(g.groups, g.og, nb * hw),
                       xt.reshape(g.groups, g.cg, nb * hw).transpose(0, 2, 1))
        return gw
    for n0, nb, _, _ in chunks(plan):  # large images: one GEMM per image, summed
        xs = x[n0 : n0 + nb].reshape(nb, g.groups, g.cg, hw)
        go = gout[n0 : n0 + nb].reshape(nb, g.groups, g.og, hw)
        for b in range(nb):
            acc.matmul(go[b], xs[b].transpose(0, 2, 1))
    return gw


# The BLAS runners do NumPy arithmetic, so they run under quiet_fp.
ALGORITHM = register(Algorithm(
    "gemm_1x1", plan=plan, run=quiet_fp(run), describe=describe_gemm, unsupported=unsupported,
    grad_input=quiet_fp(grad_input), grad_weight=quiet_fp(grad_weight)))
