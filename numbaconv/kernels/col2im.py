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

from ._copy import add_edges, add_run


def col2im_nchw(cols, n0, p0, nb, pb, bstride, rstride, x, htab, wtab, wint, sw):
    """x[n0 + b, c, h, w] += cols[b*bstride + r*rstride + pp*Q + q], r = (c, kh, kw).

    The column layout (flat, with strides) is the one ``im2col_nchw`` writes.
    """
    c_in, h_n, w_n = x.shape[1], x.shape[2], x.shape[3]
    kh_n = htab.shape[0]
    kw_n, q_n = wtab.shape
    xf = x.reshape(x.size)
    for task in prange(nb * c_in):
        b = task // c_in
        c = task - b * c_in
        plane = ((n0 + b) * c_in + c) * h_n * w_n
        for kh in range(kh_n):
            for kw in range(kw_n):
                d0 = b * bstride + ((c * kh_n + kh) * kw_n + kw) * rstride
                a, z, off = wint[kw, 0], wint[kw, 1], wint[kw, 2]
                wrow = wtab[kw]
                for pp in range(pb):
                    h = htab[kh, p0 + pp]
                    if h < 0:
                        continue
                    drow = plane + h * w_n
                    s = d0 + pp * q_n
                    add_edges(xf, drow, cols, s, wrow, 0, a)
                    add_run(xf, drow + a * sw + off, cols, s + a, z - a, sw)
                    add_edges(xf, drow, cols, s, wrow, z, q_n)


def col2im_nhwc(cols, n0, p0, nb, groups, cblock, x, htab, wtab):
    """x[n0 + b, h, w, c] += cols[(b, p, q), (g, kh, kw, cg)] for output rows p0..

    Tasks are (image, block of ``cblock`` channels), so even a single image
    spreads over all threads.
    """
    rows, width = cols.shape
    h_n, w_n, c_in = x.shape[1], x.shape[2], x.shape[3]
    cg = c_in // groups
    kh_n = htab.shape[0]
    kw_n, q_n = wtab.shape
    pb = rows // (nb * q_n)
    nblocks = (c_in + cblock - 1) // cblock
    xf = x.reshape(x.size)
    cf = cols.reshape(cols.size)
    for task in prange(nb * nblocks):
        b = task // nblocks
        c0 = (task - b * nblocks) * cblock
        c1 = min(c0 + cblock, c_in)
        g0 = c0 // cg
        g1 = (c1 - 1) // cg + 1
        for pp in range(pb):
            for q in range(q_n):
                s = ((b * pb + pp) * q_n + q) * width
                for kh in range(kh_n):
                    h = htab[kh, p0 + pp]
                    if h < 0:
                        continue
                    for kw in range(kw_n):
                        w = wtab[kw, q]
                        if w < 0:
                            continue
                        pixel = ((n0 + b) * h_n + h) * w_n + w
                        for g in range(g0, g1):
                            # column of channel c is base + c within group g
                            base = ((g * kh_n + kh) * kw_n + kw) * cg - g * cg
                            lo, hi = max(c0, g * cg), min(c1, (g + 1) * cg)
                            add_run(xf, pixel * c_in + lo, cf, s + base + lo, hi - lo, 1)
