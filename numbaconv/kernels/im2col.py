"""im2col gathers: copy every receptive field of x into a column matrix.

Both kernels read the input through two small index tables built by the
planner (``numbaconv._plan.index_tables``):

* ``htab[kh, p]`` is the input row read by kernel row ``kh`` for output row
  ``p``, or -1 where that position is zero padding;
* ``wtab[kw, q]`` is the same for columns.

Stride, dilation, padding and padding_mode (reflect, replicate, circular)
all live in those tables, so there is one kernel per layout rather than one
per padding mode, and no div/mod per element.

``x`` is read-only and may alias the caller's array.
"""

from numba import prange


def im2col_nchw(x, n0, p0, cols, htab, wtab, lo, hi, woff, sw):
    """cols[b, (c, kh, kw), (p, q)] = x[n0 + b, c, h, w], rows p0.. of the output.

    ``cols`` is (B, C*KH*KW, PB*Q); rows are in ``torch.nn.functional.unfold``
    order.  For kernel column kw, output columns lo[kw] <= q < hi[kw] read the
    affine run w = q*sw + woff[kw] (the interior); only the edges go through
    wtab, so the common case is a strided (for sw == 1, contiguous) copy.
    """
    nb, rows, length = cols.shape
    kh_n = htab.shape[0]
    kw_n, q_n = wtab.shape
    pb = length // q_n
    kk = kh_n * kw_n
    # One task per (image, column-matrix row): every task writes its own row.
    for task in prange(nb * rows):
        b = task // rows
        r = task - b * rows
        c = r // kk
        kh = (r - c * kk) // kw_n
        kw = r - c * kk - kh * kw_n
        dst = cols[b, r]
        a, z, off = lo[kw], hi[kw], woff[kw]
        for pp in range(pb):
            base = pp * q_n
            h = htab[kh, p0 + pp]
            if h < 0:
                for q in range(q_n):
                    dst[base + q] = 0
                continue
            src = x[n0 + b, c, h]
            for q in range(a):
                w = wtab[kw, q]
                dst[base + q] = src[w] if w >= 0 else 0
            if sw == 1:  # a slice copy, which LLVM turns into a vectorised memcpy
                dst[base + a : base + z] = src[a + off : z + off]
            else:
                for q in range(a, z):
                    dst[base + q] = src[q * sw + off]
            for q in range(z, q_n):
                w = wtab[kw, q]
                dst[base + q] = src[w] if w >= 0 else 0


def im2col_nhwc(x, n0, p0, nb, groups, cols, htab, wtab):
    """cols[(b, p, q), (g, kh, kw, cg)] = x[n0 + b, h, w, g*Cg + cg].

    ``cols`` is (nb*PB*Q, KH*KW*C).  With groups == 1 the columns are in
    (kh, kw, c) order, matching an HWIO weight reshaped to (KH*KW*C, O); with
    groups > 1 each group's columns are contiguous so one GEMM per group can
    take its slice.  The innermost loop runs over channels, which are
    contiguous in both x and cols.
    """
    rows = cols.shape[0]
    c_in = x.shape[3]
    cg = c_in // groups
    kh_n = htab.shape[0]
    kw_n, q_n = wtab.shape
    pb = rows // (nb * q_n)
    # One task per (image, output row): every task writes its own Q rows.
    for task in prange(nb * pb):
        b = task // pb
        pp = task - b * pb
        n = n0 + b
        for q in range(q_n):
            dst = cols[task * q_n + q]
            for kh in range(kh_n):
                h = htab[kh, p0 + pp]
                for kw in range(kw_n):
                    w = wtab[kw, q]
                    for g in range(groups):
                        col = ((g * kh_n + kh) * kw_n + kw) * cg
                        if h < 0 or w < 0:
                            for k in range(cg):
                                dst[col + k] = 0
                        else:
                            src = x[n, h, w]
                            for k in range(cg):
                                dst[col + k] = src[g * cg + k]
