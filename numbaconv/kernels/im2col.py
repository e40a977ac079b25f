"""im2col gathers: copy every receptive field of x into a column matrix.

Both kernels read the input through index tables built by the planner
(``numbaconv._tables.IndexTables``):

* ``htab[kh, p]`` is the input row read by kernel row ``kh`` for output row
  ``p``, or -1 where that position is zero padding; ``wtab[kw, q]`` is the
  same for columns.  Stride, dilation, padding and padding_mode (reflect,
  replicate, circular) all live in these tables, so there is one kernel per
  layout rather than one per padding mode, and no div/mod per element.
* ``hint[kh] = (lo, hi, off)``: output rows lo <= p < hi are *interior* for
  kernel row kh (no padding: the input row is p*sh + off); ``wint[kw]`` is
  the same for columns.  The interior is copied without looking at the
  tables, as straight runs that LLVM vectorises; only the padded edges go
  through the tables.

``x`` is read-only and may alias the caller's array.
"""

from numba import prange

from ._copy import copy_edges, copy_run, copy_strided, fill_zero, whole_kernel_rows
from ._registry import kernel


@kernel("im2col", "NCHW", "x_in", "i", "i", "i", "i", "c1_out", "i", "i", "t2", "t2", "t2", "t2",
        "i", "i")
def im2col_nchw(x, n0, p0, nb, pb, cols, bstride, rstride, htab, wtab, hint, wint, sh, sw):
    """cols[b*bstride + r*rstride + pp*Q + q] = x[n0 + b, c, h, w] for r = (c, kh, kw).

    ``cols`` is a flat buffer so that one kernel serves two column layouts:
    image-major (nb, C*KH*KW, pb*Q) for one GEMM per image, and row-major
    (C*KH*KW, nb, pb*Q) for one GEMM over the whole chunk.  Rows are in
    ``torch.nn.functional.unfold`` order.  Output rows p0 .. p0+pb-1.

    With unit strides and Q == W (a 'same'-padded stride-1 convolution), the
    interior of consecutive output rows is consecutive in the input plane
    too, so a whole band of rows is one run; the positions that run wrapped
    over a row edge are then rewritten from the tables.
    """
    c_n, h_n, w_n = x.shape[1], x.shape[2], x.shape[3]
    kh_n = htab.shape[0]
    kw_n, q_n = wtab.shape
    band_ok = sh == 1 and sw == 1 and q_n == w_n
    xf = x.reshape(x.size)
    # One task per (channel, kernel row): every task writes its own rows of
    # cols, and the kw/image loops inside need no division (a 64-bit divide
    # costs ~40 cycles, as much as copying a whole 7-wide row).
    for task in prange(c_n * kh_n):
        c = task // kh_n
        kh = task - c * kh_n
        pa = max(hint[kh, 0], p0)
        pz = min(hint[kh, 1], p0 + pb)
        for kw in range(kw_n):
            r = task * kw_n + kw  # (c, kh, kw) in unfold order
            a, z, off = wint[kw, 0], wint[kw, 1], wint[kw, 2]
            wrow = wtab[kw]
            band = band_ok and pz - pa >= 2 and z > a
            for b in range(nb):
                d0 = b * bstride + r * rstride
                plane = ((n0 + b) * c_n + c) * h_n * w_n
                if band:
                    copy_run(cols, d0 + (pa - p0) * q_n + a, xf,
                             plane + (pa + hint[kh, 2]) * w_n + a + off,
                             (pz - pa - 1) * q_n + z - a)
                for pp in range(p0, p0 + pb):
                    d = d0 + (pp - p0) * q_n
                    h = htab[kh, pp]
                    if h < 0:
                        fill_zero(cols, d, q_n)
                        continue
                    srow = plane + h * w_n
                    copy_edges(cols, d, xf, srow, wrow, 0, a)
                    if not (band and pa <= pp < pz):
                        if sw == 1:
                            copy_run(cols, d + a, xf, srow + a + off, z - a)
                        else:
                            copy_strided(cols, d + a, xf, srow + a * sw + off, z - a, sw)
                    copy_edges(cols, d, xf, srow, wrow, z, q_n)


# Kept out of Numba's disk cache: loaded from it, this gather ran 5-8x
# slower than the same kernel compiled in the process (3x3 at 56x56: 5 vs
# 40 GB/s, single-threaded too, so it is the cached machine code; Numba issue
# #8085, "cache=True slow for parallel target").  Every other kernel loads at
# full speed.  Compiling it costs ~2 s on the first NHWC call of a process.
@kernel("im2col", "NHWC", "x_in", "i", "i", "i", "i", "c2_out", "t2", "t2", "t2",
        disk_cache=False)
def im2col_nhwc(x, n0, p0, nb, groups, cols, htab, wtab, wint):
    """cols[(b, p, q), (g, kh, kw, cg)] = x[n0 + b, h, w, g*Cg + cg].

    ``cols`` is (nb*PB*Q, KH*KW*C).  With groups == 1 the columns are in
    (kh, kw, c) order, matching an HWIO weight reshaped to (KH*KW*C, O); with
    groups > 1 each group's columns are contiguous so one GEMM per group can
    take its slice.  The copies run over channels, contiguous in both x and
    cols; without groups or dilation, the KW taps of one kernel row are one
    contiguous run of KW*C values in the interior, copied at once (that
    matters when C is small, as in an RGB stem).
    """
    rows, width = cols.shape
    h_n, w_n, c_in = x.shape[1], x.shape[2], x.shape[3]
    cg = c_in // groups
    kh_n = htab.shape[0]
    kw_n, q_n = wtab.shape
    pb = rows // (nb * q_n)
    run = kw_n * c_in
    q_lo, q_hi = whole_kernel_rows(wint, q_n)
    xf = x.reshape(x.size)
    cf = cols.reshape(cols.size)
    # One task per (image, output row): every task writes its own Q rows.
    for task in prange(nb * pb):
        b = task // pb
        pp = task - b * pb
        n = n0 + b
        for q in range(q_n):
            d = (task * q_n + q) * width
            for kh in range(kh_n):
                h = htab[kh, p0 + pp]
                if groups == 1 and h >= 0 and q_lo <= q < q_hi:
                    copy_run(cf, d + kh * run, xf, ((n * h_n + h) * w_n + wtab[0, q]) * c_in,
                             run)
                    continue
                for kw in range(kw_n):
                    w = wtab[kw, q]
                    for g in range(groups):
                        col = d + ((g * kh_n + kh) * kw_n + kw) * cg
                        if h < 0 or w < 0:
                            fill_zero(cf, col, cg)
                        else:
                            copy_run(cf, col, xf, ((n * h_n + h) * w_n + w) * c_in + g * cg, cg)
