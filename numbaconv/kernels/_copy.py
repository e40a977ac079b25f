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


# --------------------------------------------------------------------------
# Whole rows through an index table: the skeleton of a table-driven row.
#
# A row of Q positions reads (or writes) an image row through a table,
# ``table[t, q]`` its column or -1 for padding (``IndexTables.wtab``, t = kw;
# a row index, not a slice: a slice per row costs an array struct), and
# positions a <= q < z are interior: column ``off + q*step`` with no padding
# (``IndexTables.wint[kw]``).  The interior runs without the table, a loop
# LLVM vectorises; only the edges q < a and q >= z look it up.  One skeleton,
# three operations on the pair (row r[s+q], image x[base + column]):
# gather, scatter-add and dot.  The gathers and scatters of im2col/col2im keep the
# pieces above (copy_edges, copy_strided, add_edges, add_run): they take
# their table row once per tap, outside the pixel loop, and were timed so.
# --------------------------------------------------------------------------
def _row_loop(op):
    """The skeleton with ``carry = op(carry, r, s+q, x, i, inside, alpha)`` at every q.

    ``i`` is the image index of q, valid only where ``inside``; ``carry`` is
    threaded through the row (the dot's sum).  ``op`` is a compile-time
    constant of the returned function, so Numba inlines it.
    """

    @numba.njit(inline="always")
    def row(carry, r, s, x, base, table, t, a, z, off, step, n, alpha):
        for q in range(a):
            w = table[t, q]
            carry = op(carry, r, s + q, x, base + w, w >= 0, alpha)
        for q in range(a, z):
            carry = op(carry, r, s + q, x, base + off + q * step, True, alpha)
        for q in range(z, n):
            w = table[t, q]
            carry = op(carry, r, s + q, x, base + w, w >= 0, alpha)
        return carry

    return row


@numba.njit(inline="always")
def _gather(carry, r, k, x, i, inside, alpha):
    r[U(k)] = x[U(i)] if inside else 0
    return carry


@numba.njit(inline="always")
def _scatter(carry, r, k, x, i, inside, alpha):
    if inside:
        x[U(i)] += alpha * r[U(k)]
    return carry


@numba.njit(inline="always")
def _dot(acc, r, k, x, i, inside, alpha):
    # float64 products: float32 * float32 is exact in float64, so the sum is
    # the only rounding (and padding still multiplies, as w * 0 does)
    return acc + float(r[U(k)]) * (float(x[U(i)]) if inside else 0.0)


_gather_row = _row_loop(_gather)
_scatter_row = _row_loop(_scatter)
_dot_row = _row_loop(_dot)


@numba.njit(inline="always")
def gather_row(dst, d, src, srow, table, t, a, z, off, step, n):
    """dst[d+q] = src[srow + table[t, q]] for q < n, or 0 where table[t, q] < 0.

    The interior a <= q < z reads src[srow + off + q*step].
    """
    _gather_row(0, dst, d, src, srow, table, t, a, z, off, step, n, 0)


@numba.njit(inline="always")
def scatter_row(dst, drow, src, s, table, t, a, z, off, step, n, alpha):
    """dst[drow + table[t, q]] += alpha * src[s+q] for q < n where table[t, q] >= 0.

    The interior a <= q < z adds into dst[drow + off + q*step].
    """
    _scatter_row(0, src, s, dst, drow, table, t, a, z, off, step, n, alpha)


@numba.njit(inline="always")
def dot_row(acc, src, s, x, xrow, table, t, a, z, off, step, n):
    """acc + sum over q < n of src[s+q] * x[xrow + table[t, q]] (0 where it is < 0), in float64.

    The interior a <= q < z reads x[xrow + off + q*step].
    """
    return _dot_row(acc, src, s, x, xrow, table, t, a, z, off, step, n, 0)


# --------------------------------------------------------------------------
# Channel runs: the NHWC kernels' inner loops.
# --------------------------------------------------------------------------
@numba.njit(inline="always")
def mul_add_run(dst, d, a, sa, b, sb, n):
    """dst[d:d+n] += a[sa:sa+n] * b[sb:sb+n]."""
    for i in range(n):
        dst[U(d + i)] += a[U(sa + i)] * b[U(sb + i)]


@numba.njit(inline="always")
def mul_add_zero(dst, d, a, sa, n):
    """dst[d:d+n] += a[sa:sa+n] * 0: padding, so that an inf or NaN in ``a`` propagates."""
    for i in range(n):
        dst[U(d + i)] += a[U(sa + i)] * 0.0


@numba.njit(inline="always")
def whole_kernel_rows(wint, q_n):
    """(q_lo, q_hi): the output columns q_lo <= q < q_hi whose KW taps all read the input
    in place at consecutive columns (dilation 1), so that in NHWC a kernel row's taps are
    one run of KW*C values; an empty range when there are none.  ``wint`` as in
    ``_tables.interior``.
    """
    kw_n = wint.shape[0]
    if kw_n > 1 and wint[1, 2] - wint[0, 2] != 1:
        return 0, 0
    q_lo, q_hi = 0, q_n
    for kw in range(kw_n):
        q_lo, q_hi = max(q_lo, wint[kw, 0]), min(q_hi, wint[kw, 1])
    return q_lo, q_hi
