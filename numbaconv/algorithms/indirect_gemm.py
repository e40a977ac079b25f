"""indirect_gemm: the micro-kernel reads the (padded) input through offset tables.

No column matrix: ``kernels.indirect_gemm.conv_indirect`` runs the
register tile over output pixels x output channels and reads each pixel's
receptive field in place, ``koff[k]`` past the pixel's start.  The input
is padded once per chunk of images (unless it needs no padding), and the
weight is packed into panels of NR channels once per call, per task, or
beforehand by ``pack_weight``.  No BLAS runs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .. import config, kernels, machine
from .._args import Geometry, Layout, ceil_div
from .._execute import bias_arg, check_reshapable, numba_only, quiet_fp, workspace
from .._tables import IndexTables
from . import _adjoint
from ._base import Algorithm, Plan, Problem, k_blocks, register, tile_for

# At least this much work per call: indirect_gemm stops OpenBLAS's threads
# first, and the next BLAS call pays ~0.1 ms or more to restart them.
INDIRECT_MIN_FLOPS = 10**8

# Down to this much for a narrow layer (at most NARROW_MAX_CHANNELS output
# channels per group): each value im2col_gemm would gather then feeds few
# multiply-adds, so its gather outweighs the GEMM (docs/design/decisions.md,
# "3x3 and other layers: indirect_gemm").
NARROW_MIN_FLOPS = 10**7
NARROW_MAX_CHANNELS = 64

# Tasks, in output pixels: up to ONE_BLOCK_PIXELS make one block of tiles,
# else blocks of at most TASK_PIXELS (docs/design/decisions.md,
# "indirect_gemm's tasks and K blocks").
ONE_BLOCK_PIXELS = 384
TASK_PIXELS = 192


@dataclass(frozen=True)
class IndirectDims:
    """The layout as data for one chunk of images, as the kernel reads it.

    The padded input's strides per image, group, output row and column
    (times the stride); W[k, o] = ``w[k*w_k + o*w_o]`` (OIHW read as (O, K),
    HWIO as (K, O)); the output's strides per image, channel and pixel;
    ``channels_last``: 1 when a pixel's channels are contiguous in the output.
    """

    images: int
    pixels: int  # P*Q
    q: int
    groups: int
    og: int
    k: int
    x_image: int
    x_group: int
    x_row: int
    x_col: int
    w_k: int
    w_o: int
    out_image: int
    out_channel: int
    out_pixel: int
    channels_last: int

    @cached_property
    def vector(self) -> np.ndarray:
        """The kernel's ``dims`` argument: these fields, in order."""
        return np.array(dataclasses.astuple(self), dtype=np.int64)


@dataclass(frozen=True)
class IndirectTile:
    """A task: ``tiles`` register tiles of MR pixels x ``panels`` weight panels, K blocks ``kc``.

    ``pack_once``: the weight is packed once per call (many tasks share each
    panel); else each task packs its own panels, or a PackedWeight brings them.
    """

    kc: int
    tiles: int
    panels: int
    pack_once: bool
    dims: IndirectDims = dataclasses.field(repr=False)
    offsets: np.ndarray = dataclasses.field(repr=False, compare=False)  # koff


# --------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------
def padded_hw(g: Geometry) -> tuple[int, int] | None:
    """(HP, WP) of the padded input, or None when x is read in place.

    No slack rows (unlike ``_tables.padded_axis``): the last tap of the last
    output row lies inside the padded extent.
    """
    pt, pb, pl, pr = g.pads
    return None if g.pads == (0, 0, 0, 0) else (g.h + pt + pb, g.w + pl + pr)


def panel_shape(groups: int, og: int, k: int, dtype: np.dtype,
                isa: str | None = None) -> tuple[int, int, int, int]:
    """The weight as panels: (groups, panels of NR channels, K, NR)."""
    nr = tile_for(dtype, isa).nr
    return groups, ceil_div(og, nr), k, nr


def panel_strides(layout: Layout, o: int, k: int) -> tuple[int, int]:
    """(w_k, w_o): W[k, o] is ``weight.flat[k*w_k + o*w_o]``; OIHW as (O, K), HWIO as (K, O)."""
    return (o, 1) if layout.channels_last else (1, k)


