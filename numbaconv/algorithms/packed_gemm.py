"""packed_gemm: NCHW im2col tiles packed per thread into cache, multiplied there.

Numba's own register-tiled GEMM (``kernels.packed_gemm.conv_nchw``) on
tiles of the column matrix that each task gathers and packs itself; no
column matrix is ever whole.  Never chosen automatically
(docs/design/decisions.md, "packed_gemm is never chosen automatically").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels, machine
from .._args import Geometry, ceil_div
from .._execute import bias_arg, quiet_blas_before, view
from .._tables import IndexTables
from ._base import Algorithm, Plan, Problem, k_blocks, register, tile_for


@dataclass(frozen=True)
class PackedTile:
    """One task: ``kc`` column-matrix rows x ``nc`` output pixels x ``mc`` output channels."""

    kc: int
    nc: int
    mc: int


def packable(g: Geometry, layout, dtype, isa: str | None = None) -> bool:
    """packed_gemm's conditions: channels first, and a register tile of output channels."""
    return not layout.channels_last and g.og >= tile_for(dtype, isa).mr


def unsupported(problem: Problem) -> str | None:
    if packable(problem.geometry, problem.layout, problem.dtype, problem.isa):
        return None
    return (f"needs layout 'NCHW' and at least {problem.tile.mr} output channels per group "
            f"(the register tile's rows), got layout {problem.layout.name!r} with "
            f"{problem.geometry.og}")


def packed_tile(g: Geometry, dtype: np.dtype, threads: int, isa: str | None = None) -> PackedTile:
    """A packed_gemm task (docs/design/decisions.md, "packed_gemm's tasks").

    A kc x nc tile of the column matrix stays in L2 beside the weight
    panels; pixels are split evenly, and output channels too when there are
    fewer than two tasks per thread.
    """
    k = g.cg * g.kh * g.kw
    rt = tile_for(dtype, isa)
    kc = k_blocks(k, machine.blocks(rt).kc)
    nr, mr = rt.nr, rt.mr
    total = max(g.n, 1) * g.p * g.q
    # Tiles of at most 192 float32 columns, but at least four tasks per thread
    # when there are columns enough for tiles of 64.
    blocks = max(ceil_div(total, 192 * 4 // dtype.itemsize),
                 min(4 * threads, ceil_div(total, 64 * 4 // dtype.itemsize)))
    blocks = threads * ceil_div(blocks, threads) if blocks > threads else blocks
    nc = nr * ceil_div(ceil_div(total, blocks), nr)
    tasks = g.groups * ceil_div(total, nc)
    blocks = min(ceil_div(2 * threads, tasks), max(g.og // (4 * mr), 1))
    mc = min(g.og, mr * ceil_div(ceil_div(g.og, blocks), mr))
    return PackedTile(kc, nc, mc)


def plan(problem: Problem) -> Plan:
    g = problem.geometry
    tile = packed_tile(g, problem.dtype, problem.threads, problem.isa)
    return problem.plan(
        "packed_gemm", gemm_m=g.og, gemm_n=g.n * g.p * g.q, gemm_k=g.cg * g.kh * g.kw,
        gemm_calls=g.groups,
        workspace_bytes=problem.threads * tile.kc * tile.nc * problem.dtype.itemsize,
        tables=IndexTables.build(g), tile=tile)


def describe(plan: Plan) -> str:
    t = plan.tile
    return (f"tiles of {t.kc} rows x {t.nc} pixels x {t.mc} channels packed per thread, "
            "Numba micro-kernel")


def run(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray, panels=None,
        act: int = 0) -> None:
    g, t, tile = plan.geometry, plan.tables, plan.tile
    kernel = kernels.get("packed_gemm", plan.layout.name, plan.dtype, plan.isa)
    b, has_bias = bias_arg(bias, x.dtype)
    quiet_blas_before(plan.flops)
    kernel(x, view(w, (g.o, g.cg * g.kh * g.kw)), b, has_bias, out, t.htab, t.wtab, t.hint,
           t.wint, t.sh, t.sw, g.groups, tile.kc, tile.nc, tile.mc, act)


ALGORITHM = register(Algorithm(
    "packed_gemm", plan=plan, run=run, describe=describe, unsupported=unsupported, tiled=True))
