"""Winograd F(m x m, 3 x 3): the transforms around the transform-domain GEMMs.

A tile's alpha x alpha input patch d (alpha = m + 2, rows and columns of
the padded input) becomes V = B^T d B; the GEMMs (``algorithms.winograd``)
multiply V by the transformed weight point by point, giving M; and
A^T M A is the tile's m x m output.  The matrices come as data (``bt``:
B^T, ``at``: A^T), so one kernel serves every m; zero coefficients are
skipped outside the vector loops.

Tiles are numbered t = (image * tiles_h + tile row) * tiles_w + tile
column; a kernel handles tiles t0 .. t0 + nt.  The transform domain is
flat: NCHW V is (alpha^2, C, nt) and M (alpha^2, O, nt), so the kernels'
vector loops run over tiles; NHWC V is (alpha^2, nt, C) and M
(alpha^2, nt, O), over channels.  ``hsrc``/``wsrc`` map a padded row or
column to its source, or -1 for a zero: padding_mode lives there.
``lb`` is the vector block (tiles or channels per task), sized by the
planner so that a task's three scratch blocks stay in L1.
"""

import numba
import numpy as np
from numba import prange

from ._copy import U, copy_run, copy_strided, fill_zero
from ._registry import kernel
from .epilogue import activate


@numba.njit(inline="always")
def _tile_at(t, th, tw):
    """(image, tile row, tile column) of tile number t."""
    img = t // (th * tw)
    rest = t - img * th * tw
    ty = rest // tw
    return img, ty, rest - ty * tw


@numba.njit(inline="always")
def _combine(dst, d, src, s0, step, mat, row, n):
    """dst[d + :n] = sum over e of mat[row, e] * src[s0 + e * step + :n], zeros skipped.

    One row of a transform's pass: every pass of the input, output and
    weight transforms is this, over runs of n tiles, channels or filters.
    """
    fill_zero(dst, d, n)
    for e in range(mat.shape[1]):
        f = mat[row, e]
        if f != 0:
            s = s0 + e * step
            for i in range(n):
                dst[U(d + i)] += f * src[U(s + i)]


@numba.njit(inline="always")
def _sandwich(src, tmp, dst, mat, nv, lb):
    """dst[a, b, :nv] = sum over k, l of mat[a, k] * src[k, l, :nv] * mat[b, l].

    ``mat`` is r x alpha; src is (alpha, alpha, lb), tmp (alpha, r, lb) and
    dst (r, r, lb), flat.  The vector loops are innermost and unit-stride.
    """
    r, alpha = mat.shape
    for k in range(alpha):  # tmp[k, b] = sum over l of src[k, l] * mat[b, l]
        for b in range(r):
            _combine(tmp, (k * r + b) * lb, src, k * alpha * lb, lb, mat, b, nv)
    for a in range(r):  # dst[a, b] = sum over k of mat[a, k] * tmp[k, b]
        for b in range(r):
            _combine(dst, (a * r + b) * lb, tmp, b * lb, r * lb, mat, a, nv)


@kernel("winograd_in", "NCHW", "x_in", "c1_out", "i", "i", "i", "i", "t1", "t1", "c2_in", "i",
        "i", "i", "i")
def winograd_in_nchw(x, v, t0, nt, th, tw, hsrc, wsrc, bt, lb, tx_lo, tx_hi, pl):
    """v[(a, b), c, t - t0] = (B^T d B)[a, b] of tile t's patch d of channel c.

    Tiles tx_lo <= tx < tx_hi of a row read no padding: column tx*m + l - pl
    (a strided copy per tap); the others read through ``wsrc``.
    """
    alpha = bt.shape[0]
    m, aa = alpha - 2, alpha * alpha
    c_n, h_n, w_n = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(-1)
    blocks = (nt + lb - 1) // lb
    for task in prange(c_n * blocks):
        c = task // blocks
        j0 = (task - c * blocks) * lb
        nj = min(lb, nt - j0)
        d = np.empty(aa * lb, x.dtype)
        tmp = np.empty(aa * lb, x.dtype)
        res = np.empty(aa * lb, x.dtype)
        j = 0
        while j < nj:  # gather the patches, a run of tiles of one tile row at a time
            t = t0 + j0 + j
            img, ty, tx = _tile_at(t, th, tw)
            run = min(nj - j, tw - tx)
            lo = min(max(tx, tx_lo), tx + run)
            hi = max(min(tx + run, tx_hi), lo)
            plane = (img * c_n + c) * h_n
            for k in range(alpha):
                hr = hsrc[ty * m + k]
                for e in range(alpha):
                    dst = (k * alpha + e) * lb + j - tx
                    if hr < 0:
                        fill_zero(d, dst + tx, run)
                        continue
                    row = (plane + hr) * w_n
                    for q in range(tx, lo):
                        wc = wsrc[q * m + e]
                        d[dst + q] = xf[row + wc] if wc >= 0 else 0
                    copy_strided(d, dst + lo, xf, row + lo * m + e - pl, hi - lo, m)
                    for q in range(hi, tx + run):
                        wc = wsrc[q * m + e]
                        d[dst + q] = xf[row + wc] if wc >= 0 else 0
            j += run
        _sandwich(d, tmp, res, bt, nj, lb)
        for ab in range(aa):
            copy_run(v, (ab * c_n + c) * nt + j0, res, ab * lb, nj)


