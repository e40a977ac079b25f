"""Packing: the operands of the register-tiled kernels, laid out for the tile.

* ``pack_panels``: a weight cut into panels of NR output channels, each
  panel row one NR-wide stream (what ``microkernel_indirect`` reads as B);
* ``pack_nchw``: a tile of the NCHW column matrix, packed per task into
  panels of NR pixels (``packed_gemm``);
* ``pad_nchw`` / ``pad_nhwc``: the padded input that ``indirect_gemm``
  reads in place;
* ``flip_weight``: each filter turned round and its channels swapped, the
  weight of grad_input as a forward convolution (``algorithms._adjoint``).

NR and the vector width come from the register tile (``tile.nr``,
``tile.vw``), constants at compile time, so the loops over one panel row
compile to straight vector moves for every ISA variant.
"""

import numba
from numba import prange

from ._copy import U
from ._registry import kernel
from .registers import copy_line, transpose_block


@numba.njit(inline="always")
def _pixel(j, lg, pstride, k):
    """Index in the packed panels of tile column j >= 0, tile row k (nr == 1 << lg).

    Shifts, not ``//``: a 64-bit division per element cost more than the copy.
    """
    return (j >> lg) * pstride + (k << lg) + (j & ((1 << lg) - 1))


@numba.njit(inline="always")
def _copy_to_panels(tile, bp, j, n, pstride, k, xf, s, step):
    """Tile columns j .. j+n-1 of row k = xf[s], xf[s + step], ...: straight loops per panel."""
    lg = tile.lg
    nr = tile.nr
    while n > 0:
        jj = j & (nr - 1)
        m = min(n, nr - jj)
        d = (j >> lg) * pstride + (k << lg) + jj
        if step == 1 and m == nr:  # a whole panel row: a loop of constant length, vector moves
            for i in range(nr):
                bp[U(d + i)] = xf[U(s + i)]
        elif step == 1:
            for i in range(m):
                bp[U(d + i)] = xf[U(s + i)]
        else:
            for i in range(m):
                bp[U(d + i)] = xf[U(s + i * step)]
        j += m
        s += m * step
        n -= m


@numba.njit(inline="always")
def pack_nchw(tile, xf, plane0, hw, w_n, q_n, pc, kc, j0, jn, t0, bp, htab, wtab, hint, wint, sw,
              band_ok, kw_n, khw):
    """Pixels j0 .. j0+jn-1 of one image into tile columns t0 .. t0+jn-1 of packed panels.

    Tile column t of row k is ``bp[(t // nr)*kc*nr + k*nr + t % nr]`` and
    holds ``cols[pc + k, j0 + t - t0]``, where row r = (c, kh, kw) of the
    column matrix and column j = (oh, ow) of the image; ``plane0`` is the
    offset of the image's first channel of the group in ``xf``.

    With unit strides and Q == W ('same' padding, stride 1: most 3x3
    layers), the interior of consecutive output rows is consecutive in the
    input too, so one straight copy per panel fills a whole tile row (the
    ``band``); the few positions it wrapped over a row edge are rewritten
    from the tables afterwards.  Otherwise each output row is copied as its
    interior run plus table look-ups at the padded edges.  Divisions are per
    tile row and per panel, not per element.
    """
    lg = tile.lg
    pstride = kc * tile.nr
    oh0 = j0 // q_n
    ow0 = j0 - oh0 * q_n
    c = pc // khw  # (c, kh, kw) of row pc, then stepped without dividing
    kh = (pc - c * khw) // kw_n
    kw = pc - c * khw - kh * kw_n
    for k in range(kc):
        if k:
            kw += 1
            if kw == kw_n:
                kw = 0
                kh += 1
                if kh * kw_n == khw:
                    kh = 0
                    c += 1
        src_c = plane0 + c * hw
        lo, hi, off = wint[kw, 0], wint[kw, 1], wint[kw, 2]
        hlo, hhi, hoff = hint[kh, 0], hint[kh, 1], hint[kh, 2]
        # The band: tile columns ja .. jz-1 straight from the input.
        ja = 0
        jz = 0
        if band_ok and hhi > hlo and hi > lo:
            ja = max(hlo * q_n + lo - j0, 0)
            jz = min((hhi - 1) * q_n + hi - j0, jn)
        if jz > ja:  # input of pixel j0 + ja onwards
            _copy_to_panels(tile, bp, t0 + ja, jz - ja, pstride, k, xf,
                            src_c + (j0 + ja) + hoff * w_n + off, 1)
        # Every output row the tile touches, outside the band.
        j = 0
        oh = oh0
        ow = ow0
        while j < jn:
            end = min(q_n, ow + jn - j)  # this row's columns ow .. end-1
            jrow = t0 + j - ow  # tile column of (oh, 0)
            ih = htab[kh, oh]
            if ih < 0:
                for q in range(ow, end):
                    bp[U(_pixel(jrow + q, lg, pstride, k))] = 0
            else:
                row = src_c + ih * w_n
                a = min(max(lo, ow), end)
                z = max(min(hi, end), a)
                if not (jz > ja and hlo <= oh < hhi):  # not in the band: copy the interior
                    _copy_to_panels(tile, bp, jrow + a, z - a, pstride, k, xf, row + off + a * sw,
                                    sw)
                for q in range(ow, a):  # left padding (or a padding mode's remap)
                    iw = wtab[kw, q]
                    bp[U(_pixel(jrow + q, lg, pstride, k))] = xf[U(row + iw)] if iw >= 0 else 0
                for q in range(z, end):  # right padding
                    iw = wtab[kw, q]
                    bp[U(_pixel(jrow + q, lg, pstride, k))] = xf[U(row + iw)] if iw >= 0 else 0
            j += end - ow
            ow = 0
            oh += 1