def workspace_bytes(g: Geometry, dtype: np.dtype, images: int, panels: bool = True,
                    isa: str | None = None) -> int:
    """``images`` padded images, plus the weight panels if ``panels`` (not when a
    ``PackedWeight`` brings them, or tasks pack their own)."""
    hw = padded_hw(g)
    padded = hw[0] * hw[1] * g.c if hw else 0
    room = math.prod(panel_shape(g.groups, g.og, g.cg * g.kh * g.kw, dtype, isa)) if panels else 0
    return (room + images * padded) * dtype.itemsize


def fits(g: Geometry, dtype: np.dtype, prepacked: bool = False, isa: str | None = None) -> bool:
    """Whether one padded image and the packed weight fit in the workspace bound."""
    return workspace_bytes(g, dtype, 1, panels=not prepacked, isa=isa) <= (
        config.max_workspace_bytes)


def tile_count(g: Geometry, images: int, mr: int) -> int:
    """Register tiles (``mr`` output pixels each) over ``images`` images."""
    return ceil_div(max(images, 1) * g.p * g.q, mr)


def few_pixels(g: Geometry, dtype: np.dtype, isa: str | None = None) -> bool:
    """Whether a call's output pixels make one block of tiles (in bytes: 384 float32
    pixels, 192 float64)."""
    mr = tile_for(dtype, isa).mr
    return tile_count(g, g.n, mr) * mr * dtype.itemsize <= ONE_BLOCK_PIXELS * 4


def wide_panels(dtype: np.dtype, isa: str | None = None) -> bool:
    """Whether a weight panel row spans two cache lines (NR * itemsize >= 128: AVX-512's).

    Then a task's piece of each HWIO weight row is two lines, not one
    (docs/design/decisions.md, "1x1 layers with few pixels: indirect_gemm
    on wide tiles").
    """
    return tile_for(dtype, isa).nr * np.dtype(dtype).itemsize >= 128


def many_pixels(g: Geometry, dtype: np.dtype, isa: str | None = None) -> bool:
    """Whether a float32 call's output pixels make at least four blocks of tiles (1536).

    Then the weight panels a deep layer packs are reused over enough pixels
    (docs/design/decisions.md, "3x3 and other layers: indirect_gemm"); in
    float64 more pixels were measured to lose, not win.
    """
    mr = tile_for(dtype, isa).mr
    return dtype.itemsize == 4 and tile_count(g, g.n, mr) * mr >= 4 * ONE_BLOCK_PIXELS


def enough_work(g: Geometry) -> bool:
    """At least INDIRECT_MIN_FLOPS, or NARROW_MIN_FLOPS with at most NARROW_MAX_CHANNELS
    output channels per group."""
    narrow = g.og <= NARROW_MAX_CHANNELS
    return g.flops >= INDIRECT_MIN_FLOPS or (narrow and g.flops >= NARROW_MIN_FLOPS)


def small_images(g: Geometry, dtype: np.dtype) -> bool:
    """Whether each output image has at most 64 pixels (8x8), in float32."""
    return dtype.itemsize == 4 and g.p * g.q <= 64


# --------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------
def indirect_dims(g: Geometry, layout: Layout, images: int) -> IndirectDims:
    hp, wp = padded_hw(g) or (g.h, g.w)
    sh, sw = g.stride
    k = g.cg * g.kh * g.kw
    pq = g.p * g.q
    if layout.channels_last:
        x_strides = (hp * wp * g.c, g.cg, sh * wp * g.c, sw * g.c)
        out_strides = (pq * g.o, 1, g.o, 1)
    else:
        plane = hp * wp
        x_strides = (g.c * plane, g.cg * plane, sh * wp, sw)
        out_strides = (g.o * pq, pq, 1, 0)
    return IndirectDims(images, pq, g.q, g.groups, g.og, k, *x_strides,
                        *panel_strides(layout, g.o, k), *out_strides)


def indirect_offsets(g: Geometry, layout: Layout) -> np.ndarray:
    """``koff[k]``: where tap k lies in the padded input, past its pixel's start.

    Taps run in the weight's order: (kh, kw, c) for HWIO, (c, kh, kw) for OIHW.
    """
    hp, wp = padded_hw(g) or (g.h, g.w)
    dh, dw = g.dilation
    kh, kw = np.arange(g.kh), np.arange(g.kw)
    c = np.arange(g.cg)
    if layout.channels_last:
        koff = ((kh[:, None, None] * dh * wp + kw[None, :, None] * dw) * g.c
                + c[None, None, :])
    else:
        koff = (c[:, None, None] * hp * wp + kh[None, :, None] * dh * wp
                + kw[None, None, :] * dw)
    return np.ascontiguousarray(koff.reshape(-1), dtype=np.int64)


