"""packed_gemm: NCHW convolution by column tiles packed per task into cache.

An NCHW convolution's GEMM is thin (M = output channels, often 64-256):
BLAS runs it slowly after an im2col that writes the whole column matrix to
memory and reads it back.  ONNX Runtime (MLAS) instead packs a small tile
of the column matrix per thread, into cache, and multiplies it there; that
is what ``conv_nchw`` does.  One Numba parallel loop runs both the packing
and the multiply: one thread pool, no hand-off.
"""

import numpy as np
from numba import prange

from ._copy import U
from ._registry import kernel
from .epilogue import activate
from .packing import _pixel, pack_nchw
from .registers import microkernel


@kernel("packed_gemm", "NCHW", "tile", "x_in", "c2_in", "c1_in", "i", "x_out", "t2", "t2", "t2",
        "t2", "i", "i", "i", "i", "i", "i", "i")
def conv_nchw(tile, x, w, bias, has_bias, out, htab, wtab, hint, wint, sh, sw, groups, kc_blk,
              nc_blk, mc_blk, act):
    """out = act(conv(x, w) (+ bias)), NCHW/OIHW, by packed column tiles and the micro-kernel.

    ``w`` is the OIHW weight as (O, Cg*KH*KW).  The GEMM's N dimension runs
    over the pixels of all the images, J = n*P*Q + pixel, so that small
    images (7x7 = 49 pixels) still fill whole register tiles.  Tasks are
    (group, block of ``nc_blk`` columns J, block of ``mc_blk`` output
    channels), and each task writes only its own block of ``out``, so the
    parallel loop is race-free.  Per task, a tile of ``kc_blk`` column-matrix
    rows by ``nc_blk`` columns is packed into a buffer that stays in L2, then
    every row panel of the weight is multiplied against it, straight into
    ``out`` where a register tile lies in one image, else through a scratch
    tile.  Needs og >= MR.
    """
    n_n, c_n, h_n, w_n = x.shape
    o_n, p_n, q_n = out.shape[1], out.shape[2], out.shape[3]
    kh_n, kw_n = htab.shape[0], wtab.shape[0]
    cg = c_n // groups
    og = o_n // groups
    khw = kh_n * kw_n
    k_n = cg * khw
    pix = p_n * q_n
    hw = h_n * w_n
    lg = tile.lg
    nr = tile.nr
    mr = tile.mr
    band_ok = sh == 1 and sw == 1 and q_n == w_n
    total = n_n * pix
    nj = (total + nc_blk - 1) // nc_blk
    ni = (og + mc_blk - 1) // mc_blk
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    for task in prange(groups * nj * ni):
        ic = task % ni
        rest = task // ni
        jc = rest % nj
        g = rest // nj
        c0 = jc * nc_blk  # first column J of the tile
        cn = min(nc_blk, total - c0)
        npan = (cn + nr - 1) // nr
        i0 = ic * mc_blk
        i1 = min(og, i0 + mc_blk)
        bp = np.empty(kc_blk * npan * nr, x.dtype)
        scratch = np.empty(mr * nr, x.dtype)
        # out[n, g*og + i, j] for column J = n*pix + j is of[obase(n) + i*pix + j]
        for t in range(cn):  # start from the bias (or zero)
            n = (c0 + t) // pix
            j = c0 + t - n * pix
            obase = (n * o_n + g * og) * pix + j
            for i in range(i0, i1):
                of[U(obase + i * pix)] = bias[g * og + i] if has_bias else 0
        abase = g * og * k_n
        for pc in range(0, k_n, kc_blk):
            kc = min(kc_blk, k_n - pc)
            t = 0
            while t < cn:  # one image's pixels at a time
                n = (c0 + t) // pix
                j = c0 + t - n * pix
                run = min(pix - j, cn - t)
                pack_nchw(tile, xf, (n * c_n + g * cg) * hw, hw, w_n, q_n, pc, kc, j, run, t, bp,
                          htab, wtab, hint, wint, sw, band_ok, kw_n, khw)
                t += run
            for k in range(kc):  # the last panel's missing columns
                for t in range(cn, npan * nr):
                    bp[U(_pixel(t, lg, kc * nr, k))] = 0
            for r0 in range(i0, i1, mr):
                full_m = r0 + mr <= i1
                ar = r0 if full_m else i1 - mr  # overlapping rows: read-only on A
                a0 = abase + ar * k_n + pc
                for p in range(npan):
                    cp = c0 + p * nr  # column J of the panel's first column
                    n = cp // pix
                    j = cp - n * pix
                    cols = min(nr, cn - p * nr)
                    b0 = p * kc * nr
                    if full_m and cols == nr and j + nr <= pix:
                        microkernel(tile, kc, wf, a0, k_n, bp, b0, nr, of,
                                    (n * o_n + g * og + r0) * pix + j, pix)
                    else:  # an edge tile: through a scratch tile, keep our rows/columns
                        for e in range(mr * nr):
                            scratch[e] = 0
                        microkernel(tile, kc, wf, a0, k_n, bp, b0, nr, scratch, 0, nr)
                        for jj in range(cols):
                            n = (cp + jj) // pix
                            obase = (n * o_n + g * og) * pix + cp + jj - n * pix
                            for i in range(r0, min(r0 + mr, i1)):
                                of[U(obase + i * pix)] += scratch[(i - ar) * nr + jj]
        if act != 0:  # the task's block, a run of one image's pixels at a time
            t = 0
            while t < cn:
                n = (c0 + t) // pix
                j = c0 + t - n * pix
                run = min(pix - j, cn - t)
                for i in range(i0, i1):
                    activate(of, (n * o_n + g * og + i) * pix + j, run, act)
                t += run
