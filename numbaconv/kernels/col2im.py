"""col2im scatters: the adjoint of im2col, summing overlapping entries.

Race-free by construction: the parallel loop is over disjoint parts of the
destination, never over the columns.  Each task owns

* NCHW: one (image, channel) plane of x;
* NHWC: one (image, input row) of x;

and walks every column entry that lands there.  Padding modes are handled by
the same index tables as im2col, so a reflected, replicated or wrapped
position adds back into the input element it was copied from; that element is
in the task's own plane/slab, so it stays race-free.

The destination must be zeroed (or hold the values to add to) on entry.
"""

from numba import prange

from ._copy import add_edges, add_run, whole_kernel_rows
from ._registry import kernel


@kernel("col2im", "NCHW", "c1_in", "i", "i", "i", "i", "i", "i", "x_out", "t2", "t2", "t2", "i")
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


@kernel("col2im", "NHWC", "c2_in", "i", "i", "i", "i", "x_out", "t2", "t2", "t2")
def col2im_nhwc(cols, n0, p0, nb, groups, x, htab, wtab, wint):
    """x[n0 + b, h, w, c] += cols[(b, p, q), (g, kh, kw, cg)] for output rows p0..

    Tasks are (image, input row): a task scans the (output row, kernel row)
    pairs whose table entry is its row, and adds whole runs of C channels
    (Cg per group), contiguous in both cols and x.  Without groups, where a
    kernel row's taps land on consecutive pixels (dilation 1, no edge), its
    KW*C entries are one run of x too, added at once: a 3-channel stem's
    runs are then 21 values, not 3.  Every column entry is read once.
    (Tasks over blocks of channels instead read the whole column matrix once
    per block and ran 6x slower than the NCHW scatter.)
    """
    rows, width = cols.shape
    h_n, w_n, c_in = x.shape[1], x.shape[2], x.shape[3]
    cg = c_in // groups
    kh_n = htab.shape[0]
    kw_n, q_n = wtab.shape
    pb = rows // (nb * q_n)
    xf = x.reshape(x.size)
    cf = cols.reshape(cols.size)
    q_lo, q_hi = whole_kernel_rows(wint, q_n)  # as im2col_nhwc's runs
    for task in prange(nb * h_n):
        b = task // h_n
        hrow = task - b * h_n
        for pp in range(pb):
            for kh in range(kh_n):
                if htab[kh, p0 + pp] != hrow:
                    continue
                for q in range(q_n):
                    s = ((b * pb + pp) * q_n + q) * width
                    if groups == 1 and q_lo <= q < q_hi:
                        d = (((n0 + b) * h_n + hrow) * w_n + wtab[0, q]) * c_in
                        add_run(xf, d, cf, s + kh * kw_n * c_in, kw_n * c_in, 1)
                        continue
                    for kw in range(kw_n):
                        w = wtab[kw, q]
                        if w < 0:
                            continue
                        d = (((n0 + b) * h_n + hrow) * w_n + w) * c_in
                        for g in range(groups):
                            col = ((g * kh_n + kh) * kw_n + kw) * cg
                            add_run(xf, d + g * cg, cf, s + col, cg, 1)
