"""indirect_gemm: convolution with no column matrix, both layouts.

The micro-kernel reads the (padded) input in place through two offset
tables, one per output pixel and one per tap (``microkernel_indirect``);
the weight comes as panels of NR output channels (``packing.pack_panels``).
"""

import numpy as np
from numba import prange

from ._copy import U
from ._registry import kernel
from .epilogue import activate
from .packing import panel
from .registers import copy_line, microkernel_indirect, transpose_block


@kernel("indirect_gemm", "ANY", "tile", "c1_in", "c1_in", "c1_in", "c1_in", "i", "c1_out", "t1",
        "t1", "i", "i", "i", "i")  # the layout is data: see ``dims``
def conv_indirect(tile, xf, wf, wpk, bias, has_bias, of, koff, dims, kc_blk, mt_blk, ob_blk,
                  act):
    """out = act(conv(x, w) (+ bias)) from the padded input, with no column matrix.

    GEMM view: out[m, o] = sum_k A[m, k] * W[k, o] over output pixels
    m = (n, p, q) and taps k.  A is never built: pixel m's receptive field
    starts at ``xf`` offset ``rows[m]`` and tap k lies ``koff[k]`` past it, so
    the micro-kernel reads A in place through those two tables
    (``microkernel_indirect``), with MR output pixels as the tile's rows and
    NR output channels (one weight panel) as its columns.

    The layout is data, in ``dims`` (``algorithms.indirect_gemm.indirect_dims``): n, P*Q, Q,
    groups, og, K; then the padded input's strides per image, per group,
    per output row (times the stride) and per output column (likewise);
    W[k, o] = ``wf[k*w_k + o*w_o]``; and out[n, o, pixel] is at
    ``n*o_n + o*o_o + pixel*o_m``; last, 1 for NHWC (0 for NCHW), whose
    output rows are the tiles' rows.  NHWC has taps (kh, kw, c), NCHW
    (c, kh, kw): ``koff`` and the weight strides say which.

    Tasks: (group, block of ``mt_blk`` tiles of MR pixels, block of
    ``ob_blk`` weight panels); each writes only its own block of ``out``.
    Each task sums into a scratch block of whole tiles, then writes its
    real pixels and channels out: NHWC as runs of a pixel's channels, NCHW
    (a tile's channels are a plane apart) as register transposes along
    the output's pixels.  The weight is read from
    ``wpk`` when the runner packed it once (many tasks share each panel),
    else packed per task: then each panel is read once from the caller's
    weight, which halves the memory traffic of a deep layer at batch 1.
    The activation ``act`` (``epilogue``) runs on the task's sums before
    the write-out, while they are in cache.
    """
    n_n, pq, q_n, groups, og, k_n = dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]
    xs_n, xs_g, xs_p, xs_q = dims[6], dims[7], dims[8], dims[9]
    w_k, w_o, o_n, o_o, o_m = dims[10], dims[11], dims[12], dims[13], dims[14]
    lg = tile.lg
    nr = tile.nr
    mr = tile.mr
    nob = (og + nr - 1) // nr
    npix = n_n * pq
    ntile = (npix + mr - 1) // mr
    nblk = (ntile + mt_blk - 1) // mt_blk
    nobc = (nob + ob_blk - 1) // ob_blk
    prepacked = wpk.size > 0
    direct = dims[15] == 1  # NHWC: pixel m's channels are out[m*o_m:]
    for task in prange(groups * nblk * nobc):
        obc = task % nobc
        rest = task // nobc
        blk = rest % nblk
        g = rest // nblk
        t0 = blk * mt_blk
        nt = min(ntile, t0 + mt_blk) - t0
        ob0 = obc * ob_blk
        nb = min(nob, ob0 + ob_blk) - ob0
        j0 = g * og + ob0 * nr  # this task's first output channel
        jn = min(nb * nr, og - ob0 * nr)
        mn = min(nt * mr, npix - t0 * mr)  # its real pixels
        rows = np.empty(nt * mr, np.int64)
        # The task's sums, panel by panel, each a block of whole tiles, so
        # that a register tile's rows are contiguous (NR apart).  Rows as long
        # as the task's channels (NCHW; 256-512 bytes apart) took 1.05-1.10x
        # as long, and tiles straight into an NHWC output (rows O apart)
        # 1.01-1.07x, on ResNet-50's 3x3 layers at batch 1 and 8.
        pst = nt * mr * nr  # one panel's block of acc
        acc = np.empty(nb * pst, of.dtype)
        own = np.empty(0 if prepacked else kc_blk * nr, of.dtype)  # this task's panel
        bp = wpk if prepacked else own  # read-only either way (wpk may be a PackedWeight's)
        for e in range(nt * mr):
            m = min(t0 * mr + e, npix - 1)  # a last, partial tile repeats its last pixel
            n = m // pq
            r = m - n * pq
            p = r // q_n
            rows[e] = n * xs_n + g * xs_g + p * xs_p + (r - p * q_n) * xs_q
        # Start from the bias (or zero), so that the write-out is a copy.
        if has_bias:  # (two plain loops: a test per element kept them scalar)
            for p in range(nb):
                cols = min(nr, jn - p * nr)
                for e in range(nt * mr):
                    d = p * pst + e * nr
                    for j in range(cols):
                        acc[U(d + j)] = bias[U(j0 + p * nr + j)]
                    for j in range(cols, nr):
                        acc[U(d + j)] = 0
        else:
            for e in range(acc.size):
                acc[U(e)] = 0
        # K blocks outermost: the tiles' part of the input stays in L2 while
        # every weight panel of the task passes over it.
        for pc in range(0, k_n, kc_blk):
            kc = min(kc_blk, k_n - pc)
            for ob in range(ob0, ob0 + nb):
                cols = min(nr, og - ob * nr)
                b0 = ((g * nob + ob) * k_n + pc) * nr
                if not prepacked:
                    panel(tile, wf, w_k, w_o, pc, kc, g * og + ob * nr, cols, own, 0)
                    b0 = 0
                for t in range(nt):
                    microkernel_indirect(tile, kc, xf, rows, t * mr, koff, pc, bp, b0, acc,
                                         (ob - ob0) * pst + t * mr * nr, nr)
        activate(acc, 0, acc.size, act)
        if direct:  # NHWC: each pixel's channels are a run of the output row
            for p in range(nb):
                cols = min(nr, jn - p * nr)
                for e in range(mn):
                    d = (t0 * mr + e) * o_m + j0 + p * nr
                    if cols == nr:
                        copy_line(tile, acc, p * pst + e * nr, of, d)
                    else:
                        for j in range(cols):
                            of[U(d + j)] = acc[U(p * pst + e * nr + j)]
            continue
        # NCHW: into place, a run of pixels of one image at a time, in
        # blocks of VW pixels x VW channels transposed in registers
        # (``transpose_block``); the block's rows of ``acc`` stay in L1 while
        # it is read.  Channel by channel over the whole run took 3x longer
        # (192 pixels x 64 channels: rows 256 bytes apart evict each other),
        # a fifth of the stem layer's time; blocks of 8 pixels with scalar
        # moves still took 15-19% of it.
        vw = tile.vw
        e = 0
        while e < mn:
            n = (t0 * mr + e) // pq
            pix0 = t0 * mr + e - n * pq
            run = min(mn - e, pq - pix0)
            d = n * o_n + j0 * o_o + pix0 * o_m
            for i0 in range(0, run, vw):
                ni = min(vw, run - i0)
                a0 = (e + i0) * nr
                dj = d + i0 * o_m
                j = 0
                if ni == vw and o_m == 1:
                    while j + vw <= jn:
                        transpose_block(tile, acc, a0 + (j >> lg) * pst + (j & (nr - 1)), nr, of,
                                        dj + j * o_o, o_o)
                        j += vw
                for jj in range(j, jn):  # the channels left over, or a short run
                    for i in range(ni):
                        of[U(dj + jj * o_o + i * o_m)] = acc[U(a0 + (jj >> lg) * pst + i * nr
                                                               + (jj & (nr - 1)))]
            e += run
