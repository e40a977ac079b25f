"""The dispatcher: from a problem signature to a plan, and its caches.

A *plan* says how one conv2d problem runs: the algorithm, the GEMM shape,
how the column buffer is chunked to stay under
``config.max_workspace_bytes``, and the index tables the gather kernels
read.  Plans are cached by problem signature (layout, dtype, geometry,
workspace bound, threads, ISA variant); compiled kernels are cached by the
kernel factory by (kind, layout, dtype, ISA variant).  A repeated call
re-plans nothing and compiles nothing, which ``cache_info()`` shows.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np

from . import config, kernels, machine
from ._args import Geometry, Layout, ceil_div
from .machine import RegisterTile

ALGORITHMS = ("gemm_1x1", "pointwise_gemm", "im2col_gemm", "indirect_gemm", "packed_gemm",
              "direct_depthwise")
TILED = ("pointwise_gemm", "indirect_gemm", "packed_gemm")  # run on the register tile


# --------------------------------------------------------------------------
# Index tables: stride, dilation, padding and padding_mode as data
# --------------------------------------------------------------------------
def axis_table(n_in: int, k: int, n_out: int, stride: int, dilation: int, pad: int,
               mode: str) -> np.ndarray:
    """table[k, o]: the input index read by kernel tap k for output o, or -1 for a zero.

    This is where padding_mode lives: reflect mirrors without repeating the
    edge, replicate clamps, circular wraps (PyTorch semantics).
    """
    idx = np.arange(n_out)[None, :] * stride + np.arange(k)[:, None] * dilation - pad
    if mode == "zeros":
        table = np.where((idx >= 0) & (idx < n_in), idx, -1)
    elif mode == "reflect":
        table = np.abs(idx)
        table = np.where(table >= n_in, 2 * (n_in - 1) - table, table)
    elif mode == "replicate":
        table = np.clip(idx, 0, n_in - 1)
    else:  # circular
        table = idx % n_in
    return np.ascontiguousarray(table, dtype=np.int64)


def interior(n_in: int, k: int, n_out: int, stride: int, dilation: int, pad: int) -> np.ndarray:
    """(k, 3) rows (lo, hi, off): outputs lo <= o < hi read input o*stride + off unpadded.

    The unpadded index grows with o, so the interior is one contiguous run.
    """
    raw = np.arange(n_out)[None, :] * stride + np.arange(k)[:, None] * dilation - pad
    inside = (raw >= 0) & (raw < n_in)
    count = inside.sum(axis=1)
    lo = np.where(count > 0, inside.argmax(axis=1), 0)
    off = np.arange(k) * dilation - pad
    return np.ascontiguousarray(np.stack([lo, lo + count, off], axis=1), dtype=np.int64)


def padded_axis(n_in: int, k: int, n_out: int, stride: int, dilation: int, before: int,
                after: int, mode: str, rows: bool = True) -> np.ndarray:
    """table[i]: the input index at position i of the padded axis, or -1 for a zero.

    The padded planes of the NCHW depthwise kernel and of indirect_gemm.
    Rows get slack past the padded extent (zeros), because the depthwise
    kernel runs each tap as one loop over a whole plane of pitch len(pcol):
    the columns past Q it computes and drops read up to
    ``stride*P + (k-1)*dilation`` rows.
    """
    extent = n_in + before + after
    size = max(extent, stride * n_out + (k - 1) * dilation + 1) if rows else extent
    table = axis_table(n_in, 1, extent, 1, 1, before, mode)[0]
    return np.ascontiguousarray(np.concatenate([table, np.full(size - extent, -1)]),
                                dtype=np.int64)


@dataclass(frozen=True)
class IndexTables:
    """What the gather/scatter kernels read instead of stride/padding/mode logic."""

    htab: np.ndarray  # (KH, P) input row per (kernel row, output row), -1 = zero
    wtab: np.ndarray  # (KW, Q) input column per (kernel column, output column)
    hint: np.ndarray  # (KH, 3) interior rows (lo, hi, off) per kernel row
    wint: np.ndarray  # (KW, 3) interior columns per kernel column
    sh: int
    sw: int
    prow: np.ndarray  # padded-plane rows for the NCHW depthwise kernel (see padded_axis)
    pcol: np.ndarray

    @classmethod
    def build(cls, g: Geometry) -> IndexTables:
        (sh, sw), (dh, dw) = g.stride, g.dilation
        pt, _, pl, _ = g.pads
        return cls(
            htab=axis_table(g.h, g.kh, g.p, sh, dh, pt, g.padding_mode),
            wtab=axis_table(g.w, g.kw, g.q, sw, dw, pl, g.padding_mode),
            hint=interior(g.h, g.kh, g.p, sh, dh, pt),
            wint=interior(g.w, g.kw, g.q, sw, dw, pl),
            sh=sh,
            sw=sw,
            prow=padded_axis(g.h, g.kh, g.p, sh, dh, pt, g.pads[1], g.padding_mode),
            pcol=padded_axis(g.w, g.kw, g.q, sw, dw, pl, g.pads[3], g.padding_mode, rows=False),
        )


# --------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------
def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.2f} MiB"


@dataclass(frozen=True)
class Plan:
    """How one conv2d problem is computed.  ``print(plan)`` reads it aloud.

    Attributes
    ----------
    algorithm : str
        ``"gemm_1x1"`` (no im2col: a 1x1, stride-1, unpadded convolution is a
        plain matrix product, run by BLAS), ``"pointwise_gemm"`` (the same
        product on Numba's own micro-kernel and threads), ``"im2col_gemm"`` (gather, then GEMM),
        ``"packed_gemm"`` (NCHW: im2col tiles packed per thread into cache
        and multiplied there by Numba's own register-tiled GEMM),
        ``"indirect_gemm"`` (no column matrix: the micro-kernel reads the
        padded input through offset tables) or
        ``"direct_depthwise"`` (groups == C: a direct multiply-add kernel,
        as a depthwise layer's GEMM would be too thin to pay for its im2col).
    layout, dtype : str
        ``"NCHW"``/``"NHWC"`` and ``"float32"``/``"float64"``.
    geometry : Geometry
        Sizes, stride, dilation, explicit padding, groups, padding_mode.
    gemm_m, gemm_n, gemm_k : int
        The shape of one GEMM call (M x K times K x N); 0 for direct_depthwise.
    gemm_calls : int
        GEMM calls per convolution (images or chunks, times groups).
    gemm_batched : bool
        NCHW only: one GEMM over all the images of a chunk instead of one per
        image, for small images where a per-image GEMM is too thin for BLAS
        to run at speed; the result is copied into place.
    batch_chunk, row_chunk : int
        Images, and output rows of an image, per chunk.
    workspace_bytes : int
        Scratch memory of one call: the column buffer and, when batched, the
        GEMM's output before it is copied into place.
    threads : int
        Numba threads the kernels run on.
    tile : (kc, nc, mc) or None
        packed_gemm: column-matrix rows, output pixels and output channels
        per task (see ``kernels.packed_gemm.conv_nchw``).  pointwise_gemm: (kc,
        panels of NR columns, tiles of MR rows) per task (see
        ``kernels.pointwise``).  indirect_gemm: (kc,
        tiles of MR pixels, weight panels, whether the weight is packed once
        per call) per task (see ``kernels.indirect_gemm.conv_indirect``).
    offsets : int64 array or None
        indirect_gemm only: ``koff``, where each tap lies in the padded input.
    dims : int64 array or None
        indirect_gemm: the layout as data for one chunk of images
        (``indirect_dims``); pointwise_gemm: the GEMMs' shapes and strides
        (``pointwise_dims``).
    prepacked : bool
        indirect_gemm only: the weight's panels come ready from a
        ``PackedWeight`` (``pack_weight``) instead of being built per call.
    isa : str
        The ISA variant whose register tile the kernels use (``machine``).
    """

    algorithm: str
    layout: str
    dtype: str
    geometry: Geometry
    gemm_m: int
    gemm_n: int
    gemm_k: int
    gemm_calls: int
    gemm_batched: bool
    batch_chunk: int
    row_chunk: int
    workspace_bytes: int
    max_workspace_bytes: int
    threads: int
    tables: IndexTables | None = field(default=None, repr=False, compare=False)
    tile: tuple | None = None
    offsets: np.ndarray | None = field(default=None, repr=False, compare=False)
    dims: np.ndarray | None = field(default=None, repr=False, compare=False)
    prepacked: bool = False
    isa: str = field(default_factory=machine.variant)

    @property
    def register_tile(self) -> RegisterTile:
        return machine.register_tile(self.isa, self.dtype)

    @property
    def chunks(self) -> int:
        g = self.geometry
        return ceil_div(g.n, self.batch_chunk) * ceil_div(g.p, self.row_chunk) if g.n else 0

    @property
    def flops(self) -> int:
        return self.geometry.flops

    def __str__(self) -> str:
        g = self.geometry
        pt, pb, pl, pr = g.pads
        how = "one GEMM per chunk" if self.gemm_batched or self.layout == "NHWC" else (
            "one GEMM per image")
        if self.tile and self.algorithm == "packed_gemm":
            kc, nc, mc = self.tile
            how = (f"tiles of {kc} rows x {nc} pixels x {mc} channels packed per thread, "
                   "Numba micro-kernel")
        elif self.tile and self.algorithm == "pointwise_gemm":
            kc, pan, rb = self.tile
            rt = self.register_tile
            how = (f"Numba micro-kernel, tasks of {min(rb * rt.mr, self.gemm_m)} rows x "
                   f"{min(pan * rt.nr, self.gemm_n)} columns, K blocks of {kc}")
        elif self.tile:
            kc, mt, ob, _ = self.tile
            how = (f"no column matrix: Numba micro-kernel on the padded input, tasks of "
                   f"{mt * self.register_tile.mr} pixels x {ob} weight panel(s), K blocks of {kc}"
                   + (", weight packed beforehand" if self.prepacked else ""))
        gemm = (f"  GEMM   M x N x K = {self.gemm_m} x {self.gemm_n} x {self.gemm_k}, "
                f"{self.gemm_calls} call(s), {how}" if self.gemm_calls else
                "  GEMM   none: a direct multiply-add kernel")
        lines = [
            f"conv2d plan: {self.algorithm} ({self.layout}, {self.dtype})",
            f"  input  N={g.n} C={g.c} H={g.h} W={g.w} -> output O={g.o} P={g.p} Q={g.q}",
            f"  kernel {g.kh}x{g.kw}, stride {g.stride}, dilation {g.dilation}, "
            f"padding (top={pt}, bottom={pb}, left={pl}, right={pr}) {g.padding_mode}, "
            f"groups {g.groups}",
            f"{gemm}, {self.flops / 1e9:.3f} GFLOP",
            f"  chunks {self.chunks} of {self.batch_chunk} image(s) x {self.row_chunk} "
            f"output row(s)",
            f"  workspace {_mib(self.workspace_bytes)} (limit "
            f"{_mib(self.max_workspace_bytes)}), threads {self.threads}",
        ]
        if self.algorithm in TILED:
            lines.append(f"  tile   {self.register_tile}")
        return "\n".join(lines)


def is_pointwise(g: Geometry) -> bool:
    return g.kh == g.kw == 1 and g.stride == (1, 1) and g.pads == (0, 0, 0, 0)


def _chunking(g: Geometry, row_bytes: int, limit: int) -> tuple[int, int]:
    """(images, output rows) per chunk so the workspace stays under ``limit``.

    ``row_bytes`` is the scratch one output row of one image needs.  Whole
    images are batched while they fit; an image too big on its own is split
    into bands of output rows.  The smallest chunk is one output row.
    """
    n = max(g.n, 1)  # an empty batch still gets a well-formed plan
    image_bytes = row_bytes * g.p
    if image_bytes <= limit:
        per = max(1, min(n, limit // image_bytes))
        return ceil_div(n, ceil_div(n, per)), g.p  # balanced chunks
    rows = max(1, limit // row_bytes)
    return 1, ceil_div(g.p, ceil_div(g.p, rows))


def is_depthwise(g: Geometry) -> bool:
    return g.groups == g.c > 1


def tile_for(dtype, isa: str | None = None) -> RegisterTile:
    """The register tile of ``isa`` (default: the variant in use) for ``dtype``.

    (``machine.register_tile(isa, dtype)`` with the variant made optional.)
    """
    return machine.register_tile(isa or machine.variant(), np.dtype(dtype))


def packable(g: Geometry, layout: str, dtype, isa: str | None = None) -> bool:
    """packed_gemm's conditions: NCHW, and at least one register tile of output channels."""
    return layout == "NCHW" and g.og >= tile_for(dtype, isa).mr


def gemm_batched(g: Geometry, layout: str) -> bool:
    """Whether NCHW runs one GEMM over a chunk of images instead of one per image.

    Thin per-image GEMMs (few output pixels) run far below BLAS speed; one
    GEMM over a chunk of images does not.  NHWC always has the batch in M.
    A 1x1 layer batches only below an eighth of ``config.gemm_batch_below``:
    it has no gather to fold the batch into, so batching costs a copy of the
    input that one GEMM per image does not make.  Measured (batch 2, 8 and
    32, float32 and float64, alternating): one GEMM per image took 0.75-0.85x
    of the batched time at 28x28 and 0.84-0.92x at 14x14; 7x7 was level.
    """
    below = config.gemm_batch_below // 8 if is_pointwise(g) else config.gemm_batch_below
    return layout == "NCHW" and g.n > 1 and g.p * g.q < below


def indirect_fits(g: Geometry, dtype: np.dtype, prepacked: bool = False,
                  isa: str | None = None) -> bool:
    """Whether one padded image and the packed weight fit in the workspace bound."""
    return _indirect_bytes(g, dtype, 1, panels=not prepacked, isa=isa) <= (
        config.max_workspace_bytes)


def indirect_padded(g: Geometry) -> tuple[int, int] | None:
    """(HP, WP) of indirect_gemm's padded input, or None when x is read in place.

    No slack rows (unlike ``padded_axis``): the last tap of the last output
    row lies inside the padded extent.
    """
    pt, pb, pl, pr = g.pads
    return None if g.pads == (0, 0, 0, 0) else (g.h + pt + pb, g.w + pl + pr)


def panel_shape(groups: int, og: int, k: int, dtype: np.dtype,
                isa: str | None = None) -> tuple[int, int, int, int]:
    """The weight as indirect_gemm's panels: (groups, panels of NR channels, K, NR)."""
    nr = tile_for(dtype, isa).nr
    return groups, ceil_div(og, nr), k, nr


def panel_strides(layout: str, o: int, k: int) -> tuple[int, int]:
    """(w_k, w_o): W[k, o] is ``weight.flat[k*w_k + o*w_o]``; OIHW as (O, K), HWIO as (K, O)."""
    return (o, 1) if layout == "NHWC" else (1, k)


def _indirect_bytes(g: Geometry, dtype: np.dtype, images: int, panels: bool = True,
                    isa: str | None = None) -> int:
    """indirect_gemm's workspace: ``images`` padded images, plus the weight panels if
    ``panels`` (not when a ``PackedWeight`` brings them, or tasks pack their own).
    """
    hw = indirect_padded(g)
    padded = hw[0] * hw[1] * g.c if hw else 0
    room = math.prod(panel_shape(g.groups, g.og, g.cg * g.kh * g.kw, dtype, isa)) if panels else 0
    return (images * padded + room) * dtype.itemsize


def indirect_dims(g: Geometry, layout: str, images: int) -> np.ndarray:
    """``kernels.indirect_gemm.conv_indirect``'s ``dims``: the layout as data.

    The padded input's strides (per image, group, output row and column),
    the weight's (per tap and output channel, OIHW read as (O, K), HWIO as
    (K, O)), the output's (per image, channel, pixel), and 1 for NHWC.
    """
    hp, wp = indirect_padded(g) or (g.h, g.w)
    sh, sw = g.stride
    k = g.cg * g.kh * g.kw
    pq = g.p * g.q
    if layout == "NHWC":
        x_strides = (hp * wp * g.c, g.cg, sh * wp * g.c, sw * g.c)
        out_strides = (pq * g.o, 1, g.o, 1)
    else:
        plane = hp * wp
        x_strides = (g.c * plane, g.cg * plane, sh * wp, sw)
        out_strides = (g.o * pq, pq, 1, 0)
    return np.array((images, pq, g.q, g.groups, g.og, k, *x_strides,
                     *panel_strides(layout, g.o, k), *out_strides), dtype=np.int64)


def indirect_offsets(g: Geometry, layout: str) -> np.ndarray:
    """``koff[k]``: where tap k lies in the padded input, past its pixel's start.

    Taps run in the weight's order: (kh, kw, c) for HWIO, (c, kh, kw) for OIHW.
    """
    hp, wp = indirect_padded(g) or (g.h, g.w)
    dh, dw = g.dilation
    kh, kw = np.arange(g.kh), np.arange(g.kw)
    c = np.arange(g.cg)
    if layout == "NHWC":
        koff = ((kh[:, None, None] * dh * wp + kw[None, :, None] * dw) * g.c
                + c[None, None, :])
    else:
        koff = (c[:, None, None] * hp * wp + kh[None, :, None] * dh * wp
                + kw[None, None, :] * dw)
    return np.ascontiguousarray(koff.reshape(-1), dtype=np.int64)


def pointwise_dims(g: Geometry, layout: str) -> np.ndarray:
    """``kernels.pointwise.gemm_pointwise``'s ``dims``: its GEMMs as data.

    NCHW, per (image, group): C = out[n, g] (og x H*W) = W[g] (og x cg) @
    x[n, g] (cg x H*W), the bias along C's rows.  NHWC, per group, all
    images in one: C = out (N*H*W x og, rows O apart) = x (N*H*W x cg, rows
    C apart) @ W (cg x og, rows O apart), the bias along C's columns.
    """
    hw = g.h * g.w
    if layout == "NHWC":
        return np.array((1, g.groups, g.n * hw, g.og, g.cg, 0, g.cg, g.c, 0, g.og, g.o,
                         0, g.og, g.o, 0), dtype=np.int64)
    return np.array((g.n, g.groups, g.og, hw, g.cg, 0, g.og * g.cg, g.cg, g.c * hw, g.cg * hw,
                     hw, g.o * hw, g.og * hw, hw, 1), dtype=np.int64)


def pointwise_tile(dims: np.ndarray, dtype: np.dtype, threads: int,
                   isa: str | None = None) -> tuple[int, int, int]:
    """(kc, panels, row tiles) per task of pointwise_gemm.

    K blocks of at most ``kc`` of the machine context (one panel fills half
    of L1 while the row tiles pass over it); at most 8 panels per task, and
    no more than a quarter of L2 (the packed block); and rows of A at most
    half of L2 per K block.
    Below four tasks per thread, blocks of fewer panels (at least 4) come
    first, and rows are split only while there are still too few tasks,
    since every row block of a task packs its columns of B again; and few
    tasks make whole rounds for the threads.
    """
    images, groups, m, n, k = (max(int(v), 1) for v in dims[:5])  # (no images: any tile)
    rt = tile_for(dtype, isa)
    cb = machine.blocks(rt)
    kc = ceil_div(k, ceil_div(k, cb.kc))
    panels = ceil_div(n, rt.nr)
    # At most 8 panels a task, fewer if they would pass a quarter of L2: more
    # made fewer, larger tasks (256->64 at 56x56, 2 MiB L2: 1.3x the time).
    fit = max(1, cb.l2_share // (kc * rt.nr * dtype.itemsize))
    pan = ceil_div(panels, ceil_div(panels, min(8, fit)))
    tiles = ceil_div(m, rt.mr)
    most = max(1, cb.l2_half // (rt.mr * kc * dtype.itemsize))
    if images * groups * ceil_div(panels, pan) < 4 * threads:
        # Fewer panels per task (down to 4) before splitting the rows, which
        # packs B once per row block: 28x28 at batch 1 on 2 threads (49
        # panels), 10 tasks of 5 panels took 0.88-1.01x (median 0.93x, seven
        # runs of 11 rounds) the time of 14 of 7 panels and half the rows.
        # With many K blocks (14x14, K = 1024) the rows must split anyway, to
        # keep a task's A in L2.
        for fewer in range(pan - 1, 3, -1):
            blocks = images * groups * ceil_div(panels, fewer)
            if blocks >= 4 * threads and blocks % threads == 0:
                pan = fewer
                break
    outer = images * groups * ceil_div(panels, pan)
    rows = min(tiles, max(ceil_div(tiles, most), ceil_div(4 * threads, outer)))
    while outer * rows < 8 * threads and (outer * rows) % threads and rows < tiles:
        rows += 1
    return kc, pan, ceil_div(tiles, rows)


# indirect_gemm needs at least this much work per call: it stops OpenBLAS's
# threads first, and the next BLAS call pays ~0.1 ms or more to restart them.
INDIRECT_MIN_FLOPS = 10**8

# 1x1 layers below this much work run on Numba's threads (pointwise_gemm),
# above it on OpenBLAS's (gemm_1x1).  Alone, OpenBLAS is faster: ResNet-50's
# six 1x1 layers took pointwise_gemm 1.10-1.15x its time at batch 1 and
# 1.04-1.14x at batch 8.  But a network switches pools at every 1x1 layer
# (0.1 ms to stop OpenBLAS's spinning threads before the next Numba kernel,
# 0.15-0.2 ms to start them again, and each pool's idle threads in the
# other's way): ResNet-50's 12 layers back to back at batch 1 (1x1 layers
# of 0.03-0.1 GFLOP) took 0.76-0.84x the time with pointwise_gemm, NCHW,
# and 0.84-0.97x NHWC (which keeps one BLAS layer).  At batch 8 (0.2-0.8
# GFLOP) the switches are small beside the layers: 0.94-0.97x NCHW, 1.04x
# NHWC, so there OpenBLAS's speed layer by layer decides.
POINTWISE_MAX_FLOPS = 2 * 10**8


def choose_algorithm(g: Geometry, layout: str, dtype: np.dtype, prepacked: bool = False,
                     isa: str | None = None) -> str:
    """The dispatcher's rule, in order of preference.

    1x1, stride-1, unpadded layers are plain GEMMs: ``pointwise_gemm`` on
    Numba's threads below ``POINTWISE_MAX_FLOPS`` (one thread pool across a
    network of small layers), ``gemm_1x1`` on OpenBLAS above it.

    ``packed_gemm`` is not chosen automatically.  Layer by layer it took
    0.66-0.94x im2col_gemm's time on ResNet-50's 3x3 layers where im2col_gemm
    runs one thin GEMM per image, but 1.4x on 7x7 images at batch 8 and
    1.1-1.6x on 1x1 layers; and run as a network, its Numba threads share the
    cores with OpenBLAS's worker, which spins for a while after every BLAS
    call of the neighbouring layers: the 12 ResNet-50 layers back to back
    took 46 ms at batch 1 against 27-31 ms with im2col_gemm.

    ``indirect_gemm`` takes layers with K <= 2304 and at least
    ``INDIRECT_MIN_FLOPS`` of work per call, in either layout: there it took 0.56-0.75x
    im2col_gemm's time (NHWC, NCHW: 0.6-0.8x at batch 8), and 0.75-0.89x on
    K = 2304 in NCHW, while K = 4608 was slower (1.0-1.3x).  The deep layers
    lose because each call packs a large weight; with the weight packed
    beforehand (``prepacked``: a ``PackedWeight``), K = 4608 took 0.66x
    (batch 1) and 0.82x (batch 8) of im2col_gemm's time, so then any K goes
    (float64, one run: 0.85x at batch 1, 0.96x at batch 8 NCHW, but 1.08x at
    batch 8 NHWC).  Deeper NCHW layers whose pixels make one block of tiles
    (``few_pixels``) go too: each task then packs its own panels from the
    OIHW weight, which is read once (K = 4608, float32: 7x7 at batch 1-6
    0.76-0.81x, VGG's 14x14 0.84-0.90x; 28x28, 131 tiles, level; float64
    0.89-0.92x at 9-17 tiles, 0.95-0.98x at 33, 1.06x at 49, so its bound
    is 32 tiles).  So do float32 NCHW layers on small images
    (``small_images``: at most 64 output pixels each), at any batch:
    7x7x512 at batch 8-32 took 0.83-0.93x of im2col_gemm's time, and with
    the 1x1 layer after it (which restarts OpenBLAS's threads) 0.92-0.93x;
    float64 1.0-1.08x at batch 8-16, and VGG's 14x14 and 28x28 at batch 8
    0.99-1.0x, so those stay.  From HWIO, where a task's
    channels are a short piece of each 2 KiB weight row, it was level at
    best (0.89-1.25x), so NHWC keeps im2col_gemm there.
    Figures and the way forward: docs/performance.md.
    """
    if is_depthwise(g):
        return "direct_depthwise"
    wide = wide_panels(dtype, isa)
    one_block = few_pixels(g, dtype, isa) and (layout == "NCHW" or wide)
    if is_pointwise(g):
        # One block of tiles on a wide tile: indirect_gemm splits the weight
        # over the tasks, where pointwise_gemm's row blocks each pack all of
        # B again (decisions.md, "1x1 layers with few pixels").
        if wide and few_pixels(g, dtype, isa) and indirect_fits(g, dtype, prepacked, isa):
            return "indirect_gemm"
        return "pointwise_gemm" if g.flops < POINTWISE_MAX_FLOPS else "gemm_1x1"
    deep_ok = prepacked or g.cg * g.kh * g.kw <= 2304 or one_block or (
        layout == "NCHW" and small_images(g, dtype))
    if deep_ok and g.flops >= INDIRECT_MIN_FLOPS and indirect_fits(g, dtype, prepacked, isa):
        return "indirect_gemm"
    return "im2col_gemm"


# indirect_gemm's tasks, in output pixels: up to ONE_BLOCK_PIXELS make one
# block of tiles, else blocks of at most TASK_PIXELS (whole register tiles).
ONE_BLOCK_PIXELS = 384
TASK_PIXELS = 192


def indirect_tiles(g: Geometry, images: int, mr: int) -> int:
    """indirect_gemm's register tiles (``mr`` output pixels each) over ``images`` images."""
    return ceil_div(max(images, 1) * g.p * g.q, mr)


def few_pixels(g: Geometry, dtype: np.dtype, isa: str | None = None) -> bool:
    """Whether a call's output pixels make one block of indirect_gemm tiles (in bytes:
    384 float32 pixels, 192 float64)."""
    mr = tile_for(dtype, isa).mr
    return indirect_tiles(g, g.n, mr) * mr * dtype.itemsize <= ONE_BLOCK_PIXELS * 4


def wide_panels(dtype: np.dtype, isa: str | None = None) -> bool:
    """Whether a weight panel row spans two cache lines (NR * itemsize >= 128: AVX-512's tile).

    Then a task's piece of each HWIO weight row is two lines, not one, and
    indirect_gemm wins the deep NHWC layers and the 1x1 layers whose pixels
    make one block of tiles (decisions.md).
    """
    return tile_for(dtype, isa).nr * np.dtype(dtype).itemsize >= 128


def small_images(g: Geometry, dtype: np.dtype) -> bool:
    """Whether each output image has at most 64 pixels (8x8), in float32."""
    return dtype.itemsize == 4 and g.p * g.q <= 64


def indirect_tile(g: Geometry, dtype: np.dtype, images: int, threads: int,
                  prepacked: bool = False, layout: str = "NCHW",
                  isa: str | None = None) -> tuple[int, int, int, bool]:
    """(kc, tiles per task, weight panels per task, pack the weight once) of indirect_gemm.

    kc: K blocks of at most the machine context's ``kc`` (one block of MR
    pixels' A and one weight panel stay in L1), half that in strided NCHW
    layers: a strided task's tiles span stride times the input rows.
    (ResNet-50's stride-2 3x3 layer, K = 1152, AVX2: 0.95-1.0x of the time
    with blocks of 128 rather than 231; NHWC 0.99-1.03x, so NHWC keeps the
    whole block.)  Tiles: at most ``TASK_PIXELS`` pixels per task, in even
    blocks, a multiple of the thread count when there are few; but up to
    ``ONE_BLOCK_PIXELS`` make a single block.  When that leaves fewer than
    four tasks per thread (small images, a deep layer at batch 1), the
    weight panels are split across tasks too, so that each panel is still
    read by few tasks; and each task's scratch block stays within a quarter
    of L2.  The weight is packed once per call only when more than two
    tasks read each panel; otherwise each task packs its own panels from the
    caller's weight; and never when a ``PackedWeight`` brings them
    (``prepacked``).
    """
    k = g.cg * g.kh * g.kw
    rt = tile_for(dtype, isa)
    cb = machine.blocks(rt)
    kc_max = cb.kc // 2 if layout == "NCHW" and g.stride[0] > 1 else cb.kc
    kc = ceil_div(k, ceil_div(k, kc_max))  # even blocks
    nr, mr = rt.nr, rt.mr
    tiles = indirect_tiles(g, images, mr)
    blocks = ceil_div(tiles, max(1, TASK_PIXELS // mr))
    if tiles * mr <= ONE_BLOCK_PIXELS:
        # One block, its tasks splitting the weight: each panel is then packed
        # once, not once per block (14x14x256 at batch 1, 33 tiles: 0.94-0.96x
        # the time of two blocks, both layouts, 25 alternating rounds).
        blocks = 1
    elif 1 < blocks < 16 * threads and blocks % threads:
        # Whole rounds for the threads: 3 blocks on 2 threads took 6-9% longer
        # than 4 smaller ones (7x7x512 at batch 8).  One block stays one: its
        # tasks split the weight instead, which each then reads once.
        blocks = min(tiles, threads * ceil_div(blocks, threads))
    per = ceil_div(tiles, blocks)
    blocks = ceil_div(tiles, per)
    tasks = g.groups * blocks
    panels = ceil_div(g.og, nr)
    split = min(panels, ceil_div(4 * threads, tasks)) if tasks < 4 * threads else 1
    most = max(1, cb.l2_share // (per * mr * nr * dtype.itemsize))
    per_task = min(ceil_div(panels, split), most)
    per_task = ceil_div(panels, ceil_div(panels, per_task))  # even blocks
    return kc, per, per_task, blocks > 2 and not prepacked


def packed_tile(g: Geometry, dtype: np.dtype, threads: int,
                isa: str | None = None) -> tuple[int, int, int]:
    """(kc, nc, mc) of a packed_gemm task.

    A tile of kc x nc column-matrix values stays in L2 (kc the machine
    context's K block, at most 192 columns of float32, beside the weight
    panels); rows and columns
    (pixels of all images) are split evenly rather than leaving a thin
    remainder.  When that gives fewer than two tasks per thread, output
    channels are split too (each task then packs its own copy of the tile,
    which is cheap next to the weight traffic of a small, deep layer).
    """
    k = g.cg * g.kh * g.kw
    rt = tile_for(dtype, isa)
    kc = ceil_div(k, ceil_div(k, machine.blocks(rt).kc))
    nr, mr = rt.nr, rt.mr
    total = max(g.n, 1) * g.p * g.q
    # Column blocks: tiles of at most 192 float32 columns, but at least four
    # tasks per thread when there are columns enough for tiles of 64 (a few
    # uneven tasks leave a thread idle: 5 tasks on 2 threads lose 17%).
    blocks = max(ceil_div(total, 192 * 4 // dtype.itemsize),
                 min(4 * threads, ceil_div(total, 64 * 4 // dtype.itemsize)))
    blocks = threads * ceil_div(blocks, threads) if blocks > threads else blocks
    nc = nr * ceil_div(ceil_div(total, blocks), nr)
    tasks = g.groups * ceil_div(total, nc)
    blocks = min(ceil_div(2 * threads, tasks), max(g.og // (4 * mr), 1))
    mc = min(g.og, mr * ceil_div(ceil_div(g.og, blocks), mr))
    return kc, nc, mc


def make_plan(g: Geometry, layout: Layout, dtype: np.dtype, algorithm: str = "auto",
              prepacked: bool = False) -> Plan:
    """Build (uncached) the plan for one problem; ``algorithm`` may force one.

    ``prepacked``: the weight comes as a ``PackedWeight`` whose panels
    indirect_gemm can use (the same layout, groups and dtype).
    """
    isa = machine.variant()  # one variant for the whole plan, recorded in it
    if algorithm == "auto":
        algorithm = choose_algorithm(g, layout.name, np.dtype(dtype), prepacked, isa)
    elif algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm: expected 'auto' or one of {list(ALGORITHMS)}, got "
                         f"{algorithm!r}")
    elif algorithm in ("gemm_1x1", "pointwise_gemm") and not is_pointwise(g):
        raise ValueError(f"algorithm: {algorithm!r} needs a 1x1 kernel, stride 1 and no "
                         f"padding, got kernel {g.kh}x{g.kw}, stride {g.stride}, padding {g.pads}")
    elif algorithm == "packed_gemm" and not packable(g, layout.name, dtype, isa):
        raise ValueError(f"algorithm: 'packed_gemm' needs layout 'NCHW' and at least "
                         f"{tile_for(dtype, isa).mr} output channels per group (the register "
                         f"tile's rows), got layout {layout.name!r} with {g.og}")
    elif algorithm == "direct_depthwise" and not is_depthwise(g):
        raise ValueError("algorithm: 'direct_depthwise' needs groups == input channels > 1, got "
                         f"groups={g.groups} with {g.c} channels")
    dtype = np.dtype(dtype)
    item = dtype.itemsize
    limit = config.max_workspace_bytes
    if algorithm == "direct_depthwise":
        return Plan(algorithm, layout=layout.name, dtype=dtype.name, geometry=g, gemm_m=0,
                    gemm_n=0, gemm_k=0, gemm_calls=0, gemm_batched=False,
                    batch_chunk=max(g.n, 1), row_chunk=g.p, workspace_bytes=0,
                    max_workspace_bytes=limit, threads=numba.get_num_threads(),
                    tables=IndexTables.build(g), isa=isa)
    threads = numba.get_num_threads()
    if algorithm == "pointwise_gemm":
        dims = pointwise_dims(g, layout.name)
        images, groups, m, n, k = (int(v) for v in dims[:5])
        return Plan(algorithm, layout=layout.name, dtype=dtype.name, geometry=g, gemm_m=m,
                    gemm_n=n, gemm_k=k, gemm_calls=images * groups if g.n else 0,
                    gemm_batched=False, batch_chunk=max(g.n, 1), row_chunk=g.p,
                    workspace_bytes=0, max_workspace_bytes=limit, threads=threads,
                    tile=pointwise_tile(dims, dtype, threads, isa), dims=dims, isa=isa)
    if algorithm == "packed_gemm":
        kc, nc, mc = packed_tile(g, dtype, threads, isa)
        return Plan(algorithm, layout=layout.name, dtype=dtype.name, geometry=g, gemm_m=g.og,
                    gemm_n=g.n * g.p * g.q, gemm_k=g.cg * g.kh * g.kw, gemm_calls=g.groups,
                    gemm_batched=False, batch_chunk=max(g.n, 1), row_chunk=g.p,
                    workspace_bytes=threads * kc * nc * item, max_workspace_bytes=limit,
                    threads=threads, tables=IndexTables.build(g), tile=(kc, nc, mc), isa=isa)
    if algorithm == "indirect_gemm":
        # Whole images per chunk (a padded image cannot be split); at least one.
        per_image = _indirect_bytes(g, dtype, 1, isa=isa) - _indirect_bytes(g, dtype, 0, isa=isa)
        room = limit - _indirect_bytes(g, dtype, 0, panels=not prepacked, isa=isa)  # (at most)
        fit = (room // per_image if room > 0 else 1) if per_image else g.n  # x read in place
        bc = max(1, min(max(g.n, 1), fit))
        bc = ceil_div(max(g.n, 1), ceil_div(max(g.n, 1), bc))  # balanced chunks
        tile = indirect_tile(g, dtype, bc, threads, prepacked, layout.name, isa)
        return Plan(algorithm, layout=layout.name, dtype=dtype.name, geometry=g,
                    gemm_m=bc * g.p * g.q, gemm_n=g.og, gemm_k=g.cg * g.kh * g.kw,
                    gemm_calls=g.groups * ceil_div(g.n, bc) if g.n else 0, gemm_batched=False,
                    batch_chunk=bc, row_chunk=g.p,
                    workspace_bytes=_indirect_bytes(g, dtype, bc, tile[3], isa) if g.n else 0,
                    max_workspace_bytes=limit, threads=threads, tables=IndexTables.build(g),
                    tile=tile,
                    offsets=indirect_offsets(g, layout.name),
                    dims=indirect_dims(g, layout.name, bc), prepacked=prepacked, isa=isa)
    nchw = layout.name == "NCHW"
    batched = gemm_batched(g, layout.name)
    kk = g.kh * g.kw

    def scratch_per_row(batched: bool) -> int:
        if algorithm == "gemm_1x1":
            # Batched NCHW needs x as (C, images*H*W) and the output before the copy.
            return (g.c + g.o) * g.q * item if batched else 0
        return (g.c * kk + (g.o if batched else 0)) * g.q * item

    row_bytes = scratch_per_row(batched)
    bc, rc = _chunking(g, row_bytes, limit) if row_bytes else (max(g.n, 1), g.p)
    if batched and rc < g.p:  # batching needs whole images; a band does not fit
        batched, row_bytes = False, scratch_per_row(False)
        bc, rc = _chunking(g, row_bytes, limit) if row_bytes else (max(g.n, 1), g.p)
    nchunks = ceil_div(g.n, bc) * ceil_div(g.p, rc) if g.n else 0
    k = g.cg * kk
    if nchw and not batched:
        mnk, calls = (g.og, rc * g.q, k), g.n * g.groups * ceil_div(g.p, rc)
    elif nchw:
        mnk, calls = (g.og, bc * rc * g.q, k), g.groups * nchunks
    else:
        mnk, calls = (bc * rc * g.q, g.og, k), g.groups * nchunks
    return Plan(algorithm, layout=layout.name, dtype=dtype.name, geometry=g,
                gemm_m=mnk[0], gemm_n=mnk[1], gemm_k=mnk[2], gemm_calls=calls,
                gemm_batched=batched, batch_chunk=bc, row_chunk=rc,
                workspace_bytes=bc * rc * row_bytes if g.n else 0,
                max_workspace_bytes=limit, threads=numba.get_num_threads(),
                tables=None if algorithm == "gemm_1x1" else IndexTables.build(g), isa=isa)


# --------------------------------------------------------------------------
# The plan cache
# --------------------------------------------------------------------------
_plans: dict = {}
_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def get_plan(g: Geometry, layout: Layout, dtype: np.dtype, algorithm: str = "auto",
             prepacked: bool = False) -> Plan:
    """The cached plan for this problem signature; built on the first call."""
    key = (layout.name, np.dtype(dtype).name, g, algorithm, prepacked, config.max_workspace_bytes,
           config.gemm_batch_below, numba.get_num_threads(), machine.variant())
    with _lock:
        plan = _plans.get(key)
        if plan is not None:
            _stats["hits"] += 1
            return plan
        _stats["misses"] += 1
    plan = make_plan(g, layout, dtype, algorithm, prepacked)
    with _lock:
        return _plans.setdefault(key, plan)


# conv2d's calls by their raw signature (shapes, dtypes, hyper-parameters),
# to (geometry, dtype, plan): a repeated call skips validating and planning,
# 25-30 us of conv2d's ~70 us of Python per call (a network of small layers
# makes many).  Only signatures of plain ints, strs and tuples are kept (see
# conv.py), so that an argument that validates differently (True for 1, 1.0)
# never meets a cached entry.  Bounded: cleared when it grows past
# _CALLS_MAX entries.
_calls: dict = {}
_CALLS_MAX = 4096


def plan_call(signature: tuple, build: Callable[[], tuple]) -> tuple:
    """``build()`` (validate and plan a conv2d call), cached by the call's ``signature``."""
    key = (signature, config.max_workspace_bytes, config.gemm_batch_below,
           numba.get_num_threads(), machine.variant())
    with _lock:
        hit = _calls.get(key)
        if hit is not None:
            if hit[2] is not None:
                _stats["hits"] += 1  # as get_plan would have counted it
            return hit
    result = build()  # raises for bad arguments: nothing is cached then
    with _lock:
        if len(_calls) >= _CALLS_MAX:
            _calls.clear()
        _calls[key] = result
    return result


@dataclass(frozen=True)
class CacheInfo:
    """Hits and misses of the plan cache and of the compiled-kernel cache."""

    plan_hits: int
    plan_misses: int
    plan_size: int
    kernel_hits: int
    kernel_misses: int
    kernel_size: int


def cache_info() -> CacheInfo:
    """Plan and kernel cache statistics for this process.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> numbaconv.cache_clear()
    >>> x = np.ones((1, 2, 5, 5), np.float32); w = np.ones((3, 2, 3, 3), np.float32)
    >>> _ = numbaconv.conv2d(x, w); _ = numbaconv.conv2d(x, w)
    >>> info = numbaconv.cache_info()
    >>> (info.plan_misses, info.plan_hits)
    (1, 1)
    """
    k = kernels.kernel_cache_info()
    with _lock:
        return CacheInfo(_stats["hits"], _stats["misses"], len(_plans), k.hits, k.misses,
                         k.currsize)


def cache_clear() -> None:
    """Forget every plan and compiled kernel (Numba's disk cache stays)."""
    with _lock:
        _plans.clear()
        _calls.clear()
        _stats.update(hits=0, misses=0)
    kernels.cache_clear()
