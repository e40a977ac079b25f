"""conv_transpose2d against a direct scatter reference, the adjoint identity, and PyTorch."""

import numpy as np
import pytest
from checks import assert_clear_error, torch
from hypothesis import assume, given
from hypothesis import strategies as st
from naive import assert_close
from strategies import DTYPES, LAYOUTS

import numbaconv


def scatter_ref(x, w, bias, stride, pads, output_padding, groups, dilation):
    """PyTorch's conv_transpose2d by its definition: every input pixel times the
    kernel is added into the output at ``h * stride + k * dilation - pad``.

    NCHW x and (C_in, O/groups, KH, KW) weight; float64; no numbaconv inside.
    """
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    (sh, sw), (dh, dw), (oph, opw) = stride, dilation, output_padding
    pt, pb, pl, pr = pads
    hout = (h - 1) * sh - pt - pb + dh * (kh - 1) + 1 + oph
    wout = (wd - 1) * sw - pl - pr + dw * (kw - 1) + 1 + opw
    cg = c // groups
    out = np.zeros((n, og * groups, hout, wout))
    for i in range(kh):
        for j in range(kw):
            for hh in range(h):
                r = hh * sh + i * dh - pt
                if not 0 <= r < hout:
                    continue
                for ww in range(wd):
                    s = ww * sw + j * dw - pl
                    if not 0 <= s < wout:
                        continue
                    for g in range(groups):
                        xs = x[:, g * cg : (g + 1) * cg, hh, ww]  # (n, cg)
                        out[:, g * og : (g + 1) * og, r, s] += xs @ w[g * cg : (g + 1) * cg,
                                                                      :, i, j]
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return out


def to_nhwc(a):
    return np.moveaxis(a, 1, -1)


def weight_to_nhwc(w):
    """(C_in, O/groups, KH, KW) -> (KH, KW, O/groups, C_in), TensorFlow's filter order."""
    return np.transpose(w, (2, 3, 1, 0))


def run(x, w, b, layout, **kw):
    """conv_transpose2d on NCHW data in either layout; the result comes back NCHW."""
    if layout == "NCHW":
        return numbaconv.conv_transpose2d(x, w, b, **kw)
    return np.moveaxis(numbaconv.conv_transpose2d(to_nhwc(x), weight_to_nhwc(w), b,
                                                  layout="NHWC", **kw), -1, 1)


@st.composite
def transpose_problems(draw):
    groups = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = draw(st.integers(0, 2))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    op = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation, strict=True))
    hout = (h - 1) * stride[0] - pads[0] - pads[1] + dilation[0] * (kh - 1) + 1 + op[0]
    wout = (w - 1) * stride[1] - pads[2] - pads[3] + dilation[1] * (kw - 1) + 1 + op[1]
    assume(hout >= 1 and wout >= 1)
    form = draw(st.sampled_from(["explicit", "pair", "output_size"]))
    if form == "pair" or form == "output_size":
        assume(pads[0] == pads[1] and pads[2] == pads[3])
    return dict(n=n, groups=groups, c=groups * cg, og=og, h=h, w=w, kh=kh, kw=kw,
                stride=stride, dilation=dilation, pads=pads, op=op, form=form)


def call_kwargs(p):
    pt, pb, pl, pr = p["pads"]
    kw = dict(stride=p["stride"], dilation=p["dilation"], groups=p["groups"])
    if p["form"] == "explicit":
        kw.update(padding=((pt, pb), (pl, pr)), output_padding=p["op"])
    elif p["form"] == "pair":
        kw.update(padding=(pt, pl), output_padding=p["op"])
    else:
        # output_size can only reach output_padding < stride (PyTorch's rule).
        assume(p["op"][0] < p["stride"][0] and p["op"][1] < p["stride"][1])
        hmin = (p["h"] - 1) * p["stride"][0] - 2 * pt + p["dilation"][0] * (p["kh"] - 1) + 1
        wmin = (p["w"] - 1) * p["stride"][1] - 2 * pl + p["dilation"][1] * (p["kw"] - 1) + 1
        kw.update(padding=(pt, pl), output_size=(hmin + p["op"][0], wmin + p["op"][1]))
    return kw


