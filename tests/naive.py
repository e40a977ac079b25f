"""A slow, obviously-correct float64 reference, independent of numbaconv.

Padding is done by ``np.pad`` (whose 'reflect', 'edge' and 'wrap' modes are
PyTorch's reflect, replicate and circular), then every kernel tap is a
strided slice; nothing here uses the package's index tables or kernels.
Everything is in NCHW/OIHW; tests transpose for NHWC.
"""

import numpy as np

NP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def same_pads(size, k, s, d):
    """TensorFlow's SAME: ceil(size/s) outputs, the odd pixel at the end."""
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def pad_nchw(x, pads, mode):
    pt, pb, pl, pr = pads
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), mode=NP_PAD_MODE[mode])


def taps(x, kh, kw, stride, dilation, pads, mode):
    """Yield (i, j, window) with window[n, c, p, q] = padded x at tap (i, j)."""
    xp = pad_nchw(np.asarray(x, np.float64), pads, mode)
    (sh, sw), (dh, dw) = stride, dilation
    p = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    q = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, :, i * dh : i * dh + (p - 1) * sh + 1 : sh,
                           j * dw : j * dw + (q - 1) * sw + 1 : sw]


def conv2d_ref(x, w, bias=None, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1,
               mode="zeros"):
    """out[n, o, p, q] = sum over group c, i, j of xpad[n, c, p*s + i*d, ..] * w[o, c, i, j]."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    o_n, cg, kh, kw = w.shape
    og = o_n // groups
    out = None
    for i, j, win in taps(x, kh, kw, stride, dilation, pads, mode):
        parts = [
            np.einsum("ncpq,oc->nopq", win[:, g * cg : (g + 1) * cg],
                      w[g * og : (g + 1) * og, :, i, j])
            for g in range(groups)
        ]
        term = np.concatenate(parts, axis=1)
        out = term if out is None else out + term
    if bias is not None:
        out = out + np.asarray(bias, np.float64)[None, :, None, None]
    return out


def pad_index(size, before, after, mode):
    """The source index of every padded position (-1 for a zero), via np.pad itself."""
    idx = np.arange(size)
    if mode == "zeros":
        return np.pad(idx, (before, after), constant_values=-1)
    return np.pad(idx, (before, after), mode=NP_PAD_MODE[mode])


def grads_ref(x, w, gout, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1,
              mode="zeros"):
    """float64 (grad_x, grad_weight, grad_bias) of conv2d_ref, NCHW/OIHW."""
    x, w, gout = (np.asarray(a, np.float64) for a in (x, w, gout))
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = pads
    p, q = gout.shape[2:]
    gpad = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    gw = np.zeros_like(w)
    for i, j, win in taps(x, kh, kw, stride, dilation, pads, mode):
        for gi in range(groups):
            cs, os_ = slice(gi * cg, (gi + 1) * cg), slice(gi * og, (gi + 1) * og)
            gw[os_, :, i, j] = np.einsum("nopq,ncpq->oc", gout[:, os_], win[:, cs])
            gpad[:, cs, i * dh : i * dh + (p - 1) * sh + 1 : sh,
                 j * dw : j * dw + (q - 1) * sw + 1 : sw] += np.einsum(
                     "nopq,oc->ncpq", gout[:, os_], w[os_, :, i, j])
    # The adjoint of padding: each padded position goes back to its source.
    hi, wi = pad_index(h, pt, pb, mode), pad_index(wd, pl, pr, mode)
    gx = np.zeros_like(x)
    rows = np.flatnonzero(hi >= 0)
    cols = np.flatnonzero(wi >= 0)
    for r in rows:
        np.add.at(gx[:, :, hi[r]], (slice(None), slice(None), wi[cols]), gpad[:, :, r, cols])
    return gx, gw, gout.sum(axis=(0, 2, 3))


def im2col_ref(x, kh, kw, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), mode="zeros"):
    """(N, C*KH*KW, P*Q) in unfold order: row c*KH*KW + i*KW + j."""
    x = np.asarray(x, np.float64)
    n, c = x.shape[:2]
    wins = {(i, j): win for i, j, win in taps(x, kh, kw, stride, dilation, pads, mode)}
    p, q = wins[0, 0].shape[2:]
    cols = np.empty((n, c, kh, kw, p * q))
    for (i, j), win in wins.items():
        cols[:, :, i, j] = win.reshape(n, c, p * q)
    return cols.reshape(n, c * kh * kw, p * q)


def assert_close(actual, expected, dtype):
    """The issue's bound: |err| <= tol * max(1, max|ref|), tol by dtype."""
    expected = np.asarray(expected, np.float64)
    tol = 2e-4 if np.dtype(dtype) == np.float32 else 1e-9
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    assert err <= tol * scale, f"max abs error {err:.3g} > {tol} * {scale:.3g}"


def to_nhwc(x):
    return np.moveaxis(x, 1, -1)


def to_hwio(w):
    return np.transpose(w, (2, 3, 1, 0))


def from_nhwc(y):
    return np.moveaxis(y, -1, 1)


