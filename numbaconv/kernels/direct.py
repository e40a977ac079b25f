"""Direct depthwise convolution (groups == C, each output channel sees one input).

A depthwise layer has K = KH*KW: its im2col matrix is as big as its GEMM is
small, and a grouped GEMM would be C calls of a (m x KH*KW) x (KH*KW x P*Q)
product.  So these kernels multiply-add straight from the input, through the
same index tables as the gathers (stride, dilation, padding modes).

Padding still contributes ``w * 0`` rather than nothing, so an inf or NaN in
the weight propagates exactly as in a convolution of the padded input.
"""

from numba import prange

from ._copy import U


def depthwise_nchw(x, w, bias, has_bias, out, htab, wtab, wint, sw):
    """out[n, o, p, q] = sum_{kh,kw} w[o, 0, kh, kw] * x[n, o // m, h, w] (+ bias[o]).

    One task per (image, output channel) plane; the interior of each output
    row is a unit- or fixed-stride multiply-add that LLVM vectorises.
    """
    c_n, h_n, w_n = x.shape[1], x.shape[2], x.shape[3]
    n_n, o_n, p_n, q_n = out.shape
    m = o_n // c_n
    kh_n = htab.shape[0]
    kw_n = wtab.shape[0]
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    for task in prange(n_n * o_n):
        n = task // o_n
        o = task - n * o_n
        base = task * p_n * q_n
        b0 = bias[o] if has_bias else 0.0
        for i in range(p_n * q_n):
            of[U(base + i)] = b0
        plane = (n * c_n + o // m) * h_n * w_n
        for kh in range(kh_n):
            for kw in range(kw_n):
                wv = wf[(o * kh_n + kh) * kw_n + kw]
                a, z, off = wint[kw, 0], wint[kw, 1], wint[kw, 2]
                for p in range(p_n):
                    d = base + p * q_n
                    h = htab[kh, p]
                    if h < 0:
                        for q in range(q_n):
                            of[U(d + q)] += wv * 0.0
                        continue
                    srow = plane + h * w_n
                    for q in range(a):
                        col = wtab[kw, q]
                        of[U(d + q)] += wv * (xf[U(srow + col)] if col >= 0 else 0.0)
                    s = srow + off
                    for q in range(a, z):
                        of[U(d + q)] += wv * xf[U(s + q * sw)]
                    for q in range(z, q_n):
                        col = wtab[kw, q]
                        of[U(d + q)] += wv * (xf[U(srow + col)] if col >= 0 else 0.0)


def depthwise_nhwc(x, w, bias, has_bias, out, htab, wtab):
    """out[n, p, q, o] = sum_{kh,kw} w[kh, kw, 0, o] * x[n, h, w, o // m] (+ bias[o]).

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
