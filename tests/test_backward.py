"""conv2d_backward / conv2d_grad_input / conv2d_grad_weight.

Checked three independent ways: a float64 reference gradient (naive.py's
``grads_ref``, from tap windows and np.pad's index maps), finite-difference
directional derivatives of a quadratic loss, and (when installed) PyTorch's
autograd.
"""

import numpy as np
import pytest
from checks import assert_clear_error, torch
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import assert_close, conv2d_ref, from_nhwc, grads_ref, to_hwio, to_nhwc
from strategies import DTYPES, LAYOUTS, conv_problems

import numbaconv


def make(prob, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((prob["n"], prob["c"], prob["h"], prob["w"])).astype(dtype)
    w = rng.standard_normal((prob["o"], prob["c"] // prob["groups"], prob["kh"], prob["kw"]))
    return rng, x, w.astype(dtype)


def conv_kw(prob):
    return dict(stride=prob["stride_arg"], padding=prob["padding"], dilation=prob["dil_arg"],
                groups=prob["groups"], padding_mode=prob["mode"])


def backward(gout, x, w, layout, **kw):
    """conv2d_backward on NCHW/OIHW data in either layout; results come back NCHW/OIHW."""
    if layout == "NCHW":
        return numbaconv.conv2d_backward(gout, x, w, **kw)
    gx, gw, gb = numbaconv.conv2d_backward(to_nhwc(gout), to_nhwc(x), to_hwio(w),
                                           layout="NHWC", **kw)
    return (None if gx is None else from_nhwc(gx),
            None if gw is None else np.transpose(gw, (3, 2, 0, 1)), gb)


def forward(x, w, layout, **kw):
    if layout == "NCHW":
        return numbaconv.conv2d(x, w, **kw)
    return from_nhwc(numbaconv.conv2d(to_nhwc(x), to_hwio(w), layout="NHWC", **kw))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
@pytest.mark.parametrize("multiplier, stride, dilation", [(1, 1, 1), (2, 2, 1), (1, 2, 2)])
def test_depthwise_gradients(layout, dtype, mode, multiplier, stride, dilation, rng):
    # MobileNet-like sizes (the hypothesis problems have only 2-3 channels):
    # the direct depthwise gradient kernels, against the reference.
    c, n = 24, 3
    x = rng.standard_normal((n, c, 13, 11)).astype(dtype)
    w = rng.standard_normal((c * multiplier, 1, 3, 3)).astype(dtype)
    kw = dict(stride=stride, padding=dilation, dilation=dilation, groups=c, padding_mode=mode)
    gout = rng.standard_normal(forward(x, w, layout, **kw).shape).astype(dtype)
    ref = grads_ref(x, w, gout, (stride,) * 2, (dilation,) * 4, (dilation,) * 2, c, mode)
    for got, want in zip(backward(gout, x, w, layout, **kw), ref, strict=True):
        assert_close(got, want, dtype)


# --------------------------------------------------------------------------
# Against the reference and by finite differences
# --------------------------------------------------------------------------
@given(prob=conv_problems(), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
       seed=st.integers(0, 2**16))
def test_gradients_match_reference(prob, dtype, layout, seed):
    rng, x, w = make(prob, dtype, seed)
    kw = conv_kw(prob)
    y = forward(x, w, layout, **kw)
    gout = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = backward(gout, x, w, layout, **kw)
    ref = grads_ref(x, w, gout, prob["stride"], prob["pads"], prob["dilation"], prob["groups"],
                    prob["mode"])
    for got, want in zip((gx, gw, gb), ref, strict=True):
        assert got.dtype == dtype
        assert_close(got, want, dtype)


@settings(max_examples=60)
@given(prob=conv_problems(), layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_directional_derivatives(prob, layout, seed):
    # loss = 0.5 * |conv2d(x, w) + b - t|^2 is quadratic in each argument, so
    # the central difference is exact up to rounding: the gradient must agree
    # with it to float64 precision along any direction.
    rng, x, w = make(prob, np.float64, seed)
    b = rng.standard_normal(prob["o"])
    kw = conv_kw(prob)
    t = rng.standard_normal(forward(x, w, layout, **kw).shape)

    def loss(x, w, b):
        r = forward(x, w, layout, **kw) + b[:, None, None] - t
        return 0.5 * float(np.sum(r * r))

    gout = forward(x, w, layout, **kw) + b[:, None, None] - t
    grads = backward(gout, x, w, layout, **kw)
    eps = 1e-3
    args = [x, w, b]
    for k, grad in enumerate(grads):
        v = rng.standard_normal(args[k].shape)
        plus = [a + eps * v if i == k else a for i, a in enumerate(args)]
        minus = [a - eps * v if i == k else a for i, a in enumerate(args)]
        fd = (loss(*plus) - loss(*minus)) / (2 * eps)
        exact = float(np.sum(grad * v))
        assert abs(fd - exact) <= 1e-7 * max(1.0, abs(exact), loss(*args)), (k, fd, exact)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", [
    # (N, C, H, W, O, k, stride, pad, groups): pointwise, 3x3, strided 3x3 and
    # depthwise (whose forward runs a direct kernel), each with NCHW's GEMMs
    # batched over the images (small images) and per image.
    (3, 6, 5, 4, 4, 1, 1, 0, 2),
    (4, 8, 3, 3, 24, 3, 1, 1, 2),
    (2, 8, 2, 2, 32, 1, 1, 0, 1),
    (2, 32, 14, 14, 16, 3, 2, 1, 1),
    (3, 6, 6, 5, 12, 3, 1, 1, 6),
], ids=lambda c: "N{}-C{}-{}x{}-O{}-k{}-s{}-p{}-g{}".format(*c))
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-image"])
def test_special_paths(case, batched, dtype, layout, rng, restore_config):
    restore_config.gemm_batch_below = 10**9 if batched else 0
    n, c, h, wd, o, k, s, p, groups = case
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = rng.standard_normal((o, c // groups, k, k)).astype(dtype)
    gout = rng.standard_normal(conv2d_ref(x, w, None, (s, s), (p,) * 4, groups=groups).shape)
    gout = gout.astype(dtype)
    got = backward(gout, x, w, layout, stride=s, padding=p, groups=groups)
    ref = grads_ref(x, w, gout, (s, s), (p,) * 4, groups=groups)
    for a, b in zip(got, ref, strict=True):
        assert_close(a, b, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("limit", [1, 5000], ids=lambda v: f"limit={v}")
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-image"])
def test_chunked_workspace(layout, limit, batched, rng, restore_config):
    # A tiny bound forces bands of output rows; a medium one batches images.
    restore_config.max_workspace_bytes = limit
    restore_config.gemm_batch_below = 10**9 if batched else 0
    x = rng.standard_normal((5, 4, 11, 9))
    w = rng.standard_normal((6, 2, 3, 2))
    kw = dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2,
              padding_mode="reflect")
    gout = rng.standard_normal(forward(x, w, layout, **kw).shape)
    assert numbaconv.explain(x, w, **kw).chunks > 1
    got = backward(gout, x, w, layout, **kw)
    ref = grads_ref(x, w, gout, (2, 1), (1, 2, 0, 1), (1, 2), 2, "reflect")
    for a, b in zip(got, ref, strict=True):
        assert_close(a, b, np.float64)


# --------------------------------------------------------------------------
# The API around it
# --------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_standalone_functions_and_needs(layout, rng):
    x = rng.standard_normal((2, 4, 7, 6))
    w = rng.standard_normal((6, 2, 3, 3))
    kw = dict(stride=2, padding=1, groups=2, padding_mode="circular")
    if layout == "NHWC":
        x, w = to_nhwc(x), to_hwio(w)
    gout = rng.standard_normal(numbaconv.conv2d(x, w, layout=layout, **kw).shape)
    gx, gw, gb = numbaconv.conv2d_backward(gout, x, w, layout=layout, **kw)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == (6,)
    np.testing.assert_array_equal(
        numbaconv.conv2d_grad_input(x.shape, w, gout, layout=layout, **kw), gx)
    np.testing.assert_array_equal(numbaconv.conv2d_grad_input(x, w, gout, layout=layout, **kw),
                                  gx)
    np.testing.assert_array_equal(
        numbaconv.conv2d_grad_weight(x, w.shape, gout, layout=layout, **kw), gw)
    np.testing.assert_array_equal(
        numbaconv.conv2d_grad_weight(x, list(w.shape), gout, layout=layout, **kw), gw)
    for needs in [(True, False, False), (False, True, False), (False, False, True),
                  (False, False, False)]:
        got = numbaconv.conv2d_backward(gout, x, w, layout=layout, needs=needs, **kw)
        for want, have, full in zip(needs, got, (gx, gw, gb), strict=True):
            if want:
                np.testing.assert_array_equal(have, full)
            else:
                assert have is None


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unbatched_and_empty_batch(layout, rng):
    x = rng.standard_normal((3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    gout = rng.standard_normal((4, 6, 5))
    if layout == "NHWC":
        x, w, gout = np.moveaxis(x, 0, -1), to_hwio(w), np.moveaxis(gout, 0, -1)
    gx, gw, gb = numbaconv.conv2d_backward(gout, x, w, padding=1, layout=layout)
    bx, bw, bb = numbaconv.conv2d_backward(gout[None], x[None], w, padding=1, layout=layout)
    assert gx.shape == x.shape
    np.testing.assert_array_equal(gx, bx[0])
    np.testing.assert_array_equal(gw, bw)
    np.testing.assert_array_equal(gb, bb)
    assert numbaconv.conv2d_grad_input(x.shape, w, gout, padding=1, layout=layout).shape == (
        x.shape)
    empty_x = np.zeros((0, *x.shape))
    empty_g = np.zeros((0, *gout.shape))
    gx, gw, gb = numbaconv.conv2d_backward(empty_g, empty_x, w, padding=1, layout=layout)
    assert gx.shape == empty_x.shape and gw.shape == w.shape and gb.shape == (4,)
    assert not gw.any() and not gb.any()


@pytest.mark.parametrize("gdt, xdt, wdt, expected", [
    (np.float32, np.float32, np.float32, np.float32),
    (np.float64, np.float32, np.float32, np.float64),
    (np.float32, np.float64, np.float32, np.float64),
])
def test_result_dtype(gdt, xdt, wdt, expected, rng):
    x = rng.standard_normal((2, 2, 5, 5)).astype(xdt)
    w = rng.standard_normal((3, 2, 3, 3)).astype(wdt)
    gout = rng.standard_normal((2, 3, 3, 3)).astype(gdt)
    for grad in numbaconv.conv2d_backward(gout, x, w):
        assert grad.dtype == expected


def test_array_likes_are_accepted_and_never_modified(rng):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    gout = rng.standard_normal((2, 4, 7, 6))
    ref = numbaconv.conv2d_backward(gout, x, w, padding=1)
    xf, wt = np.asfortranarray(x), w.transpose(3, 2, 1, 0).copy().transpose(3, 2, 1, 0)
    ro = gout.copy()
    ro.flags.writeable = False
    before = [a.copy() for a in (xf, wt, ro)]
    got = numbaconv.conv2d_backward(ro, xf, wt, padding=1)
    got_list = numbaconv.conv2d_backward(gout.tolist(), x.tolist(), w.tolist(), padding=1)
    for a, b, c in zip(ref, got, got_list, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(c, a, rtol=1e-14, atol=1e-14)
    for a, b in zip((xf, wt, ro), before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_resnet_sized_float32(layout, rng):
    # Long reductions (N*P*Q = 392 terms per weight gradient entry) in float32.
    x = rng.standard_normal((2, 64, 14, 14)).astype(np.float32)
    w = (rng.standard_normal((32, 64, 3, 3)) / 24).astype(np.float32)
    gout = rng.standard_normal((2, 32, 14, 14)).astype(np.float32)
    got = backward(gout, x, w, layout, padding=1)
    ref = grads_ref(x, w, gout, pads=(1, 1, 1, 1))
    for a, b in zip(got, ref, strict=True):
        assert_close(a, b, np.float32)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------
X = np.zeros((2, 4, 8, 8), np.float32)
W = np.zeros((6, 4, 3, 3), np.float32)
G = np.zeros((2, 6, 6, 6), np.float32)


def bwd(**kw):
    args = dict(grad_out=G, x=X, weight=W)
    args.update(kw)
    return numbaconv.conv2d_backward(**args)


BAD = [
    ("grad_out-shape", lambda: bwd(grad_out=np.zeros((2, 6, 8, 8))), ValueError,
     ["grad_out", "(2, 6, 6, 6)", "(2, 6, 8, 8)"]),
    ("grad_out-stride", lambda: bwd(stride=2), ValueError, ["grad_out", "(2, 6, 3, 3)"]),
    ("grad_out-nhwc", lambda: numbaconv.conv2d_backward(
        np.zeros((2, 6, 7, 6)), np.zeros((2, 9, 8, 4)), np.zeros((3, 3, 4, 6)), layout="NHWC"),
     ValueError, ["grad_out", "(2, 7, 6, 6)", "(2, 6, 7, 6)"]),
    ("grad_out-unbatched", lambda: bwd(x=X[0]), ValueError, ["grad_out", "(6, 6, 6)"]),
    ("grad_out-dtype", lambda: bwd(grad_out=G.astype(np.int32)), TypeError,
     ["grad_out", "int32"]),
    ("grad_out-ragged", lambda: bwd(grad_out=[[1.0], [2.0, 3.0]]), ValueError,
     ["grad_out", "ragged"]),
    ("x-ndim", lambda: bwd(x=np.zeros((4, 8))), ValueError, ["x", "4-d", "(4, 8)"]),
    ("weight-ndim", lambda: bwd(weight=np.zeros((6, 4, 3))), ValueError, ["weight", "OIHW"]),
    ("channels", lambda: bwd(weight=np.zeros((6, 3, 3, 3))), ValueError,
     ["weight", "4 input channels", "got 3"]),
    ("groups", lambda: bwd(groups=3), ValueError, ["groups", "groups=3"]),
    ("stride", lambda: bwd(stride=0), ValueError, ["stride", ">= 1"]),
    ("dilation-type", lambda: bwd(dilation=1.5), TypeError, ["dilation", "1.5"]),
    ("padding", lambda: bwd(padding="full"), ValueError, ["padding", "'full'"]),
    ("padding-mode", lambda: bwd(padding_mode="mirror"), ValueError, ["padding_mode"]),
    ("reflect-too-big", lambda: bwd(padding=8, padding_mode="reflect"), ValueError,
     ["padding", "reflect"]),
    ("kernel-too-big", lambda: bwd(x=np.zeros((2, 4, 2, 8))), ValueError,
     ["weight", "padded input height 2"]),
    ("layout", lambda: bwd(layout="CHWN"), ValueError, ["layout", "'CHWN'"]),
    ("x-dtype", lambda: bwd(x=X.astype(np.float16)), TypeError, ["x", "float16"]),
    ("needs-len", lambda: bwd(needs=(True, True)), TypeError, ["needs", "three bools"]),
    ("needs-type", lambda: bwd(needs=(1, 1, 1)), TypeError, ["needs", "(1, 1, 1)"]),
    ("needs-str", lambda: bwd(needs="xwb"), TypeError, ["needs", "'xwb'"]),
    ("input_size-len", lambda: numbaconv.conv2d_grad_input((8, 8), W, G), ValueError,
     ["input_size", "3 or 4", "(8, 8)"]),
    ("input_size-type", lambda: numbaconv.conv2d_grad_input("2x4x8x8", W, G), TypeError,
     ["input_size", "shape"]),
    ("input_size-negative", lambda: numbaconv.conv2d_grad_input((-2, 4, 8, 8), W, G),
     ValueError, ["input_size", "non-negative"]),
    ("input_size-grad", lambda: numbaconv.conv2d_grad_input((2, 4, 9, 9), W, G), ValueError,
     ["grad_out", "(2, 6, 7, 7)", "input_size"]),
    ("input_size-channels", lambda: numbaconv.conv2d_grad_input((2, 5, 8, 8), W, G),
     ValueError, ["weight", "5 input channels"]),
    ("weight_size-len", lambda: numbaconv.conv2d_grad_weight(X, (6, 4, 3), G), ValueError,
     ["weight_size", "4", "(6, 4, 3)"]),
    ("weight_size-grad", lambda: numbaconv.conv2d_grad_weight(X, (6, 4, 5, 5), G), ValueError,
     ["grad_out", "(2, 6, 4, 4)", "weight_size"]),
    ("weight_size-channels", lambda: numbaconv.conv2d_grad_weight(X, (6, 2, 3, 3), G),
     ValueError, ["weight_size", "4 input channels", "got 2"]),
]


@pytest.mark.parametrize("call, exc, words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_gets_a_clear_error(call, exc, words):
    assert_clear_error(call, exc, words)


# --------------------------------------------------------------------------
# PyTorch autograd, where installed
# --------------------------------------------------------------------------
# PyTorch is an optional peer: these tests skip without it.


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_matches_torch_autograd(mode, dtype, layout, rng):
    x = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
    w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
    layer = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=2, dilation=(1, 2), groups=2,
                            padding_mode=mode, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w.astype(np.float64)))
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_()
    y = layer(xt)
    gout = rng.standard_normal(tuple(y.shape)).astype(dtype)
    y.backward(torch.from_numpy(gout.astype(np.float64)))
    got = backward(gout, x, w, layout, stride=(2, 1), padding=2, dilation=(1, 2), groups=2,
                   padding_mode=mode)
    refs = (xt.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy())
    for a, b in zip(got, refs, strict=True):
        assert a.dtype == dtype
        assert_close(a, b, dtype)
