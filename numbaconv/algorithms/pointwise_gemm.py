"""pointwise_gemm: a 1x1 layer's matrix product on Numba's own micro-kernel and threads.

The product gemm_1x1 hands to BLAS, run instead by
``kernels.pointwise.gemm_pointwise`` on the ISA variant's register tile,
so that a network of small layers keeps one thread pool
(docs/design/decisions.md, "1x1 layers: pointwise_gemm below
POINTWISE_MAX_FLOPS, else gemm_1x1").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .. import kernels, machine
from .._args import Geometry, Layout, ceil_div
from .._execute import bias_arg, check_reshapable, numba_only
from ._base import Algorithm, Plan, Problem, k_blocks, register, tile_for
from .gemm_1x1 import unsupported


@dataclass(frozen=True)
class PointwiseDims:
    """The GEMMs C = A @ B of every (image, group), as the kernel reads them.

    A[i, k] = ``a[n*a_image + g*a_group + i*lda + k]``, B and C likewise;
    ``bias_rows``: 1 if the bias runs along C's rows (channels first: rows
    are output channels), 0 along its columns.
    """

    images: int
    groups: int
    m: int
    n: int
    k: int
    a_image: int
    a_group: int
    lda: int
    b_image: int
    b_group: int
    ldb: int
    c_image: int
    c_group: int
    ldc: int
    bias_rows: int

    @cached_property
    def vector(self) -> np.ndarray:
        """The kernel's ``dims`` argument: these fields, in order."""
        return np.array(dataclasses.astuple(self), dtype=np.int64)


@dataclass(frozen=True)
class PointwiseTile:
    """A task: ``panels`` panels of NR columns x ``row_tiles`` tiles of MR rows, K blocks ``kc``."""

    kc: int
    panels: int
    row_tiles: int
    dims: PointwiseDims = dataclasses.field(repr=False)


def pointwise_dims(g: Geometry, layout: Layout) -> PointwiseDims:
    """Channels first, per (image, group): out[n, g] (og x H*W) = W[g] (og x cg) @ x[n, g]
    (cg x H*W).  Channels last, per group, all images in one: out (N*H*W x og, rows O
    apart) = x (N*H*W x cg, rows C apart) @ W (cg x og, rows O apart)."""
    hw = g.h * g.w
    if layout.channels_last:
        return PointwiseDims(1, g.groups, g.n * hw, g.og, g.cg, 0, g.cg, g.c, 0, g.og, g.o,
                             0, g.og, g.o, 0)
    return PointwiseDims(g.n, g.groups, g.og, hw, g.cg, 0, g.og * g.cg, g.cg, g.c * hw,
                         g.cg * hw, hw, g.o * hw, g.og * hw, hw, 1)


def pointwise_tile(dims: PointwiseDims, dtype: np.dtype, threads: int,
                   isa: str | None = None) -> PointwiseTile:
    """A task of pointwise_gemm (docs/design/decisions.md, "pointwise_gemm's tasks").

    K blocks of at most the machine context's ``kc``; at most 8 panels per
    task and no more than a quarter of L2; rows of A at most half of L2 per
    K block.  Below four tasks per thread, fewer panels (down to 4) come
    before splitting the rows, since every row block packs B again.
    """
    images, groups, m, n, k = (max(v, 1) for v in (dims.images, dims.groups, dims.m, dims.n,
                                                    dims.k))  # (no images: any tile)
    rt = tile_for(dtype, isa)
    cb = machine.blocks(rt)
    kc = k_blocks(k, cb.kc)
    panels = ceil_div(n, rt.nr)
    fit = max(1, cb.l2_share // (kc * rt.nr * dtype.itemsize))
    pan = ceil_div(panels, ceil_div(panels, min(8, fit)))
    tiles = ceil_div(m, rt.mr)
    most = max(1, cb.l2_half // (rt.mr * kc * dtype.itemsize))
    if images * groups * ceil_div(panels, pan) < 4 * threads:
        for fewer in range(pan - 1, 3, -1):
            blocks = images * groups * ceil_div(panels, fewer)
            if blocks >= 4 * threads and blocks % threads == 0:
                pan = fewer
                break
    outer = images * groups * ceil_div(panels, pan)
    rows = min(tiles, max(ceil_div(tiles, most), ceil_div(4 * threads, outer)))
    while outer * rows < 8 * threads and (outer * rows) % threads and rows < tiles:
        rows += 1
    return PointwiseTile(kc, pan, ceil_div(tiles, rows), dims)


def plan(problem: Problem) -> Plan:
    g = problem.geometry
    dims = pointwise_dims(g, problem.layout)
    return problem.plan(
        "pointwise_gemm", gemm_m=dims.m, gemm_n=dims.n, gemm_k=dims.k,
        gemm_calls=dims.images * dims.groups if g.n else 0,
        tile=pointwise_tile(dims, problem.dtype, problem.threads, problem.isa))


def describe(plan: Plan) -> str:
    t, rt = plan.tile, plan.register_tile
    return (f"Numba micro-kernel, tasks of {min(t.row_tiles * rt.mr, plan.gemm_m)} rows x "
            f"{min(t.panels * rt.nr, plan.gemm_n)} columns, K blocks of {t.kc}")


def run(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray, panels=None,
        act: int = 0) -> None:
    tile = plan.tile
    kernel = kernels.get("pointwise_gemm", "ANY", plan.dtype, plan.isa)
    b, has_bias = bias_arg(bias, x.dtype)
    a, bm = (x, w) if plan.layout.channels_last else (w, x)  # C = x @ W, or C = W @ x
    check_reshapable("pointwise_gemm", x, out)
    with numba_only()(x.nbytes + out.nbytes):  # no BLAS runs in here
        kernel(a.reshape(-1), bm.reshape(-1), b, has_bias, out.reshape(-1), tile.dims.vector,
               tile.kc, tile.panels, tile.row_tiles, act)


ALGORITHM = register(Algorithm(
    "pointwise_gemm", plan=plan, run=run, describe=describe, unsupported=unsupported,
    tiled=True))
