"""Every rank on one engine: 1-d and 3-d convolutions as 2-d ones.

The 2-d engine (its dispatcher, algorithms and kernels) is the only one.
A problem of rank n is *lowered* onto it:

* **rank 1** gains a height of one: (N, C, W) is (N, C, 1, W), a free view,
  and the 2-d plan's one output row costs no per-row overhead (the
  algorithms tile over output pixels, P * Q, not over rows);
* **rank 3** folds its depth taps into channels: output depth d of image n
  is one 2-d image whose channels are the (channel, depth tap) pairs, read
  from input depth ``d * stride + kd * dilation - pad`` (``kernels/fold.py``).
  The weight (O, I, KD, KH, KW) is then a 2-d weight with I * KD input
  channels.  The folded rows are built chunk by chunk under
  ``config.max_workspace_bytes``; the depth padding mode lives in the fold's
  index table, the height and width ones in the 2-d plan's.

The lowering is linear, so the gradients are the 2-d gradients seen
through it: grad_weight folds x the same way, and grad_input adds the 2-d
input gradient back through the fold's adjoint (``unfold_depth``).
Evidence and alternatives: docs/design/decisions.md, "N-d: lowering onto
the 2-d engine".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from . import _args, config, kernels
from ._args import NdGeometry, RankLayout
from ._execute import quiet_fp, workspace
from ._tables import axis_table
from .backward import grad_input as grad_input2
from .backward import grad_weight as grad_weight2
from .conv import conv2d

__all__ = ["Lowered", "NdPlan", "lower"]


class Plane(NamedTuple):
    """The two axes the 2-d problem keeps: sizes, kernel, output, stride, dilation, pads."""

    sizes: tuple[int, int]
    kernel: tuple[int, int]
    out: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]


@dataclass(frozen=True)
class Lowered:
    """An n-d problem and the 2-d problem that computes it."""

    nd: NdGeometry
    layout: RankLayout

    # ---------------------------------------------------------------- shapes
    @property
    def rank(self) -> int:
        return self.nd.rank

    @property
    def folds(self) -> bool:
        return self.rank == 3

    @property
    def rows(self) -> int:
        """Images of the 2-d problem: one per (image, output depth) when folding."""
        return self.nd.n * (self.nd.out[0] if self.folds else 1)

    @property
    def taps(self) -> int:
        """Depth taps folded into each input channel (1 unless rank 3)."""
        return self.nd.kernel[0] if self.folds else 1

    @cached_property
    def plane(self) -> Plane:
        """The 2-d problem's (H, W), (KH, KW), (P, Q) and their axes' hyper-parameters."""
        g, k = self.nd, 2 - min(self.rank, 2)  # k: leading unit axes (1 for rank 1)
        axes = range(self.rank - 2 + k, self.rank)  # the n-d axes that stay: the last two

        def pick(values):
            return (1,) * k + tuple(values[i] for i in axes)

        pads = (0, 0) * k + tuple(p for i in axes for p in g.pads[2 * i:2 * i + 2])
        return Plane(pick(g.sizes), pick(g.kernel), pick(g.out), pick(g.stride),
                     pick(g.dilation), pads)

    def x2_shape(self, rows: int) -> tuple[int, ...]:
        hw = self.plane.sizes
        return self.layout.base.x_shape(rows, self.nd.c * self.taps, *hw)

    def y2_shape(self, rows: int) -> tuple[int, ...]:
        pq = self.plane.out
        return self.layout.base.x_shape(rows, self.nd.o, *pq)

    def w2_shape(self) -> tuple[int, ...]:
        kk = self.plane.kernel
        return self.layout.base.w_shape(self.nd.o, self.nd.cg * self.taps, *kk)

    def conv_kwargs(self) -> dict:
        _, _, _, stride, dilation, pads = self.plane
        return dict(stride=stride, padding=((pads[0], pads[1]), (pads[2], pads[3])),
                    dilation=dilation, groups=self.nd.groups, layout=self.layout.base,
                    padding_mode=self.nd.padding_mode)

    def geometry2(self, rows: int) -> _args.Geometry:
        """The 2-d Geometry of ``rows`` images (already validated as the n-d problem)."""
        g = self.nd
        (h, w), (kh, kw), (p, q), stride, dilation, pads = self.plane
        return _args.Geometry(rows, g.c * self.taps, h, w, g.o, kh, kw, stride, dilation, pads,
                              g.groups, g.padding_mode, p, q)

    # ------------------------------------------------------------- the fold
    @cached_property
    def dtab(self) -> np.ndarray:
        """dtab[d, kd]: the input depth output depth d's tap kd reads, or -1 (a zero)."""
        g = self.nd
        table = axis_table(g.sizes[0], g.kernel[0], g.out[0], g.stride[0], g.dilation[0],
                           g.pads[0], g.padding_mode)
        return np.ascontiguousarray(table.T)

    def _ab(self) -> tuple[int, int, int]:
        """(A, B, depth_major) of the fold kernels' flat view of x (``kernels/fold.py``)."""
        g = self.nd
        h, w = g.sizes[1], g.sizes[2]
        if self.layout.channels_last:
            return h * w * g.groups, g.cg, 1
        return g.c, h * w, 0

    def chunks(self, itemsize: int):
        """(first row, rows) per chunk: the folded rows of a chunk fit the workspace."""
        if not self.folds:
            yield 0, self.rows
            return
        per_row = self.nd.c * self.taps * self.nd.sizes[1] * self.nd.sizes[2] * itemsize
        step = max(1, config.max_workspace_bytes // per_row)
        for r0 in range(0, self.rows, step):
            yield r0, min(step, self.rows - r0)

    def fold(self, x: np.ndarray, r0: int, nr: int, dtype, kept: bool = True) -> np.ndarray:
        """The 2-d input of rows r0..r0+nr: x itself (a view) unless the rank folds.

        ``kept``: into this thread's "fold" workspace (chunks under the bound),
        else into a new array.
        """
        if not self.folds:
            return x.reshape(self.x2_shape(self.rows))
        a, b, major = self._ab()
        size = nr * a * self.taps * b
        out = workspace(size * dtype.itemsize, dtype, "fold") if kept else np.empty(size, dtype)
        kernels.get("fold_depth", "ANY", dtype.name)(
            x.reshape(-1), out, r0, nr, a, b, self.nd.sizes[0], major, self.dtab)
        return out.reshape(self.x2_shape(nr))

    def unfold_into(self, gx: np.ndarray, g2: np.ndarray, r0: int, nr: int) -> None:
        a, b, major = self._ab()
        kernels.get("unfold_depth", "ANY", gx.dtype.name)(
            np.ascontiguousarray(g2).reshape(-1), gx.reshape(-1), r0, nr, a, b,
            self.nd.sizes[0], major, self.dtab)

    # -------------------------------------------------- the weight and rows
    def weight2(self, w: np.ndarray) -> np.ndarray:
        """The 2-d weight: channels (c, kd) for NCDHW; (kd, c) within a group for NDHWC."""
        if self.folds and self.layout.channels_last:  # (KD, KH, KW, I, O) -> (KH, KW, KD*I, O)
            w = w.transpose(1, 2, 0, 3, 4)
        return np.ascontiguousarray(w).reshape(self.w2_shape())

    def weight_nd(self, w2: np.ndarray) -> np.ndarray:
        """The adjoint of weight2: a 2-d weight gradient as the n-d weight's."""
        g = self.nd
        if self.folds and self.layout.channels_last:
            kd, kh, kw = g.kernel
            return np.ascontiguousarray(
                w2.reshape(kh, kw, kd, g.cg, g.o).transpose(2, 0, 1, 3, 4))
        return w2.reshape(self.layout.w_shape(g.o, g.cg, g.kernel))

    def rows_of(self, y: np.ndarray, r0: int, nr: int) -> np.ndarray:
        """Rows r0..r0+nr of an n-d output-shaped array, as a contiguous 2-d batch."""
        if not self.folds or self.layout.channels_last:
            return np.ascontiguousarray(y.reshape(self.y2_shape(self.rows))[r0:r0 + nr])
        return np.ascontiguousarray(
            np.concatenate([y[i][:, lo:hi] for i, lo, hi in self._spans(r0, nr)],
                           axis=1).transpose(1, 0, 2, 3))

    def put_rows(self, y: np.ndarray, r0: int, y2: np.ndarray) -> None:
        """The inverse of rows_of: write a 2-d batch into rows r0.. of ``y``."""
        if not self.folds or self.layout.channels_last:
            y.reshape(self.y2_shape(self.rows))[r0:r0 + y2.shape[0]] = y2
            return
        k = 0
        for i, lo, hi in self._spans(r0, y2.shape[0]):
            y[i][:, lo:hi] = y2[k:k + hi - lo].transpose(1, 0, 2, 3)
            k += hi - lo

    def _spans(self, r0: int, nr: int):
        """(image, first depth, end depth) covering rows r0..r0+nr."""
        dp = self.nd.out[0]
        for i in range(r0 // dp, (r0 + nr - 1) // dp + 1):
            yield i, max(r0 - i * dp, 0), min(r0 + nr - i * dp, dp)

    def y_shape(self) -> tuple[int, ...]:
        g = self.nd
        return self.layout.x_shape(g.n, g.o, g.out)

    def x_shape(self) -> tuple[int, ...]:
        g = self.nd
        return self.layout.x_shape(g.n, g.c, g.sizes)

    def w_shape(self) -> tuple[int, ...]:
        g = self.nd
        return self.layout.w_shape(g.o, g.cg, g.kernel)


def lower(nd: NdGeometry, layout: RankLayout) -> Lowered:
    return Lowered(nd, layout)


@dataclass(frozen=True)
class NdPlan:
    """How a 1-d or 3-d convolution runs: the 2-d plan it is lowered onto.

    ``print(plan)`` reads it aloud.  ``lowered`` is that 2-d :class:`Plan`
    (for the rows of one fold chunk in 3-d); ``algorithm`` is its algorithm.
    """

    rank: int
    layout: RankLayout
    geometry: NdGeometry
    lowered: object  # a Plan
    rows: int  # images of the 2-d problem
    chunk_rows: int  # of them per fold chunk

    @property
    def algorithm(self) -> str:
        return self.lowered.algorithm

    def __str__(self) -> str:
        g = self.geometry
        names = ("D", "H", "W")[3 - self.rank:]
        sizes = " ".join(f"{a}={v}" for a, v in zip(names, g.sizes, strict=True))
        out = " ".join(f"{a}={v}" for a, v in zip(names, g.out, strict=True))
        pads = tuple(zip(g.pads[::2], g.pads[1::2], strict=True))
        if self.rank == 1:
            how = "  as 2-d  a unit height: the same arrays, viewed as (H=1, W); no copy"
        else:
            how = (f"  as 2-d  depth taps folded into channels: {self.rows} images (N x D_out) "
                   f"of C*KD = {g.c * g.kernel[0]} channels, {self.chunk_rows} per fold chunk")
        lowered = "\n".join("    " + line for line in str(self.lowered).splitlines())
        return "\n".join([
            f"conv{self.rank}d plan: {self.algorithm} ({self.layout}, {self.lowered.dtype})",
            f"  input  N={g.n} C={g.c} {sizes} -> output O={g.o} {out}",
            f"  kernel {'x'.join(map(str, g.kernel))}, stride {g.stride}, dilation "
            f"{g.dilation}, padding {pads} {g.padding_mode}, groups {g.groups}",
            how,
            lowered,
        ])


# --------------------------------------------------------------------------
# The computations, on C-contiguous arrays of the compute dtype
# --------------------------------------------------------------------------
def forward(low: Lowered, x, w, bias, dtype, activation=None) -> np.ndarray:
    """y = activation(conv(x, w) + bias), n-d, through the 2-d conv2d."""
    dtype = np.dtype(dtype)
    w2 = low.weight2(w)
    y = np.empty(low.y_shape(), dtype)
    for r0, nr in low.chunks(dtype.itemsize):
        y2 = conv2d(low.fold(x, r0, nr, dtype), w2, bias, activation=activation,
                    **low.conv_kwargs())
        if nr == low.rows and (not low.folds or low.layout.channels_last):
            return y2.reshape(low.y_shape())
        low.put_rows(y, r0, y2)
    return y


def grad_input(low: Lowered, dtype, w, gout) -> np.ndarray:
    dtype = np.dtype(dtype)
    w2 = low.weight2(w)
    if not low.folds:
        gx = grad_input2(low.geometry2(low.rows), low.layout.base, dtype, w2,
                         gout.reshape(low.y2_shape(low.rows)))
        return gx.reshape(low.x_shape())
    gx = np.zeros(low.x_shape(), dtype)
    for r0, nr in low.chunks(dtype.itemsize):
        g2 = grad_input2(low.geometry2(nr), low.layout.base, dtype, w2,
                         low.rows_of(gout, r0, nr))
        low.unfold_into(gx, g2, r0, nr)
    return gx


def grad_weight(low: Lowered, dtype, x, gout) -> np.ndarray:
    dtype = np.dtype(dtype)
    if low.rows == 0:
        return np.zeros(low.w_shape(), dtype)
    gw2 = None
    for r0, nr in low.chunks(dtype.itemsize):
        part = grad_weight2(low.geometry2(nr), low.layout.base, dtype,
                            low.fold(x, r0, nr, dtype), low.rows_of(gout, r0, nr))
        gw2 = part if gw2 is None else gw2 + part
    return low.weight_nd(gw2)


@quiet_fp
def grad_bias(layout: RankLayout, gout) -> np.ndarray:
    axes = tuple(a for a in range(gout.ndim) if a != layout.channel_axis)
    return gout.sum(axis=axes)
