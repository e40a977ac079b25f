"""1x1 convolutions as plain GEMMs on the micro-kernel (algorithm "pointwise_gemm").

A 1x1, stride-1, unpadded convolution is a matrix product with no gather:
NCHW ``out[n] (O x HW) = W (O x C) @ x[n] (C x HW)``, NHWC
``out (N*HW x O) = x (N*HW x C) @ W (C x O)``.  OpenBLAS runs it alone as
fast (``gemm_1x1``), but its threads are a second pool beside Numba's: in a
network, where 1x1 layers alternate with Numba kernels, each switch stops
OpenBLAS's spinning threads (~0.1 ms) and the next GEMM starts them again
(0.15-0.2 ms), and ResNet-50's 12 layers back to back at batch 1 took
1.2-1.3x as long as on one pool (docs/design/decisions.md, "1x1 layers: pointwise_gemm below
POINTWISE_MAX_FLOPS, else gemm_1x1").  Calling OpenBLAS
single-threaded from each Numba worker instead does not work: NumPy's
OpenBLAS ran two such calls at once no faster than one after the other.

So this is a GEMM on Numba's threads: ``C = A @ B (+ bias)`` per (image,
group), with A read in place (its rows are contiguous along K: the OIHW
weight, or an NHWC image's pixels), B packed per task into panels of NR
columns, NR values per panel row (``registers.microkernel``), and C
written in place, MR rows x NR columns per register tile.
"""

import numba
import numpy as np
from numba import prange

from ._copy import U
from ._registry import kernel
from .epilogue import activate
from .registers import copy_line, dot_rows, microkernel, microkernel_store


@numba.njit(inline="always")
def _bias_block(cf, bias, has_bias, bias_rows, row0, col0, c0, ldc, i0, i1, j0, j1, add):
    """C[i, j] = (or += when ``add``) the bias, or 0, for i0 <= i < i1, j0 <= j < j1.

    C[i, j] is ``cf[c0 + i*ldc + j]``; the bias of row i is ``bias[row0 + i]``
    (``bias_rows``) or of column j ``bias[col0 + j]``.  The tests are outside
    the inner loops, which then vectorise.
    """
    for i in range(i0, i1):
        d = c0 + i * ldc
        if not has_bias:
            if not add:
                for j in range(j0, j1):
                    cf[U(d + j)] = 0
        elif bias_rows:
            v = bias[row0 + i]
            if add:
                for j in range(j0, j1):
                    cf[U(d + j)] += v
            else:
                for j in range(j0, j1):
                    cf[U(d + j)] = v
        elif add:
            for j in range(j0, j1):
                cf[U(d + j)] += bias[U(col0 + j)]
        else:
            for j in range(j0, j1):
                cf[U(d + j)] = bias[U(col0 + j)]


@numba.njit(inline="always")
def _edge_tile(tile, kc, a, a0, lda, bp, bb, bt, cols, scratch):
    """scratch (MR x NR, zeroed) += A's MR rows from ``a0`` times the panel's ``cols`` columns.

    A narrow panel (at most half full) is in ``bt``, column by column: dot
    products; any other in ``bp`` at ``bb``: the register tile.
    """
    nr = tile.nr
    if 2 * cols <= nr:
        for jj in range(cols):
            dot_rows(tile, kc, a, a0, lda, bt, jj * kc, scratch, jj, nr)
    else:
        microkernel(tile, kc, a, a0, lda, bp, bb, nr, scratch, 0, nr)


@kernel("pointwise_gemm", "ANY", "tile", "c1_in", "c1_in", "c1_in", "i", "c1_out", "t1", "i", "i",
        "i", "i")  # the layout is data: see ``dims``
