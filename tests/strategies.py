"""Hypothesis strategies for convolution problems, checked by the reference's own rules."""

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from naive import conv2d_ref, same_pads

DTYPES = [np.float32, np.float64]
LAYOUTS = ["NCHW", "NHWC"]
MODES = ["zeros", "reflect", "replicate", "circular"]


@st.composite
def padding_forms(draw, kh, kw, h, w, stride, dilation):
    """(padding argument, the explicit (top, bottom, left, right) it means)."""
    form = draw(st.sampled_from(["int", "pair", "explicit", "same", "valid"]))
    if form == "int":
        p = draw(st.integers(0, 3))
        return p, (p, p, p, p)
    if form == "pair":
        ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        return (ph, pw), (ph, ph, pw, pw)
    if form == "explicit":
        top, bottom, left, right = (draw(st.integers(0, 3)) for _ in range(4))
        return ((top, bottom), (left, right)), (top, bottom, left, right)
    if form == "valid":
        return "valid", (0, 0, 0, 0)
    pads = same_pads(h, kh, stride[0], dilation[0]) + same_pads(w, kw, stride[1], dilation[1])
    return "same", pads


def valid_geometry(h, w, kh, kw, dilation, pads, mode):
    """The reference's rule for a legal problem (PyTorch's)."""
    pt, pb, pl, pr = pads
    if (kh - 1) * dilation[0] + 1 > h + pt + pb or (kw - 1) * dilation[1] + 1 > w + pl + pr:
        return False
    if mode == "reflect" and max(pt, pb) >= h or mode == "reflect" and max(pl, pr) >= w:
        return False
    if mode == "circular" and (max(pt, pb) > h or max(pl, pr) > w):
        return False
    return True


@st.composite
def conv_problems(draw, max_groups=3, og=(1, 4), max_size=9, depthwise=False):
    """Any legal problem; ``depthwise``: one input channel per group, more than one group."""
    groups = draw(st.integers(2 if depthwise else 1, max_groups))
    cg, og = 1 if depthwise else draw(st.integers(1, 4)), draw(st.integers(*og))
    n = draw(st.integers(0, 3))
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding, pads = draw(padding_forms(kh, kw, h, w, stride, dilation))
    mode = draw(st.sampled_from(MODES))
    assume(valid_geometry(h, w, kh, kw, dilation, pads, mode))
    stride_arg = stride if stride[0] != stride[1] or draw(st.booleans()) else stride[0]
    dil_arg = dilation if dilation[0] != dilation[1] or draw(st.booleans()) else dilation[0]
    return dict(n=n, c=groups * cg, h=h, w=w, o=groups * og, kh=kh, kw=kw, groups=groups,
                stride=stride, dilation=dilation, pads=pads, padding=padding, mode=mode,
                stride_arg=stride_arg, dil_arg=dil_arg)


def arrays_for(prob, dtype, with_bias, seed):
    """x (NCHW), w (OIHW) and bias for a ``conv_problems`` problem."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((prob["n"], prob["c"], prob["h"], prob["w"])).astype(dtype)
    w = rng.standard_normal((prob["o"], prob["c"] // prob["groups"], prob["kh"], prob["kw"]))
    b = rng.standard_normal(prob["o"]).astype(dtype) if with_bias else None
    return x, w.astype(dtype), b


def reference_for(prob, x, w, b):
    """The float64 reference of a ``conv_problems`` problem (NCHW)."""
    return conv2d_ref(x, w, b, prob["stride"], prob["pads"], prob["dilation"], prob["groups"],
                      prob["mode"])