def col2im_ref(cols, h, w, kh, kw, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1)):
    """torch.nn.functional.fold by direct loops: every column entry added to its pixel."""
    cols = np.asarray(cols, np.float64)
    n, rows, length = cols.shape
    c = rows // (kh * kw)
    (sh, sw), (dh, dw) = stride, dilation
    pt, pb, pl, pr = pads
    q_n = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    x = np.zeros((n, c, h, w))
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = (ci * kh + i) * kw + j
                for ell in range(length):
                    p, q = divmod(ell, q_n)
                    hh, ww = p * sh + i * dh - pt, q * sw + j * dw - pl
                    if 0 <= hh < h and 0 <= ww < w:
                        x[:, ci, hh, ww] += cols[:, row, ell]
    return x


# --------------------------------------------------------------------------
# Any rank: (N, C, *S) / (O, I, *K), pads as (low, high) per axis, flat
# --------------------------------------------------------------------------
def _tap_windows(x, kernel, stride, dilation, pads, mode):
    """Yield (tap, window) with window[n, c, *out] = padded x at kernel tap ``tap``."""
    import itertools

    rank = len(kernel)
    xp = np.pad(np.asarray(x, np.float64),
                [(0, 0), (0, 0)] + [(pads[2 * i], pads[2 * i + 1]) for i in range(rank)],
                mode=NP_PAD_MODE[mode])
    out = [(xp.shape[2 + i] - (kernel[i] - 1) * dilation[i] - 1) // stride[i] + 1
           for i in range(rank)]
    for tap in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                      for t, d, o, s in zip(tap, dilation, out, stride, strict=True))
        yield tap, xp[(slice(None), slice(None)) + index]


def convnd_ref(x, w, bias=None, stride=None, pads=None, dilation=None, groups=1, mode="zeros"):
    """out[n, o, *p] = sum over group c and taps t of xpad[n, c, p*s + t*d] * w[o, c, *t]."""
    w = np.asarray(w, np.float64)
    rank = w.ndim - 2
    stride = stride or (1,) * rank
    dilation = dilation or (1,) * rank
    pads = pads or (0,) * (2 * rank)
    o_n, cg = w.shape[:2]
    og = o_n // groups
    out = None
    for tap, win in _tap_windows(x, w.shape[2:], stride, dilation, pads, mode):
        wt = w[(slice(None), slice(None)) + tap]
        term = np.concatenate(
            [np.einsum("nc...,oc->no...", win[:, g * cg:(g + 1) * cg], wt[g * og:(g + 1) * og])
             for g in range(groups)], axis=1)
        out = term if out is None else out + term
    if bias is not None:
        out = out + np.asarray(bias, np.float64).reshape((1, -1) + (1,) * rank)
    return out


def convnd_grad_weight_ref(x, w_shape, gout, stride, pads, dilation, groups=1, mode="zeros"):
    """d(sum(gout * conv(x, w))) / dw, tap by tap."""
    gout = np.asarray(gout, np.float64)
    o_n, cg = w_shape[:2]
    og = o_n // groups
    gw = np.zeros(w_shape)
    for tap, win in _tap_windows(x, w_shape[2:], stride, dilation, pads, mode):
        for g in range(groups):
            spatial = int(np.prod(gout.shape[2:]))
            go = gout[:, g * og:(g + 1) * og].reshape(gout.shape[0], og, spatial)
            xw = win[:, g * cg:(g + 1) * cg].reshape(win.shape[0], cg, spatial)
            gw[(slice(g * og, (g + 1) * og), slice(None)) + tap] = np.einsum("nop,ncp->oc",
                                                                             go, xw)
    return gw


def conv_transpose_nd_ref(x, w, stride, pads, output_padding, dilation, groups=1):
    """The transposed convolution by its definition: every x[n, c, i] * w[c, o, t] added
    at output i*s + t*d - pad_low; output_padding extends the high end."""
    import itertools

    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    rank = w.ndim - 2
    n, c_in, sizes = x.shape[0], x.shape[1], x.shape[2:]
    og = w.shape[1]
    cg = c_in // groups
    full = [(sizes[i] - 1) * stride[i] + dilation[i] * (w.shape[2 + i] - 1) + 1
            + output_padding[i] for i in range(rank)]
    buf = np.zeros((n, og * groups, *full))
    for tap in itertools.product(*(range(k) for k in w.shape[2:])):
        index = tuple(slice(t * d, t * d + (size - 1) * s + 1, s)
                      for t, d, size, s in zip(tap, dilation, sizes, stride, strict=True))
        for g in range(groups):
            contrib = np.einsum("nc...,co->no...", x[:, g * cg:(g + 1) * cg],
                                w[(slice(g * cg, (g + 1) * cg), slice(None)) + tap])
            buf[(slice(None), slice(g * og, (g + 1) * og)) + index] += contrib
    crop = tuple(slice(pads[2 * i], full[i] - pads[2 * i + 1]) for i in range(rank))
    return buf[(slice(None), slice(None)) + crop]


def to_last(x):
    """(N, C, *S) -> (N, *S, C)."""
    return np.moveaxis(x, 1, -1)


def from_last(y):
    return np.moveaxis(y, -1, 1)


def weight_to_last(w):
    """(O, I, *K) -> (*K, I, O)."""
    return np.transpose(w, tuple(range(2, w.ndim)) + (1, 0))


def weight_from_last(w):
    """(*K, I, O) -> (O, I, *K)."""
    r = w.ndim - 2
    return np.transpose(w, (r + 1, r) + tuple(range(r)))
