"""Copy loops shared by the gather and scatter kernels.

They are inlined into the kernels at Numba-IR level (``inline="always"``):
called as ordinary functions they stayed out-of-line and the gathers ran
at half speed.  (Numba's disk cache does not notice edits to this file:
clear ``kernels/__pycache__`` after changing it.)

Indices are cast to unsigned: with a signed index Numba emits a
negative-index wraparound check on every access, which stops LLVM from
vectorising the loop.  Measured on a 3x3 NCHW gather: explicit unsigned
loops ran 2x faster than slice assignment (whose per-call set-up dominates
short rows), 29.5 vs 19.0 GB/s at 56x56 and 5.5 vs 3.1 GB/s at 7x7.
"""

import numba
import numpy as np

U = np.uint64


@numba.njit(inline="always")
def copy_run(dst, d, src, s, n):
    """dst[d:d+n] = src[s:s+n]."""
    for i in range(n):
        dst[U(d + i)] = src[U(s + i)]


@numba.njit(inline="always")
def copy_strided(dst, d, src, s, n, step):
    """dst[d:d+n] = src[s:s+n*step:step]."""
    for i in range(n):
        dst[U(d + i)] = src[U(s + i * step)]


@numba.njit(inline="always")
def fill_zero(dst, d, n):
    for i in range(n):
        dst[U(d + i)] = 0


@numba.njit(inline="always")
def copy_edges(dst, d, src, srow, wrow, q_from, q_to):
    """dst[d+q] = src[srow + wrow[q]], or 0 where wrow[q] < 0 (padding)."""
    for q in range(q_from, q_to):
        w = wrow[q]
        dst[U(d + q)] = src[U(srow + w)] if w >= 0 else 0


@numba.njit(inline="always")
def add_run(dst, d, src, s, n, step):
    """dst[d:d+n*step:step] += src[s:s+n]."""
    for i in range(n):
        dst[U(d + i * step)] += src[U(s + i)]


@numba.njit(inline="always")
def add_edges(dst, drow, src, s, wrow, q_from, q_to):
    """dst[drow + wrow[q]] += src[s+q] where wrow[q] >= 0."""
    for q in range(q_from, q_to):
        w = wrow[q]
        if w >= 0:
            dst[U(drow + w)] += src[U(s + q)]