def gemm_pointwise(tile, af, bf, bias, has_bias, cf, dims, kc_blk, pan_blk, rb_blk, act):
    """C = act(A @ B (+ bias)) for every (image, group) of a 1x1 convolution.

    The layout is data, in ``dims`` (``algorithms.pointwise_gemm.pointwise_dims``): images,
    groups, M, N, K; then A[i, k] = ``af[n*a_n + g*a_g + i*lda + k]``,
    B[k, j] = ``bf[n*b_n + g*b_g + k*ldb + j]``, C[i, j] = ``cf[n*c_n + g*c_g
    + i*ldc + j]``; last, 1 if the bias runs along C's rows (NCHW: rows are
    output channels) or 0 along its columns (NHWC).

    Tasks: (image and group, block of ``pan_blk`` panels of NR columns,
    block of ``rb_blk`` register-tile rows of MR); each writes only its own
    block of C.  Per K block of ``kc_blk``, a task packs its columns of B
    row by row (each a run of B's row, read in order), then passes every
    row tile over each panel while that panel (kc lines) stays in L1.

    A last panel at most half full (a 7x7 image has 49 pixels: 3 panels and
    one column) is packed column by column instead and run as dot products
    (``dot_rows``), not as a register tile of mostly padding: on ResNet-50's
    512 -> 2048 layer at batch 1, 0.79-0.80x of the time (1 and 2 threads).

    A whole register tile's first K block overwrites C (``microkernel_store``)
    and the bias is added after the last, so that C is written once, not
    zeroed first and then read back by every tile.  On ResNet-50's 1x1
    layers at batch 1 (old and new kernel taking turns, 1 and 2 threads):
    0.81-0.90x of the time where K = 64, 0.95x at K = 256, level (0.99-1.03x)
    at K >= 512; with a bias, 0.91-0.95x where K = 64.  The activation
    ``act`` (``epilogue``) runs on the task's block after the bias.
    """
    n_n, groups, m_n, n_cols, k_n = dims[0], dims[1], dims[2], dims[3], dims[4]
    a_n, a_g, lda = dims[5], dims[6], dims[7]
    b_n, b_g, ldb = dims[8], dims[9], dims[10]
    c_n, c_g, ldc = dims[11], dims[12], dims[13]
    bias_rows = dims[14] == 1
    lg = tile.lg
    nr = tile.nr
    mr = tile.mr
    npan = (n_cols + nr - 1) >> lg
    nrb = (m_n + mr - 1) // mr
    npb = (npan + pan_blk - 1) // pan_blk
    nrg = (nrb + rb_blk - 1) // rb_blk
    for task in prange(n_n * groups * npb * nrg):
        rg = task % nrg
        rest = task // nrg
        pb = rest % npb
        rest = rest // npb
        g = rest % groups
        n = rest // groups
        p0 = pb * pan_blk
        p1 = min(npan, p0 + pan_blk)
        i0 = rg * rb_blk * mr
        i1 = min(m_n, i0 + rb_blk * mr)
        j0 = p0 * nr
        j1 = min(n_cols, p1 * nr)
        a0 = n * a_n + g * a_g
        b0 = n * b_n + g * b_g
        c0 = n * c_n + g * c_g
        bp = np.empty(pan_blk * kc_blk * nr, cf.dtype)
        scratch = np.empty(mr * nr, cf.dtype)
        bt = np.empty((nr >> 1) * kc_blk, cf.dtype)  # a narrow last panel, by columns
        # A's rows when M < MR, zero-padded: the micro-kernel always reads MR.
        few = np.zeros(mr * kc_blk if m_n < mr else 0, cf.dtype)
        # Whole register tiles (rows i0 .. fr-1, columns j0 .. fj-1) are
        # stored by their first K block and get the bias at the end; the
        # edges start from the bias (or zero), and their tiles add.
        fr = i0 + (i1 - i0) // mr * mr
        fj = j0 + (j1 - j0) // nr * nr
        _bias_block(cf, bias, has_bias, bias_rows, g * m_n, g * n_cols, c0, ldc, i0, fr, fj, j1,
                    False)
        _bias_block(cf, bias, has_bias, bias_rows, g * m_n, g * n_cols, c0, ldc, fr, i1, j0, j1,
                    False)
        for pc in range(0, k_n, kc_blk):
            kc = min(kc_blk, k_n - pc)
            pst = kc * nr  # one packed panel
            for k in range(kc):
                s = b0 + (pc + k) * ldb
                for p in range(p0, p1):
                    j = p * nr
                    cols = min(nr, n_cols - j)
                    d = (p - p0) * pst + k * nr
                    if cols == nr:
                        copy_line(tile, bf, s + j, bp, d)
                    elif 2 * cols <= nr:  # a narrow last panel: column by column
                        for jj in range(cols):
                            bt[jj * kc + k] = bf[U(s + j + jj)]
                    else:  # the last panel's missing columns are zeros
                        for jj in range(cols):
                            bp[U(d + jj)] = bf[U(s + j + jj)]
                        for jj in range(cols, nr):
                            bp[U(d + jj)] = 0
            if m_n < mr:
                for r in range(m_n):
                    for k in range(kc):
                        few[r * kc + k] = af[U(a0 + r * lda + pc + k)]
            for p in range(p0, p1):
                j = p * nr
                cols = min(nr, n_cols - j)
                bb = (p - p0) * pst
                for i in range(i0, i1, mr):
                    if i + mr <= i1 and cols == nr:
                        if pc == 0:
                            microkernel_store(tile, kc, af, a0 + i * lda + pc, lda, bp, bb, nr, cf,
                                              c0 + i * ldc + j, ldc)
                        else:
                            microkernel(tile, kc, af, a0 + i * lda + pc, lda, bp, bb, nr, cf,
                                        c0 + i * ldc + j, ldc)
                        continue
                    if i + mr <= i1 and 2 * cols <= nr:  # straight into C, column by column
                        for jj in range(cols):
                            dot_rows(tile, kc, af, a0 + i * lda + pc, lda, bt, jj * kc, cf,
                                     c0 + i * ldc + j + jj, ldc)
                        continue
                    # An edge tile: into a scratch tile, then only our rows and
                    # columns are added.  Its rows overlap the tile before
                    # (read-only on A), or come from ``few``.
                    for e in range(mr * nr):
                        scratch[e] = 0
                    ar = min(i, m_n - mr)
                    if m_n < mr:
                        ar = 0
                        _edge_tile(tile, kc, few, 0, kc, bp, bb, bt, cols, scratch)
                    else:
                        _edge_tile(tile, kc, af, a0 + ar * lda + pc, lda, bp, bb, bt, cols,
                                   scratch)
                    for r in range(i, min(i + mr, i1)):
                        d = c0 + r * ldc + j
                        for jj in range(cols):
                            cf[U(d + jj)] += scratch[(r - ar) * nr + jj]
        _bias_block(cf, bias, has_bias, bias_rows, g * m_n, g * n_cols, c0, ldc, i0, fr, j0, fj,
                    True)  # (nothing to add without a bias)
        if act != 0:
            for i in range(i0, i1):
                activate(cf, c0 + i * ldc + j0, j1 - j0, act)