@given(p=transpose_problems(), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
       with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_scatter_reference(p, dtype, layout, with_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((p["n"], p["c"], p["h"], p["w"])).astype(dtype)
    w = rng.standard_normal((p["c"], p["og"], p["kh"], p["kw"])).astype(dtype)
    b = rng.standard_normal(p["og"] * p["groups"]).astype(dtype) if with_bias else None
    y = run(x, w, b, layout, **call_kwargs(p))
    ref = scatter_ref(x, w, b, p["stride"], p["pads"], p["op"], p["groups"], p["dilation"])
    assert y.dtype == dtype
    assert_close(y, ref, dtype)


@given(p=transpose_problems(), layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_adjoint_of_conv2d(p, layout, seed):
    # <conv2d(z, w), x> == <z, conv_transpose2d(x, w)> for z of the transposed
    # output's size: the weight (C_in, O/groups, KH, KW) is conv2d's OIHW.
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((p["n"], p["c"], p["h"], p["w"]))
    w = rng.standard_normal((p["c"], p["og"], p["kh"], p["kw"]))
    kw = call_kwargs(p)
    y = run(x, w, None, layout, **kw)
    z = rng.standard_normal(y.shape)
    pt, pb, pl, pr = p["pads"]
    conv_kw = dict(stride=p["stride"], dilation=p["dilation"], groups=p["groups"],
                   padding=((pt, pb), (pl, pr)))
    # conv2d of z has at least x's size; output_padding rows beyond a stride are cropped.
    if layout == "NCHW":
        cz = numbaconv.conv2d(z, w, **conv_kw)[:, :, : p["h"], : p["w"]]
    else:
        cz = np.moveaxis(numbaconv.conv2d(to_nhwc(z), np.transpose(w, (2, 3, 1, 0)),
                                          layout="NHWC", **conv_kw), -1, 1)[:, :, : p["h"],
                                                                            : p["w"]]
    lhs, rhs = float(np.sum(cz * x)), float(np.sum(z * y))
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs), float(np.abs(y).max(initial=0)))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unreachable_rows_of_output_padding(layout, rng):
    # dilation > stride lets output_padding exceed the bottom padding by a
    # whole stride: those rows are beyond every tap and hold only the bias.
    x = rng.standard_normal((2, 2, 3, 4))
    w = rng.standard_normal((2, 3, 2, 2))
    b = rng.standard_normal(3)
    kw = dict(stride=1, padding=0, output_padding=(2, 1), dilation=(3, 2))
    y = run(x, w, b, layout, **kw)
    ref = scatter_ref(x, w, b, (1, 1), (0, 0, 0, 0), (2, 1), 1, (3, 2))
    assert_close(y, ref, np.float64)
    np.testing.assert_allclose(y[:, :, -2:], np.broadcast_to(b[:, None, None], (2, 3, 2, 7)))
    # Here no output row at all is reachable: the result is the bias alone.
    x1, w1 = x[:1, :, :1, :1], w[:, :, :1, :1]
    kw = dict(padding=((1, 0), (0, 0)), output_padding=(2, 0), dilation=(3, 1))
    y = run(x1, w1, b, layout, **kw)
    assert y.shape == (1, 3, 2, 1)
    assert_close(y, scatter_ref(x1, w1, b, (1, 1), (1, 0, 0, 0), (2, 0), 1, (3, 1)), np.float64)
    np.testing.assert_array_equal(y, np.broadcast_to(b[:, None, None], y.shape))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unbatched_and_empty(layout, rng):
    x = rng.standard_normal((3, 4, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    full = numbaconv.conv_transpose2d(x[None], w, stride=2, output_padding=1)
    one = numbaconv.conv_transpose2d(x, w, stride=2, output_padding=1)
    np.testing.assert_array_equal(one, full[0])
    if layout == "NHWC":
        got = numbaconv.conv_transpose2d(np.moveaxis(x, 0, -1), weight_to_nhwc(w), stride=2,
                                         output_size=(10, 12), layout="NHWC")
        np.testing.assert_allclose(np.moveaxis(got, -1, 0), one, atol=1e-13)
        got = numbaconv.conv_transpose2d(np.moveaxis(x, 0, -1), weight_to_nhwc(w), stride=2,
                                         output_size=(10, 12, 2), layout="NHWC")
        assert got.shape == (10, 12, 2)
    else:
        got = numbaconv.conv_transpose2d(x, w, stride=2, output_size=(2, 10, 12))
        np.testing.assert_array_equal(got, one)
    empty = run(np.zeros((0, 3, 4, 5)), w, None, layout, stride=2)
    assert empty.shape == (0, 2, 9, 11)


# PyTorch is an optional peer: these tests skip without it.


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [
    dict(stride=2, padding=1, output_padding=1, groups=1, dilation=1),
    dict(stride=(3, 2), padding=(0, 2), output_padding=(2, 0), groups=2, dilation=(1, 2)),
    dict(stride=1, padding=1, output_padding=(1, 2), groups=2, dilation=(2, 3)),
], ids=["s2-p1-op1", "s32-g2-d12", "s1-dilated-op"])
def test_matches_pytorch(case, layout, rng):
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(3 * case["groups"])
    ref = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w),
                                               torch.from_numpy(b), **case).numpy()
    assert_close(run(x, w, b, layout, **case), ref, np.float64)


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("size", [(9, 11), (10, 12)])
def test_output_size_matches_pytorch_module(size, rng):
    x = rng.standard_normal((1, 4, 5, 6))
    layer = torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, dtype=torch.float64)
    ref = layer(torch.from_numpy(x), output_size=list(size)).detach().numpy()
    got = numbaconv.conv_transpose2d(x, layer.weight.detach().numpy(),
                                     layer.bias.detach().numpy(), stride=2, padding=1,
                                     output_size=size)
    assert_close(got, ref, np.float64)