@kernel("winograd_in", "NHWC", "x_in", "c1_out", "i", "i", "i", "i", "t1", "t1", "c2_in", "i")
def winograd_in_nhwc(x, v, t0, nt, th, tw, hsrc, wsrc, bt, lb):
    """v[(a, b), t - t0, c] = (B^T d B)[a, b] of tile t's patch d of channel c."""
    alpha = bt.shape[0]
    m, aa = alpha - 2, alpha * alpha
    h_n, w_n, c_n = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(-1)
    cblocks = (c_n + lb - 1) // lb
    for task in prange(nt * cblocks):
        j = task // cblocks
        c0 = (task - j * cblocks) * lb
        nc = min(lb, c_n - c0)
        t = t0 + j
        img, ty, tx = _tile_at(t, th, tw)
        d = np.empty(aa * lb, x.dtype)
        tmp = np.empty(aa * lb, x.dtype)
        res = np.empty(aa * lb, x.dtype)
        for k in range(alpha):
            hr = hsrc[ty * m + k]
            for e in range(alpha):
                wc = wsrc[tx * m + e]
                if hr >= 0 and wc >= 0:
                    copy_run(d, (k * alpha + e) * lb, xf, ((img * h_n + hr) * w_n + wc) * c_n + c0,
                             nc)
                else:
                    fill_zero(d, (k * alpha + e) * lb, nc)
        _sandwich(d, tmp, res, bt, nc, lb)
        for ab in range(aa):
            copy_run(v, (ab * nt + j) * c_n + c0, res, ab * lb, nc)


@kernel("winograd_out", "NCHW", "c1_in", "x_out", "i", "i", "i", "i", "c2_in", "c1_in", "i",
        "i", "i")
def winograd_out_nchw(mm, out, t0, nt, th, tw, at, bias, has_bias, lb, act):
    """out[image, o, rows, cols of tile t] = act((A^T M A) of tile t, output channel o, + bias)."""
    m, alpha = at.shape
    aa, o_n, p_n, q_n = alpha * alpha, out.shape[1], out.shape[2], out.shape[3]
    blocks = (nt + lb - 1) // lb
    for task in prange(o_n * blocks):
        o = task // blocks
        j0 = (task - o * blocks) * lb
        nj = min(lb, nt - j0)
        src = np.empty(aa * lb, out.dtype)
        tmp = np.empty(alpha * m * lb, out.dtype)
        res = np.empty(m * m * lb, out.dtype)
        for ab in range(aa):
            copy_run(src, ab * lb, mm, (ab * o_n + o) * nt + j0, nj)
        _sandwich(src, tmp, res, at, nj, lb)
        b = bias[o] if has_bias else 0
        for e in range(m * m):  # before the scatter: the rows of res are contiguous
            _add_activate(res, e * lb, nj, b, act)
        for j in range(nj):  # the tile's pixels inside the output, scattered
            t = t0 + j0 + j
            img, ty, tx = _tile_at(t, th, tw)
            for a in range(min(m, p_n - ty * m)):
                for c in range(min(m, q_n - tx * m)):
                    out[img, o, ty * m + a, tx * m + c] = res[(a * m + c) * lb + j]