@kernel("pad", "NHWC", "x_in", "x_out", "t1", "t1")
def pad_nhwc(x, xp, prow, pcol):
    """xp[n, i, j, :] = x[n, prow[i], pcol[j], :], or 0 where either is -1.

    The padded input of ``indirect_gemm``; the tables are
    ``_tables.padded_axis`` (so every padding mode works), and x is 1x the
    input, not the 9x of a 3x3 column matrix.
    """
    n_n, h_n, w_n, c_n = x.shape
    hp, wp = xp.shape[1], xp.shape[2]
    xf = x.reshape(x.size)
    pf = xp.reshape(xp.size)
    for task in prange(n_n * hp):
        n = task // hp
        i = task - n * hp
        r = prow[i]
        for j in range(wp):
            col = pcol[j]
            d = (task * wp + j) * c_n
            if r < 0 or col < 0:
                for c in range(c_n):
                    pf[U(d + c)] = 0
            else:
                s = ((n * h_n + r) * w_n + col) * c_n
                for c in range(c_n):
                    pf[U(d + c)] = xf[U(s + c)]


@kernel("pad", "NCHW", "x_in", "x_out", "t1", "t1", "i", "i")
def pad_nchw(x, xp, prow, pcol, lo, hi):
    """xp[n, c, i, j] = x[n, c, prow[i], pcol[j]], or 0 where either is -1.

    Columns ``lo .. hi-1`` of the padded plane are the input row itself
    (``pcol[j] == j - lo``): a straight copy; only the edges use the table.
    """
    n_n, c_n, h_n, w_n = x.shape
    hp, wp = xp.shape[2], xp.shape[3]
    xf = x.reshape(x.size)
    pf = xp.reshape(xp.size)
    for task in prange(n_n * c_n):
        for i in range(hp):
            r = prow[i]
            d = (task * hp + i) * wp
            if r < 0:
                for j in range(wp):
                    pf[U(d + j)] = 0
            else:
                s = (task * h_n + r) * w_n
                for j in range(lo):
                    col = pcol[j]
                    pf[U(d + j)] = xf[U(s + col)] if col >= 0 else 0
                for j in range(lo, hi):
                    pf[U(d + j)] = xf[U(s + j - lo)]
                for j in range(hi, wp):
                    col = pcol[j]
                    pf[U(d + j)] = xf[U(s + col)] if col >= 0 else 0


