"""Index tables: stride, dilation, padding and padding_mode as data.

The gather, scatter, padding and depthwise kernels read these tables
instead of carrying stride/padding/mode logic of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._args import Geometry


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
