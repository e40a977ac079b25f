"""winograd: F(m x m, 3 x 3) for 3x3 stride-1 layers, its products as batched BLAS GEMMs.

Each m x m output tile reads an (m + 2) x (m + 2) input patch.  Its
transform V = B^T d B times the transformed weight U = G g G^T, point by
point, summed over input channels, is (alpha^2 = (m + 2)^2) GEMMs of
(output channels x input channels) by (input channels x tiles); A^T M A
gives the tile back (Lavin & Gray 2016).  Multiplies per output fall from
9 to 2.25 (m = 4) or 4 (m = 2), at a price in rounding error (decisions.md,
"Winograd: F(4x4) and F(2x2)") and in memory traffic: the transforms are
alpha^2 / m^2 times the activations (``kernels.winograd``).

The tiles are chunked by images and bands of tile rows, so V and M stay
under ``config.max_workspace_bytes``.  The weight is transformed per call
(``transform_weight``), or once for a ``PackedWeight``: its cost per call,
O*C*alpha^2, is why the dispatcher takes Winograd only for layers with many
pixels per weight.  A NaN or inf
reaches every output of its tile, not just the outputs whose window
holds it: the price of mixing a patch before multiplying.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import kernels, machine
from .._args import Geometry, ceil_div
from .._execute import bias_arg, numba_only, quiet_fp, view, workspace
from .._tables import axis_table
from . import _adjoint
from ._base import Algorithm, Plan, Problem, register
from ._gemm import chunks

# (B^T, G, A^T) of F(m x m, 3 x 3), interpolation points 0, 1, -1 (m = 2)
# and 0, 1, -1, 2, -2 (m = 4), as Lavin & Gray and ncnn use them.
MATRICES = {
    2: (((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1))),
    4: (((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
         (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
         (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))),
}


@dataclass(frozen=True)
class WinogradTile:
    """F(m x m, 3 x 3) on tiles_h x tiles_w tiles per image; ``block``: the vector block."""

    m: int
    tiles_h: int
    tiles_w: int
    block: int

    @property
    def alpha(self) -> int:
        return self.m + 2


def unsupported(problem: Problem) -> str | None:
    return unsupported_geometry(problem.geometry)


def unsupported_geometry(g: Geometry) -> str | None:
    if (g.kh, g.kw) != (3, 3) or g.stride != (1, 1) or g.dilation != (1, 1):
        return (f"runs 3x3 kernels with stride 1 and dilation 1 only, got {g.kh}x{g.kw}, "
                f"stride {g.stride}, dilation {g.dilation}")
    return None


# F(4x4) below this many tiles a call ran slower than F(2x2): its GEMMs too thin.
F4_MIN_TILES = 48


def tile_size(g: Geometry) -> int:
    """m of F(m x m, 3 x 3): 4, or 2 where the batch has too few 4x4 tiles to pay."""
    return 4 if max(g.n, 1) * ceil_div(g.p, 4) * ceil_div(g.q, 4) >= F4_MIN_TILES else 2


def vector_block(problem: Problem, alpha: int) -> int:
    """Tiles (NCHW) or channels (NHWC) per kernel task: three alpha^2 blocks fill L1."""
    lanes = max(problem.tile.vw, 1)
    per = machine.cache_sizes()[0] // (3 * alpha * alpha * problem.dtype.itemsize)
    return max(lanes, min(256, per // lanes * lanes))


def plan(problem: Problem, m: int | None = None) -> Plan:
    g, item = problem.geometry, problem.dtype.itemsize
    m = m or tile_size(g)
    alpha = m + 2
    th, tw = ceil_div(g.p, m), ceil_div(g.q, m)
    tile_row_bytes = alpha * alpha * (g.c + g.o) * tw * item  # V and M of one row of tiles
    n = max(g.n, 1)
    if tile_row_bytes * th <= problem.limit:  # whole images
        per = max(1, min(n, problem.limit // (tile_row_bytes * th)))
        bc, rows = ceil_div(n, ceil_div(n, per)), th
    else:  # bands of tile rows of one image
        rows = max(1, problem.limit // tile_row_bytes)
        bc, rows = 1, ceil_div(th, ceil_div(th, rows))
    tiles = bc * rows * tw
    chunk_count = ceil_div(n, bc) * ceil_div(th, rows)
    shape = (tiles, g.og, g.cg) if problem.layout.channels_last else (g.og, tiles, g.cg)
    tile = WinogradTile(m, th, tw, vector_block(problem, alpha))
    return problem.plan("winograd", gemm_m=shape[0], gemm_n=shape[1], gemm_k=shape[2],
                        gemm_calls=alpha * alpha * g.groups * chunk_count, gemm_batched=True,
                        batch_chunk=bc, row_chunk=min(rows * m, g.p),
                        workspace_bytes=tiles * tile_row_bytes // tw if g.n else 0, tile=tile)


def _source_table(n_in: int, n_pad: int, before: int, after: int, mode: str) -> np.ndarray:
    """The input index of each of ``n_pad`` padded positions, or -1 for a zero.

    Positions past the padded extent feed only the cropped outputs of the
    last tiles: zeros, whatever the padding mode.
    """
    table = axis_table(n_in, 1, n_pad, 1, 1, before, mode)[0]
    table[np.arange(n_pad) - before >= n_in + after] = -1
    return table


@dataclass(frozen=True)
class Launch:
    hsrc: np.ndarray
    wsrc: np.ndarray
    tx_lo: int  # tiles tx_lo <= tx < tx_hi read columns tx*m + l - pad_left, no padding
    tx_hi: int
    bt: np.ndarray  # B^T, alpha x alpha
    at: np.ndarray  # A^T, m x alpha
    gm: np.ndarray  # G, alpha x 3


def prepare(plan: Plan) -> Launch:
    g, t = plan.geometry, plan.tile
    pt, pb, pl, pr = g.pads
    bt, gm, at = (np.array(a, dtype=plan.dtype) for a in MATRICES[t.m])
    for a in (bt, gm, at):
        a.flags.writeable = False
    wsrc = _source_table(g.w, t.tiles_w * t.m + 2, pl, pr, g.padding_mode)
    tx_lo = ceil_div(pl, t.m)
    tx_hi = min(t.tiles_w, max(tx_lo, (g.w - t.alpha + pl) // t.m + 1))
    return Launch(_source_table(g.h, t.tiles_h * t.m + 2, pt, pb, g.padding_mode), wsrc,
                  tx_lo, tx_hi, bt, at, gm)


def transform_weight(plan: Plan, w: np.ndarray, keep: bool = False) -> np.ndarray:
    """U = G g G^T of every (output, input) channel pair, as the GEMMs read it.

    NCHW (alpha^2, groups, Og, Cg), the left operand of U @ V; NHWC
    (alpha^2, groups, Cg, Og), the right operand of V @ U.  ``keep``: in a
    new array of its own (for a PackedWeight), else in a reused buffer.
    """
    g, alpha = plan.geometry, plan.tile.alpha
    aa = alpha * alpha
    shape = (aa, g.groups, g.cg, g.og) if plan.layout.channels_last else (
        aa, g.groups, g.og, g.cg)
    # A kept buffer: a fresh one of this size (4x the weight) costs its page faults.
    u = np.empty(shape, w.dtype) if keep else view(
        workspace(math.prod(shape) * w.dtype.itemsize, w.dtype, "winograd"), shape)
    kernel = kernels.get("winograd_weight", plan.layout.name, plan.dtype)
    with numba_only()(u.nbytes):
        if plan.layout.channels_last:
            kernel(w.reshape(-1), u.reshape(-1), plan.launch.gm, g.cg, g.o, g.groups)
        else:
            kernel(w.reshape(-1), u.reshape(-1), plan.launch.gm, g.o, g.cg)
    return u


def from_packed(plan: Plan, packed) -> np.ndarray:
    """U, transformed once per F(m x m) and dtype and kept in the PackedWeight."""
    return packed.derived(("winograd", plan.tile.m, str(plan.dtype)), lambda: transform_weight(
        plan, np.ascontiguousarray(packed.weight, plan.dtype), keep=True))


def run(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray,
        u: np.ndarray | None = None, act: int = 0) -> None:
    """``u``: the transformed weight, from a PackedWeight; else made here, per call."""
    g, t, launch = plan.geometry, plan.tile, plan.launch
    aa, layout = t.alpha * t.alpha, plan.layout
    if u is None:
        u = transform_weight(plan, w)
    buf = workspace(plan.workspace_bytes, x.dtype)
    forward = kernels.get("winograd_in", layout.name, plan.dtype)
    back = kernels.get("winograd_out", layout.name, plan.dtype)
    b, has_bias = bias_arg(bias, x.dtype)
    for n0, nb, p0, pb in chunks(plan):
        t0 = (n0 * t.tiles_h + p0 // t.m) * t.tiles_w
        nt = nb * ceil_div(pb, t.m) * t.tiles_w
        v, mm = buf[: aa * g.c * nt], buf[aa * g.c * nt : aa * (g.c + g.o) * nt]
        with numba_only()(v.nbytes):
            if layout.channels_last:
                forward(x, v, t0, nt, t.tiles_h, t.tiles_w, launch.hsrc, launch.wsrc, launch.bt,
                        t.block)
            else:
                forward(x, v, t0, nt, t.tiles_h, t.tiles_w, launch.hsrc, launch.wsrc, launch.bt,
                        t.block, launch.tx_lo, launch.tx_hi, g.pads[2])
        if layout.channels_last:  # (aa, nt, C) @ (aa, G, Cg, Og), group by group
            np.matmul(view(v, (aa, nt, g.groups, g.cg)).transpose(0, 2, 1, 3), u,
                      out=view(mm, (aa, nt, g.groups, g.og)).transpose(0, 2, 1, 3))
        else:
            np.matmul(u, view(v, (aa, g.groups, g.cg, nt)), out=view(mm, (aa, g.groups, g.og, nt)))
        with numba_only()(mm.nbytes):
            back(mm, out, t0, nt, t.tiles_h, t.tiles_w, launch.at, b, has_bias, t.block, act)


def describe(plan: Plan) -> str:
    t = plan.tile
    return (f"F({t.m}x{t.m}, 3x3) on {t.tiles_h}x{t.tiles_w} tiles per image, "
            f"{t.alpha ** 2} GEMMs per chunk and group")


ALGORITHM = register(Algorithm("winograd", plan=plan, run=quiet_fp(run), describe=describe,
                               unsupported=unsupported, prepare=prepare,
                               from_packed=from_packed,
                               grad_input=quiet_fp(_adjoint.grad_input_by("winograd")),
                               grad_weight=_adjoint.grad_weight))