@kernel("winograd_out", "NHWC", "c1_in", "x_out", "i", "i", "i", "i", "c2_in", "c1_in", "i",
        "i", "i")
def winograd_out_nhwc(mm, out, t0, nt, th, tw, at, bias, has_bias, lb, act):
    """out[image, rows, cols of tile t, o] = act((A^T M A) of tile t, output channel o, + bias)."""
    m, alpha = at.shape
    aa, p_n, q_n, o_n = alpha * alpha, out.shape[1], out.shape[2], out.shape[3]
    of = out.reshape(-1)
    oblocks = (o_n + lb - 1) // lb
    for task in prange(nt * oblocks):
        j = task // oblocks
        o0 = (task - j * oblocks) * lb
        no = min(lb, o_n - o0)
        t = t0 + j
        img, ty, tx = _tile_at(t, th, tw)
        src = np.empty(aa * lb, out.dtype)
        tmp = np.empty(alpha * m * lb, out.dtype)
        res = np.empty(m * m * lb, out.dtype)
        for ab in range(aa):
            copy_run(src, ab * lb, mm, (ab * nt + j) * o_n + o0, no)
        _sandwich(src, tmp, res, at, no, lb)
        for a in range(min(m, p_n - ty * m)):
            for c in range(min(m, q_n - tx * m)):
                dst = ((img * p_n + ty * m + a) * q_n + tx * m + c) * o_n + o0
                s = (a * m + c) * lb
                if has_bias:
                    for i in range(no):
                        of[U(dst + i)] = res[U(s + i)] + bias[U(o0 + i)]
                else:
                    copy_run(of, dst, res, s, no)
                activate(of, dst, no, act)


@numba.njit(inline="always")
def _add_activate(a, start, n, b, act):
    """a[start:start+n] = act(a[start:start+n] + b)."""
    for i in range(n):
        a[U(start + i)] += b
    activate(a, start, n, act)


@numba.njit(inline="always")
def _filter(src, s0, s_tap, t, u, d0, d_ab, gm, n):
    """u[d0 + (a, b) * d_ab + :n] = (G g G^T)[a, b] of the n filters g whose tap (k, l) is
    src[s0 + (k * 3 + l) * s_tap + :n]: G g into ``t`` (alpha x 3 rows), then (G g) G^T."""
    alpha = gm.shape[0]
    for a in range(alpha):  # t[a, e] = sum over k of gm[a, k] * g[k, e]
        for e in range(3):
            _combine(t, (a * 3 + e) * n, src, s0 + e * s_tap, 3 * s_tap, gm, a, n)
    for a in range(alpha):  # u[a, b] = sum over e of t[a, e] * gm[b, e]
        for b in range(alpha):
            _combine(u, d0 + (a * alpha + b) * d_ab, t, a * 3 * n, n, gm, b, n)


@kernel("winograd_weight", "NCHW", "c1_in", "c1_out", "c2_in", "i", "i")
def winograd_weight_nchw(w, u, gm, o_n, c_n):
    """u[(a, b), o, c] = (G g G^T)[a, b] of the 3x3 filter g = w[o, c] (OIHW, flat).

    A task per output channel: its (C, 9) filters are transposed into rows
    of channels first, so that both passes run over contiguous channels.
    """
    alpha = gm.shape[0]
    for o in prange(o_n):
        taps = np.empty(9 * c_n, w.dtype)
        for c in range(c_n):
            for kl in range(9):
                taps[kl * c_n + c] = w[(o * c_n + c) * 9 + kl]
        t = np.empty(alpha * 3 * c_n, w.dtype)
        _filter(taps, 0, c_n, t, u, o * c_n, o_n * c_n, gm, c_n)


@kernel("winograd_weight", "NHWC", "c1_in", "c1_out", "c2_in", "i", "i", "i")
def winograd_weight_nhwc(w, u, gm, c_n, o_n, groups):
    """u[(a, b), group, c, o] = (G g G^T)[a, b] of the 3x3 filter g = w[:, :, c, o] (HWIO, flat)."""
    alpha = gm.shape[0]
    og = o_n // groups
    for task in prange(c_n * groups):
        c = task // groups
        grp = task - c * groups
        t = np.empty(alpha * 3 * og, w.dtype)
        _filter(w, c * o_n + grp * og, c_n * o_n, t, u, (grp * c_n + c) * og, groups * c_n * og,
                gm, og)