X = np.zeros((2, 4, 5, 5))
W = np.zeros((4, 3, 3, 3))
XN = np.zeros((2, 5, 5, 4))


def tconv(**kw):
    args = dict(x=X, weight=W)
    args.update(kw)
    return numbaconv.conv_transpose2d(**args)


BAD = [
    ("output_padding-stride", lambda: tconv(stride=2, output_padding=2), ValueError,
     ["output_padding", "max(stride, dilation)", "(2, 2)"]),
    ("output_padding-per-axis", lambda: tconv(stride=(2, 1), output_padding=(1, 1)),
     ValueError, ["output_padding", "(2, 1)", "(1, 1)"]),
    ("output_padding-dilation-ok-but-3", lambda: tconv(dilation=3, output_padding=3),
     ValueError, ["output_padding", "(3, 3)"]),
    ("output_padding-negative", lambda: tconv(output_padding=-1), ValueError,
     ["output_padding", ">= 0"]),
    ("output_size-unreachable", lambda: tconv(stride=2, output_size=(13, 11)), ValueError,
     ["output_size", "(13, 11)", "(11, 11)", "(12, 12)"]),
    ("output_size-too-small", lambda: tconv(output_size=(6, 7)), ValueError,
     ["output_size", "(7, 7)"]),
    ("output_size-type", lambda: tconv(output_size=7), TypeError, ["output_size", "7"]),
    ("output_size-len", lambda: tconv(output_size=(1, 2, 7)), TypeError,
     ["output_size", "(1, 2, 7)"]),
    ("output_size-vs-padding", lambda: tconv(stride=2, output_padding=1, output_size=(11, 11)),
     ValueError, ["output_padding", "(0, 0)", "(1, 1)"]),
    ("padding-string", lambda: tconv(padding="full"), ValueError, ["padding", "'full'"]),
    ("padding-negative", lambda: tconv(padding=-1), ValueError, ["padding", ">= 0"]),
    ("output-empty", lambda: tconv(padding=4), ValueError, ["x", "output would be -1x-1"]),
    ("channels", lambda: tconv(weight=np.zeros((3, 3, 3, 3))), ValueError,
     ["weight", "4 input channels", "got 3", "(C_in, O/groups, KH, KW)"]),
    ("channels-nhwc", lambda: numbaconv.conv_transpose2d(XN, np.zeros((3, 3, 3, 5)),
                                                         layout="NHWC"), ValueError,
     ["weight", "got 5", "(KH, KW, O/groups, C_in)"]),
    ("groups", lambda: tconv(groups=3), ValueError, ["groups", "input channels 4", "groups=3"]),
    ("groups-zero", lambda: tconv(groups=0), ValueError, ["groups", ">= 1"]),
    ("groups-type", lambda: tconv(groups="2"), TypeError, ["groups", "'2'"]),
    ("stride", lambda: tconv(stride=0), ValueError, ["stride", ">= 1"]),
    ("dilation-type", lambda: tconv(dilation=(1, 1.0)), TypeError, ["dilation"]),
    ("bias", lambda: tconv(bias=np.zeros(4)), ValueError, ["bias", "(3,)", "(4,)"]),
    ("x-ndim", lambda: tconv(x=np.zeros((4, 5))), ValueError, ["x", "3-d", "(4, 5)"]),
    ("weight-ndim", lambda: tconv(weight=np.zeros((4, 3, 3))), ValueError,
     ["weight", "4-d", "(C_in, O/groups, KH, KW)"]),
    ("x-dtype", lambda: tconv(x=X.astype(np.int64)), TypeError, ["x", "int64"]),
    ("layout", lambda: tconv(layout="NWHC"), ValueError, ["layout", "'NWHC'"]),
    ("weight-zero", lambda: tconv(weight=np.zeros((4, 0, 3, 3))), ValueError,
     ["weight", ">= 1"]),
]


@pytest.mark.parametrize("call, exc, words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_gets_a_clear_error(call, exc, words):
    assert_clear_error(call, exc, words)
