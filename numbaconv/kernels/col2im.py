"""col2im scatters: the adjoint of im2col, summing overlapping entries.

Race-free by construction: the parallel loop is over disjoint parts of the
destination, never over the columns.  Each task owns

* NCHW: one (image, channel) plane of x;
* NHWC: one (image, block of channels) slab of x;

and walks every column entry that lands there.  Padding modes are handled by
the same index tables as im2col, so a reflected, replicated or wrapped
position adds back into the input element it was copied from; that element is
in the task's own plane/slab, so it stays race-free.

The destination must be zeroed (or hold the values to add to) on entry.
"""

from numba import prange


def col2im_nchw(cols, n0, p0, x, htab, wtab, lo, hi, woff, sw):
    """x[n0 + b, c, h, w] += cols[b, (c, kh, kw), (p, q)] for output rows p0.."""
    nb, _, length = cols.shape
    c_in = x.shape[1]
    kh_n = htab.shape[0]
    kw_n, q_n = wtab.shape
    pb = length // q_n
    for task in prange(nb * c_in):
        b = task // c_in
        c = task - b * c_in
        for kh in range(kh_n):
            for kw in range(kw_n):
                src = cols[b, (c * kh_n + kh) * kw_n + kw]
                a, z, off = lo[kw], hi[kw], woff[kw]
                for pp in range(pb):
                    h = htab[kh, p0 + pp]
                    if h < 0:
                        continue
                    dst = x[n0 + b, c, h]
                    base = pp * q_n
                    for q in range(a):
                        w = wtab[kw, q]
                        if w >= 0:
                            dst[w] += src[base + q]
                    if sw == 1:
                        dst[a + off : z + off] += src[base + a : base + z]
                    else:
                        for q in range(a, z):
                            dst[q * sw + off] += src[base + q]
                    for q in range(z, q_n):
                        w = wtab[kw, q]
                        if w >= 0:
                            dst[w] += src[base + q]


def col2im_nhwc(cols, n0, p0, nb, groups, cblock, x, htab, wtab):
    """x[n0 + b, h, w, c] += cols[(b, p, q), (g, kh, kw, cg)] for output rows p0..

    Tasks are (image, block of ``cblock`` channels), so even a single image
    spreads over all threads.
    """
    rows = cols.shape[0]
    c_in = x.shape[3]
    cg = c_in // groups
    kh_n = htab.shape[0]
    kw_n, q_n = wtab.shape
    pb = rows // (nb * q_n)
    nblocks = (c_in + cblock - 1) // cblock
    for task in prange(nb * nblocks):
        b = task // nblocks
        c0 = (task - b * nblocks) * cblock
        c1 = min(c0 + cblock, c_in)
        g0 = c0 // cg
        g1 = (c1 - 1) // cg + 1
        for pp in range(pb):
            for q in range(q_n):
                src = cols[(b * pb + pp) * q_n + q]
                for kh in range(kh_n):
                    h = htab[kh, p0 + pp]
                    if h < 0:
                        continue
                    for kw in range(kw_n):
                        w = wtab[kw, q]
                        if w < 0:
                            continue
                        dst = x[n0 + b, h, w]
                        for g in range(g0, g1):
                            # column of channel c is base + c within group g
                            base = ((g * kh_n + kh) * kw_n + kw) * cg - g * cg
                            for c in range(max(c0, g * cg), min(c1, (g + 1) * cg)):
                                dst[c] += src[base + c]