@numba.njit(inline="always")
def panel(tile, wf, w_k, w_o, k0, kc, o0, cols, dst, d0):
    """dst[d0 + k*nr + j] = W[k0 + k, o0 + j] for j < cols, else 0 (k < kc).

    W[k, o] is ``wf[k*w_k + o*w_o]``: HWIO as (K, O) has w_o == 1, OIHW as
    (O, K) has w_k == 1.  The loop runs along whichever is contiguous.
    """
    nr = tile.nr
    if w_o == 1:
        for k in range(kc):
            s = (k0 + k) * w_k + o0
            d = d0 + k * nr
            if cols == nr:
                copy_line(tile, wf, s, dst, d)
                continue
            for j in range(cols):
                dst[U(d + j)] = wf[U(s + j)]
            for j in range(cols, nr):
                dst[U(d + j)] = 0
    else:
        kb = 0
        vw = tile.vw  # a panel row is tile.nv registers
        if cols == nr and w_k == 1:
            # Blocks of vw channels x vw taps, transposed in registers.
            # Channel by channel (a run of kc taps into every nr-th slot)
            # took twice as long on one thread, and indirect_gemm on the
            # 7x7x512 layer at batch 1 (which packs per task) 1.3x as long.
            while kb + vw <= kc:
                for jb in range(0, nr, vw):
                    transpose_block(tile, wf, (o0 + jb) * w_o + k0 + kb, w_o, dst,
                                    d0 + kb * nr + jb, nr)
                kb += vw
        for j in range(nr):  # the taps left over, and a last panel's missing channels
            s = (o0 + j) * w_o + k0 * w_k
            if j < cols:
                for k in range(kb, kc):
                    dst[U(d0 + k * nr + j)] = wf[U(s + k * w_k)]
            else:
                for k in range(kb, kc):
                    dst[U(d0 + k * nr + j)] = 0


@kernel("pack_panels", "ANY", "tile", "c1_in", "i", "i", "x_out")
def pack_panels(tile, wf, w_k, w_o, wpk):
    """wpk[g, ob, k, j] = W[k, g*og + ob*NR + j] (0 past og): the weight as panels.

    ``W[k, o] = wf[k*w_k + o*w_o]`` (see ``panel``).  A panel row is NR
    values, read by the micro-kernel as one stream; read in place, the
    rows of a wide layer's HWIO weight (O = 512: 2 KiB apart) fell into the
    same few L1 sets and the layer ran 2-3x slower.
    """
    groups, nob, k_n = wpk.shape[0], wpk.shape[1], wpk.shape[2]
    nr = tile.nr
    og = wf.size // (groups * k_n)
    pf = wpk.reshape(wpk.size)
    if w_o == 1:
        # HWIO: a K row's channels are contiguous, so tasks take runs of whole
        # rows and deal each row out to every panel.  Panel by panel, each
        # row was read as 64-byte pieces 2 KiB apart (O = 512): the 512x4608
        # weight took 1.7 ms against 0.7 ms from OIHW.
        nkb = (k_n + 63) // 64
        for task in prange(groups * nkb):
            g = task // nkb
            k0 = (task - g * nkb) * 64
            for k in range(k0, min(k_n, k0 + 64)):
                for ob in range(nob):
                    panel(tile, wf, w_k, w_o, k, 1, g * og + ob * nr, min(nr, og - ob * nr), pf,
                          ((g * nob + ob) * k_n + k) * nr)
        return
    for task in prange(groups * nob):
        g = task // nob
        ob = task - g * nob
        o0 = g * og + ob * nr
        for k0 in range(0, k_n, 64):  # 64 panel rows (4-8 KiB) stay in L1 while OIHW fills them
            panel(tile, wf, w_k, w_o, k0, min(64, k_n - k0), o0, min(nr, og - ob * nr), pf,
                  (task * k_n + k0) * nr)


@kernel("flip_weight", "ANY", "c1_in", "c1_out", "i", "i", "i", "i", "t1", "t1")
def flip_weight(w, out, g_n, kk, cg, og, ws, os):
    """out[g, KK-1-t, o, c] = w[g, t, c, o] for every group g, tap t, channels c < cg, o < og.

    The layout is data: ``ws`` and ``os`` are the element strides of w's
    axes (group, tap, c, o) and out's (group, tap, o, c).  Tasks own blocks of
    16 x 16 channels of one group, taps innermost, so that a block's lines
    of both arrays stay in L1 in either layout: NumPy's copy of the
    transposed view took 1.9 ms (OIHW) and 5.7 ms (HWIO) for 512x512x3x3.
    """
    ncb = (cg + 15) // 16
    nob = (og + 15) // 16
    for task in prange(g_n * ncb * nob):
        g = task // (ncb * nob)
        rest = task - g * ncb * nob
        c0 = (rest // nob) * 16
        o0 = (rest - (rest // nob) * nob) * 16
        for o in range(o0, min(og, o0 + 16)):
            for c in range(c0, min(cg, c0 + 16)):
                src = g * ws[0] + c * ws[2] + o * ws[3]
                dst = g * os[0] + (kk - 1) * os[1] + o * os[2] + c * os[3]
                for t in range(kk):
                    out[U(dst - t * os[1])] = w[U(src + t * ws[1])]
