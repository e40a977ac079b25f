"""Direct depthwise convolution (groups == C, each output channel sees one input).

A depthwise layer has K = KH*KW: its im2col matrix is as big as its GEMM is
small, and a grouped GEMM would be C calls of a (m x KH*KW) x (KH*KW x P*Q)
product.  So these kernels multiply-add straight from the input, through the
same index tables as the gathers (stride, dilation, padding modes).

Padding still contributes ``w * 0`` rather than nothing, so an inf or NaN in
the weight propagates exactly as in a convolution of the padded input.
"""

import numba
import numpy as np
from numba import prange

from ._copy import (
    U,
    copy_run,
    copy_strided,
    dot_row,
    fill_zero,
    gather_row,
    mul_add_run,
    mul_add_zero,
    scatter_row,
)
from ._registry import kernel
from .epilogue import activate
from .registers import depthwise_pixels, transpose_block


@kernel("depthwise", "NCHW", "x_in", "x_in", "c1_in", "i", "x_out", "t1", "t1", "i", "i", "i", "i",
        "i", "i")
def depthwise_nchw(x, w, bias, has_bias, out, prow, pcol, before, sh, sw, dh, dw, act):
    """out[n, o, p, q] = act(sum_{kh,kw} w[o, 0, kh, kw] * x[n, o // m, h, w] (+ bias[o])).

    One task per (image, output channel) plane.  The plane is first copied
    into a padded scratch plane (``prow[i]``, ``pcol[j]``: the input row and
    column of padded position (i, j), or -1 for a zero; this is where the
    padding mode lives; columns ``before .. before+W-1`` are the unpadded
    interior), so the multiply-adds need no edge cases.  The scratch plane
    is split by column phase, ``pad[j % sw][i][j // sw]``, so that a strided
    tap reads consecutive elements: output (p, q) of tap (kh, kw) reads
    phase (kw*dw) % sw at column q + (kw*dw) // sw of row p*sh + kh*dh.

    With unit strides that offset is linear in the flat index v = p*WP + q,
    so each kernel row is ONE loop over the whole plane (columns q >= Q are
    computed and dropped); row by row, 7x7 and 14x14 planes spent most of
    their time on per-row bookkeeping.  Three-wide kernel rows (the usual
    3x3) add their three taps in one pass over the accumulator.
    """
    c_n, h_n, w_n = x.shape[1], x.shape[2], x.shape[3]
    n_n, o_n, p_n, q_n = out.shape
    m = o_n // c_n
    kh_n, kw_n = w.shape[2], w.shape[3]
    hp = prow.shape[0]
    wp = pcol.shape[0]
    wq = (wp + sw - 1) // sw  # columns of one phase
    flat = sh == 1 and sw == 1
    width = wq if flat else q_n  # row pitch of the accumulator
    length = p_n * wq if flat else q_n  # one flat pass, or one output row
    rows = 1 if flat else p_n
    okw = np.empty(kw_n, np.int64)  # tap kw's offset in the phase-split plane
    for kw in range(kw_n):
        okw[kw] = ((kw * dw) % sw) * hp * wq + (kw * dw) // sw
    # Phase ph's columns jj*sw + ph as a gather row: its table and its
    # interior (before <= j < before + W), as IndexTables.wtab and wint.
    ptab = np.full((sw, wq), -1, np.int64)
    pint = np.empty((sw, 3), np.int64)
    for ph in range(sw):
        for jj in range(wq):
            if jj * sw + ph < wp:
                ptab[ph, jj] = pcol[jj * sw + ph]
        lo = min(max((before - ph + sw - 1) // sw, 0), wq)
        pint[ph, 0] = lo
        pint[ph, 1] = max(min((before + w_n - ph + sw - 1) // sw, wq), lo)
        pint[ph, 2] = ph - before
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    for task in prange(n_n * o_n):
        n = task // o_n
        o = task - n * o_n
        plane = (n * c_n + o // m) * h_n * w_n
        pad = np.empty(sw * hp * wq, x.dtype)
        for i in range(hp):
            r = prow[i]
            for ph in range(sw):
                d = (ph * hp + i) * wq
                if r < 0:
                    fill_zero(pad, d, wq)
                else:
                    gather_row(pad, d, xf, plane + r * w_n, ptab, ph, pint[ph, 0], pint[ph, 1],
                               pint[ph, 2], sw, wq)
        acc = np.zeros(p_n * width, x.dtype)
        for kh in range(kh_n):
            wk = (o * kh_n + kh) * kw_n
            for p in range(rows):
                a0 = p * width
                s0 = (p * sh + kh * dh) * wq
                if kw_n == 3:
                    w0, w1, w2 = wf[wk], wf[wk + 1], wf[wk + 2]
                    t0, t1, t2 = s0 + okw[0], s0 + okw[1], s0 + okw[2]
                    for v in range(length):
                        acc[U(a0 + v)] += (w0 * pad[U(t0 + v)] + w1 * pad[U(t1 + v)]
                                           + w2 * pad[U(t2 + v)])
                else:
                    for kw in range(kw_n):
                        wv = wf[wk + kw]
                        t = s0 + okw[kw]
                        for v in range(length):
                            acc[U(a0 + v)] += wv * pad[U(t + v)]
        b0 = bias[o] if has_bias else 0.0
        base = task * p_n * q_n
        for p in range(p_n):
            for q in range(q_n):
                of[U(base + p * q_n + q)] = acc[U(p * width + q)] + b0
        activate(of, base, p_n * q_n, act)  # the plane just written, in cache


@kernel("depthwise_blocked", "NCHW", "tile", "x_in", "x_in", "c1_in", "i", "x_out", "t1", "t1",
        "i", "i", "i", "i", "i", "i", "i", "i")
def depthwise_blocked_nchw(tile, x, w, bias, has_bias, out, prow, pcol, before, sh, sw, dh, dw,
                           band, chunks, act):
    """out[n, c, p, q] = act(sum_{kh,kw} w[c, 0, kh, kw] * x[n, c, h, w] (+ bias[c])), O == C.

    Channel-blocked: VW channels ride in the lanes of one register, so every
    multiply-add is a whole vector whatever the image's width or the stride
    (the plane-by-plane kernel above runs rows of 7 pixels, or strided
    ones, as short loops).  A task is (image, block of VW channels, band of
    ``band`` output rows):

    * it interleaves the image rows its band reads into padded rows,
      ``buf[(row*WP + col)*VW + lane]``, by register transposes of VW
      pixels x VW channels: in place where a row is whole transposes, else
      as one run of pixels across row ends (``tmp[pixel*VW + lane]``, so
      that 7- and 14-pixel rows transpose too), then copied into place;
      ``prow``/``pcol`` as above give the padding (the modes live there);
    * runs each output row through ``depthwise_pixels`` (tap offsets in
      ``toff``, sums in registers) into ``obuf``;
    * applies the activation, and transposes the band's pixels back into
      the channels' planes, again as one run.

    A circular padding whose rows wrap past the band's reach interleaves row
    by row instead (``_interleave_row``).  A last block of fewer than VW
    channels moves its lanes one by one.  The parallel loop runs at most
    ``chunks`` chunks of consecutive tasks, so that scratch is allocated per
    chunk, not per task (7x7 and 14x14 layers have hundreds of small tasks).
    """
    c_n, h_n, w_n = x.shape[1], x.shape[2], x.shape[3]
    n_n, p_n, q_n = out.shape[0], out.shape[2], out.shape[3]
    kh_n, kw_n = w.shape[2], w.shape[3]
    vw = tile.vw
    wp = pcol.shape[0]
    ntaps = kh_n * kw_n
    nblk = (c_n + vw - 1) // vw
    nband = (p_n + band - 1) // band
    hw = h_n * w_n
    pq = p_n * q_n
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    toff = np.empty(ntaps, np.int64)
    for kh in range(kh_n):
        for kw in range(kw_n):
            toff[kh * kw_n + kw] = (kh * dh * wp + kw * dw) * vw
    ntask = n_n * nblk * nband
    nchunk = min(ntask, chunks)
    most = (band - 1) * sh + (kh_n - 1) * dh + 1  # padded rows a band reads
    for chunk in prange(nchunk):
        buf = np.empty(most * wp * vw, x.dtype)
        tmp = np.empty(most * w_n * vw, x.dtype)
        obuf = np.empty(band * q_n * vw, x.dtype)
        wv = np.zeros(ntaps * vw, x.dtype)  # tap t's weights in lanes
        bv = np.zeros(vw, x.dtype)
        for task in range(chunk * ntask // nchunk, (chunk + 1) * ntask // nchunk):
            bd = task % nband
            rest = task // nband
            cb = rest % nblk
            n = rest // nblk
            c0 = cb * vw
            lanes = min(vw, c_n - c0)
            p0 = bd * band
            p1 = min(p_n, p0 + band)
            i0 = p0 * sh  # the first padded row the band reads
            rows = (p1 - 1 - p0) * sh + (kh_n - 1) * dh + 1
            for lane in range(lanes):
                for t in range(ntaps):
                    wv[t * vw + lane] = wf[(c0 + lane) * ntaps + t]
                if has_bias:
                    bv[lane] = bias[c0 + lane]
            plane0 = (n * c_n + c0) * hw
            r_lo, r_hi = h_n, 0  # the image rows the band reads
            for i in range(rows):
                r = prow[i0 + i]
                if r >= 0:
                    r_lo = min(r_lo, r)
                    r_hi = max(r_hi, r + 1)
            # Rows of whole transposes go straight into place; others through
            # one run of pixels (``flat``), unless the rows read wrap too far.
            direct = lanes == vw and w_n % vw == 0
            flat = not direct and r_hi - r_lo <= rows
            if flat:
                _interleave_pixels(tile, tmp, xf, plane0 + r_lo * w_n, hw,
                                   max(r_hi - r_lo, 0) * w_n, lanes)
            for i in range(rows):
                d = i * wp * vw
                r = prow[i0 + i]
                if r < 0:
                    fill_zero(buf, d, wp * vw)
                    continue
                inner = d + before * vw  # the row's image columns in buf
                if direct:
                    for j in range(0, w_n, vw):
                        transpose_block(tile, xf, plane0 + r * w_n + j, hw, buf, inner + j * vw,
                                        vw)
                elif flat:
                    copy_run(buf, inner, tmp, (r - r_lo) * w_n * vw, w_n * vw)
                else:
                    _interleave_row(tile, buf, d, xf, plane0 + r * w_n, hw, pcol, before, w_n,
                                    lanes)
                    continue
                for jj in range(wp):  # the padding columns, from the row's own columns
                    if before <= jj < before + w_n:
                        continue
                    col = pcol[jj]
                    if col < 0:
                        fill_zero(buf, d + jj * vw, vw)
                    else:
                        copy_run(buf, d + jj * vw, buf, inner + col * vw, vw)
            for p in range(p0, p1):
                o0 = (p - p0) * q_n * vw
                for q in range(q_n):
                    copy_run(obuf, o0 + q * vw, bv, 0, vw)
                depthwise_pixels(tile, q_n, ntaps, buf, (p * sh - i0) * wp * vw, sw * vw, toff,
                                 wv, obuf, o0)
            activate(obuf, 0, (p1 - p0) * q_n * vw, act)
            _deinterleave_pixels(tile, of, (n * c_n + c0) * pq + p0 * q_n, pq, obuf,
                                 (p1 - p0) * q_n, lanes)


@numba.njit(inline="always")
def _interleave_pixels(tile, dst, xf, src, hw, count, lanes):
    """dst[m*VW + lane] = xf[src + lane*hw + m] for m < count: VW planes ``hw`` apart,
    interleaved; lanes past ``lanes`` are zeros."""
    vw = tile.vw
    m = 0
    if lanes == vw:
        while m + vw <= count:
            transpose_block(tile, xf, src + m, hw, dst, m * vw, vw)
            m += vw
    for lane in range(lanes):
        for mm in range(m, count):
            dst[U(mm * vw + lane)] = xf[U(src + lane * hw + mm)]
    for lane in range(lanes, vw):
        for mm in range(m, count):
            dst[U(mm * vw + lane)] = 0


@numba.njit(inline="always")
def _deinterleave_pixels(tile, of, d, pq, src, count, lanes):
    """of[d + lane*pq + m] = src[m*VW + lane] for m < count and lane < ``lanes``:
    ``_interleave_pixels`` back into planes ``pq`` apart."""
    vw = tile.vw
    m = 0
    if lanes == vw:
        while m + vw <= count:
            transpose_block(tile, src, m * vw, vw, of, d + m, pq)
            m += vw
    for lane in range(lanes):
        copy_strided(of, d + lane * pq + m, src, m * vw + lane, count - m, vw)


@numba.njit(inline="always")
def _interleave_row(tile, buf, d, xf, src, hw, pcol, before, w_n, lanes):
    """buf[d + (j*VW + lane)] = padded column j of row ``src`` of channel ``lane`` (planes
    ``hw`` apart), for every column j of ``pcol``; lanes past ``lanes`` are zeros."""
    vw = tile.vw
    wp = pcol.shape[0]
    for jj in range(wp):
        col = pcol[jj]
        for lane in range(vw):
            buf[U(d + jj * vw + lane)] = (
                xf[U(src + lane * hw + col)] if col >= 0 and lane < lanes else 0)


@kernel("depthwise", "NHWC", "x_in", "x_in", "c1_in", "i", "x_out", "t2", "t2", "i")
def depthwise_nhwc(x, w, bias, has_bias, out, htab, wtab, act):
    """out[n, p, q, o] = act(sum_{kh,kw} w[kh, kw, 0, o] * x[n, h, w, o // m] (+ bias[o])).

    One task per (image, output row); the innermost loop runs over the
    channels, contiguous in x, w and out.
    """
    h_n, w_n, c_n = x.shape[1], x.shape[2], x.shape[3]
    n_n, p_n, q_n, o_n = out.shape
    m = o_n // c_n
    kh_n = htab.shape[0]
    kw_n = wtab.shape[0]
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    for task in prange(n_n * p_n):
        n = task // p_n
        p = task - n * p_n
        for q in range(q_n):
            d = (task * q_n + q) * o_n
            for o in range(o_n):
                of[U(d + o)] = bias[o] if has_bias else 0.0
            for kh in range(kh_n):
                h = htab[kh, p]
                for kw in range(kw_n):
                    col = wtab[kw, q]
                    wb = (kh * kw_n + kw) * o_n
                    if h < 0 or col < 0:
                        for o in range(o_n):
                            of[U(d + o)] += wf[U(wb + o)] * 0.0
                    elif m == 1:
                        s = ((n * h_n + h) * w_n + col) * c_n
                        for o in range(o_n):
                            of[U(d + o)] += wf[U(wb + o)] * xf[U(s + o)]
                    else:
                        s = ((n * h_n + h) * w_n + col) * c_n
                        for o in range(o_n):
                            of[U(d + o)] += wf[U(wb + o)] * xf[U(s + o // m)]
            activate(of, d, o_n, act)


# --------------------------------------------------------------------------
# Gradients.  Each task owns a disjoint part of the result (race-free, as in
# col2im); the weight gradient sums in float64, since a float32 sum over
# N*P*Q terms would drift past the float32 tolerance on large images.
# --------------------------------------------------------------------------
@kernel("depthwise_grad_input", "NCHW", "x_in", "x_in", "x_out", "t2", "t2", "t2", "i")
def depthwise_grad_input_nchw(gout, w, gx, htab, wtab, wint, sw):
    """gx[n, c, h, w] = sum over the outputs o of channel c, kh, kw of w * gout."""
    n_n, c_n, h_n, w_n = gx.shape
    o_n, p_n, q_n = gout.shape[1], gout.shape[2], gout.shape[3]
    m = o_n // c_n
    kh_n = htab.shape[0]
    kw_n = wtab.shape[0]
    gf = gout.reshape(gout.size)
    xf = gx.reshape(gx.size)
    wf = w.reshape(w.size)
    for task in prange(n_n * c_n):  # one (image, channel) plane of gx
        n = task // c_n
        c = task - n * c_n
        plane = task * h_n * w_n
        for i in range(h_n * w_n):
            xf[U(plane + i)] = 0.0
        for j in range(m):
            o = c * m + j
            base = (n * o_n + o) * p_n * q_n
            for kh in range(kh_n):
                for kw in range(kw_n):
                    wv = wf[(o * kh_n + kh) * kw_n + kw]
                    a, z, off = wint[kw, 0], wint[kw, 1], wint[kw, 2]
                    for p in range(p_n):
                        h = htab[kh, p]
                        if h >= 0:
                            scatter_row(xf, plane + h * w_n, gf, base + p * q_n, wtab, kw, a, z,
                                        off, sw, q_n, wv)


@kernel("depthwise_grad_weight", "NCHW", "x_in", "x_in", "x_out", "t2", "t2", "t2", "i")
def depthwise_grad_weight_nchw(x, gout, gw, htab, wtab, wint, sw):
    """gw[o, 0, kh, kw] = sum over n, p, q of gout[n, o, p, q] * xpad[n, o // m, ...]."""
    n_n, c_n, h_n, w_n = x.shape
    o_n, p_n, q_n = gout.shape[1], gout.shape[2], gout.shape[3]
    m = o_n // c_n
    kh_n = htab.shape[0]
    kw_n = wtab.shape[0]
    gf = gout.reshape(gout.size)
    xf = x.reshape(x.size)
    wf = gw.reshape(gw.size)
    for o in prange(o_n):  # one output channel's taps
        c = o // m
        for kh in range(kh_n):
            for kw in range(kw_n):
                a, z, off = wint[kw, 0], wint[kw, 1], wint[kw, 2]
                acc = 0.0
                for n in range(n_n):
                    plane = (n * c_n + c) * h_n * w_n
                    base = (n * o_n + o) * p_n * q_n
                    for p in range(p_n):
                        h = htab[kh, p]
                        s = base + p * q_n
                        if h < 0:  # padding reads zeros: 0 * gout, as the GEMM path does
                            for q in range(q_n):
                                acc += gf[U(s + q)] * 0.0
                        else:
                            acc = dot_row(acc, gf, s, xf, plane + h * w_n, wtab, kw, a, z, off,
                                          sw, q_n)
                wf[(o * kh_n + kh) * kw_n + kw] = acc


@kernel("depthwise_grad_input", "NHWC", "x_in", "x_in", "x_out", "t2", "t2", "i")
def depthwise_grad_input_nhwc(gout, w, gx, htab, wtab, cblock):
    """gx[n, h, w, c] = sum over the outputs o of channel c, kh, kw of w * gout.

    Tasks are (image, block of ``cblock`` channels): every task owns its
    channels of the whole image, so the scatter is race-free.
    """
    n_n, h_n, w_n, c_n = gx.shape
    p_n, q_n, o_n = gout.shape[1], gout.shape[2], gout.shape[3]
    m = o_n // c_n
    kh_n = htab.shape[0]
    kw_n = wtab.shape[0]
    gf = gout.reshape(gout.size)
    xf = gx.reshape(gx.size)
    wf = w.reshape(w.size)
    nblocks = (c_n + cblock - 1) // cblock
    for task in prange(n_n * nblocks):
        n = task // nblocks
        c0 = (task - n * nblocks) * cblock
        c1 = min(c0 + cblock, c_n)
        for i in range(h_n * w_n):
            for c in range(c0, c1):
                xf[U((n * h_n * w_n + i) * c_n + c)] = 0.0
        for p in range(p_n):
            for q in range(q_n):
                s = ((n * p_n + p) * q_n + q) * o_n
                for kh in range(kh_n):
                    h = htab[kh, p]
                    if h < 0:
                        continue
                    for kw in range(kw_n):
                        col = wtab[kw, q]
                        if col < 0:
                            continue
                        d = ((n * h_n + h) * w_n + col) * c_n
                        wb = (kh * kw_n + kw) * o_n
                        if m == 1:
                            mul_add_run(xf, d + c0, wf, wb + c0, gf, s + c0, c1 - c0)
                        else:
                            for c in range(c0, c1):
                                for j in range(m):
                                    o = c * m + j
                                    xf[U(d + c)] += wf[U(wb + o)] * gf[U(s + o)]


@kernel("depthwise_grad_weight", "NHWC", "x_in", "x_in", "x_out", "t2", "t2", "i")
def depthwise_grad_weight_nhwc(x, gout, gw, htab, wtab, oblock):
    """gw[kh, kw, 0, o] = sum over n, p, q of gout[n, p, q, o] * xpad[n, h, w, o // m].

    Tasks are blocks of ``oblock`` output channels, each summing its own taps
    in a private float64 buffer.
    """
    n_n, h_n, w_n, c_n = x.shape
    p_n, q_n, o_n = gout.shape[1], gout.shape[2], gout.shape[3]
    m = o_n // c_n
    kh_n = htab.shape[0]
    kw_n = wtab.shape[0]
    gf = gout.reshape(gout.size)
    xf = x.reshape(x.size)
    wf = gw.reshape(gw.size)
    nblocks = (o_n + oblock - 1) // oblock
    for blk in prange(nblocks):
        o0 = blk * oblock
        o1 = min(o0 + oblock, o_n)
        ob = o1 - o0
        acc = np.zeros(kh_n * kw_n * ob)  # acc[k*ob + o - o0], k = kh*KW + kw
        for n in range(n_n):
            for p in range(p_n):
                for q in range(q_n):
                    s = ((n * p_n + p) * q_n + q) * o_n
                    for kh in range(kh_n):
                        h = htab[kh, p]
                        for kw in range(kw_n):
                            col = wtab[kw, q]
                            k = kh * kw_n + kw
                            if h < 0 or col < 0:  # padding: 0 * gout, as the GEMM path does
                                mul_add_zero(acc, k * ob, gf, s + o0, ob)
                                continue
                            d = ((n * h_n + h) * w_n + col) * c_n
                            if m == 1:
                                mul_add_run(acc, k * ob, gf, s + o0, xf, d + o0, ob)
                            else:
                                for o in range(o0, o1):
                                    acc[U(k * ob + o - o0)] += gf[U(s + o)] * xf[U(d + o // m)]
        for k in range(kh_n * kw_n):
            copy_run(wf, k * o_n + o0, acc, k * ob, ob)