def indirect_tile(g: Geometry, dtype: np.dtype, images: int, threads: int,
                  prepacked: bool, layout: Layout,
                  isa: str | None = None) -> tuple[int, int, int, bool]:
    """(kc, tiles per task, weight panels per task, pack the weight once).

    K blocks of at most the machine context's ``kc``, half that in strided
    channels-first layers (a strided task's tiles span stride times the
    input rows).  At most ``TASK_PIXELS`` pixels per task, in whole rounds
    for the threads, but up to ``ONE_BLOCK_PIXELS`` make a single block.
    With fewer than four tasks per thread the weight panels are split
    across tasks too; each task's scratch stays within a quarter of L2.
    The weight is packed once per call only when more than two tasks read
    each panel, and never when a ``PackedWeight`` brings it.  Evidence:
    docs/design/decisions.md, "indirect_gemm's tasks and K blocks".
    """
    k = g.cg * g.kh * g.kw
    rt = tile_for(dtype, isa)
    cb = machine.blocks(rt)
    strided = not layout.channels_last and g.stride[0] > 1
    kc = k_blocks(k, cb.kc // 2 if strided else cb.kc)
    nr, mr = rt.nr, rt.mr
    tiles = tile_count(g, images, mr)
    blocks = ceil_div(tiles, max(1, TASK_PIXELS // mr))
    if tiles * mr <= ONE_BLOCK_PIXELS:
        blocks = 1  # one block, its tasks splitting the weight: each panel packed once
    elif 1 < blocks < 16 * threads and blocks % threads:
        blocks = min(tiles, threads * ceil_div(blocks, threads))  # whole rounds
    per = ceil_div(tiles, blocks)
    blocks = ceil_div(tiles, per)
    tasks = g.groups * blocks
    panels = ceil_div(g.og, nr)
    split = min(panels, ceil_div(4 * threads, tasks)) if tasks < 4 * threads else 1
    most = max(1, cb.l2_share // (per * mr * nr * dtype.itemsize))
    per_task = min(ceil_div(panels, split), most)
    per_task = ceil_div(panels, ceil_div(panels, per_task))  # even blocks
    return kc, per, per_task, blocks > 2 and not prepacked


def plan(problem: Problem) -> Plan:
    g, dtype, isa, prepacked = problem.geometry, problem.dtype, problem.isa, problem.prepacked
    # Whole images per chunk (a padded image cannot be split); at least one.
    per_image = workspace_bytes(g, dtype, 1, isa=isa) - workspace_bytes(g, dtype, 0, isa=isa)
    room = problem.limit - workspace_bytes(g, dtype, 0, panels=not prepacked, isa=isa)
    fit = (room // per_image if room > 0 else 1) if per_image else g.n  # x read in place
    n = max(g.n, 1)
    bc = max(1, min(n, fit))
    bc = ceil_div(n, ceil_div(n, bc))  # balanced chunks
    kc, per, per_task, pack_once = indirect_tile(g, dtype, bc, problem.threads, prepacked,
                                                 problem.layout, isa)
    tile = IndirectTile(kc, per, per_task, pack_once, indirect_dims(g, problem.layout, bc),
                        indirect_offsets(g, problem.layout))
    return problem.plan(
        "indirect_gemm", gemm_m=bc * g.p * g.q, gemm_n=g.og, gemm_k=g.cg * g.kh * g.kw,
        gemm_calls=g.groups * ceil_div(g.n, bc) if g.n else 0, batch_chunk=bc,
        workspace_bytes=workspace_bytes(g, dtype, bc, pack_once, isa) if g.n else 0,
        tables=IndexTables.build(g), tile=tile, prepacked=prepacked)


def describe(plan: Plan) -> str:
    t = plan.tile
    return (f"no column matrix: Numba micro-kernel on the padded input, tasks of "
            f"{t.tiles * plan.register_tile.mr} pixels x {t.panels} weight panel(s), K blocks "
            f"of {t.kc}" + (", weight packed beforehand" if plan.prepacked else ""))


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Launch:
    """What ``run`` needs beyond the arrays, worked out once per plan.

    After a large kernel the interpreter's own data is out of the caches and
    every Python step of a call runs slowly (at batch 1 a 3x3 call spent
    100-250 us outside its kernels), so the per-plan part is looked up.
    """

    pshape: tuple[int, int, int, int]
    npanel: int  # weight-panel values in the workspace (0: none packed per call)
    pack: object  # kernels.get's compiled kernels
    conv: object
    pad: tuple | None  # (kernel, values per image, padded image shape, table args)
    last_dims: np.ndarray  # dims of a last, smaller chunk of images


def prepare(plan: Plan) -> Launch:
    g, t, tile = plan.geometry, plan.tables, plan.tile
    pshape = panel_shape(g.groups, g.og, g.cg * g.kh * g.kw, np.dtype(plan.dtype), plan.isa)
    pad = None
    padded = padded_hw(g)
    if padded:  # else x is read in place
        hp, wp = padded
        if plan.layout.channels_last:
            shape, args = (hp, wp, g.c), (t.prow[:hp], t.pcol[:wp])
        else:
            shape, args = (g.c, hp, wp), (t.prow[:hp], t.pcol[:wp], g.pads[2], g.pads[2] + g.w)
        pad = (kernels.get("pad", plan.layout.name, plan.dtype), hp * wp * g.c, shape, args)
    last = g.n % plan.batch_chunk or plan.batch_chunk
    return Launch(pshape, math.prod(pshape) if tile.pack_once else 0,
                  kernels.get("pack_panels", "ANY", plan.dtype, plan.isa),
                  kernels.get("indirect_gemm", "ANY", plan.dtype, plan.isa), pad,
                  dataclasses.replace(tile.dims, images=last).vector)


def run(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray,
        panels: np.ndarray | None = None, act: int = 0) -> None:
    """``panels``: a ``PackedWeight``'s, when ``plan.prepacked`` (then none are built)."""
    launch, tile = plan.launch, plan.tile
    buf = workspace(plan.workspace_bytes, x.dtype)
    wf = w.reshape(-1)
    if plan.prepacked != (panels is not None):  # pragma: no cover - a caller's bug
        raise AssertionError("indirect_gemm: panels must come with a prepacked plan, only")
    check_reshapable("indirect_gemm", x, out)
    nwp = launch.npanel
    wpk = buf[:nwp] if panels is None else panels.reshape(-1)
    # At any size: no BLAS runs from here to the last chunk.  With OpenBLAS's
    # threads stopped, the packing and padding kernels get both cores too.
    start = numba_only()
    if tile.pack_once:
        with start(wpk.nbytes):
            launch.pack(wf, tile.dims.w_k, tile.dims.w_o, wpk.reshape(launch.pshape))
    b, has_bias = bias_arg(bias, x.dtype)
    n_n, chunk = plan.geometry.n, plan.batch_chunk
    # (Plain reshapes: every array here is C-contiguous, so none copies.)
    for n0 in range(0, n_n, chunk):
        nb = min(chunk, n_n - n0)
        xp = x[n0 : n0 + nb]
        if launch.pad is not None:
            kernel, size, shape, tables = launch.pad
            xp = buf[nwp : nwp + nb * size].reshape((nb, *shape))
            with start(xp.nbytes):
                kernel(x[n0 : n0 + nb], xp, *tables)
        dims = tile.dims.vector if nb == chunk else launch.last_dims
        launch.conv(xp.reshape(-1), wf, wpk, b, has_bias, out[n0 : n0 + nb].reshape(-1),
                    tile.offsets, dims, tile.kc, tile.tiles, tile.panels, act)


def from_packed(plan: Plan, packed) -> np.ndarray | None:
    """A PackedWeight's panels, where the plan reads them (cut for this ISA and dtype)."""
    return packed.panels_for(plan.layout, plan.geometry.groups, plan.dtype) if (
        plan.prepacked) else None


ALGORITHM = register(Algorithm(
    "indirect_gemm", plan=plan, run=run, describe=describe, tiled=True, prepare=prepare,
    from_packed=from_packed, grad_input=quiet_fp(_adjoint.grad_input_by("indirect_gemm")),
    grad_weight=_adjoint.grad_weight))
