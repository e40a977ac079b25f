"""conv1d and conv3d, their gradients, transposes and layers, against the float64 reference.

Every rank runs on the 2-d engine; these tests check the lowering (the
unit height of 1-d, the depth fold of 3-d, its padding modes, its chunks
and its adjoint) through the public functions only.
"""

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from naive import (
    NP_PAD_MODE,
    assert_close,
    conv_transpose_nd_ref,
    convnd_grad_weight_ref,
    convnd_ref,
    from_last,
    same_pads,
    to_last,
    weight_from_last,
    weight_to_last,
)

import numbaconv
from numbaconv import config

FIRST = {1: "NCW", 3: "NCDHW"}
LAST = {1: "NWC", 3: "NDHWC"}
CONV = {1: numbaconv.conv1d, 3: numbaconv.conv3d}
BACKWARD = {1: numbaconv.conv1d_backward, 3: numbaconv.conv3d_backward}
TRANSPOSE = {1: numbaconv.conv_transpose1d, 3: numbaconv.conv_transpose3d}
MODES = list(NP_PAD_MODE)


@st.composite
def nd_problems(draw, rank, max_size=7, modes=MODES):
    groups = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = draw(st.integers(0, 2))
    sizes = tuple(draw(st.integers(1, max_size)) for _ in range(rank))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    form = draw(st.sampled_from(["int", "tuple", "pairs", "same", "valid"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
        pads = (padding,) * (2 * rank)
    elif form == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(rank))
        pads = tuple(p for p in padding for _ in (0, 1))
    elif form == "pairs":
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(rank))
        pads = tuple(v for pair in padding for v in pair)
    elif form == "valid":
        padding, pads = "valid", (0,) * (2 * rank)
    else:
        padding = "same"
        pads = tuple(v for i in range(rank)
                     for v in same_pads(sizes[i], kernel[i], stride[i], dilation[i]))
    mode = draw(st.sampled_from(modes))
    for i in range(rank):
        lo, hi = pads[2 * i], pads[2 * i + 1]
        assume((kernel[i] - 1) * dilation[i] + 1 <= sizes[i] + lo + hi)
        assume(mode != "reflect" or max(lo, hi) < sizes[i])
        assume(mode != "circular" or max(lo, hi) <= sizes[i])
    return dict(n=n, c=groups * cg, o=groups * og, sizes=sizes, kernel=kernel, groups=groups,
                stride=stride, dilation=dilation, padding=padding, pads=pads, mode=mode)


def _arrays(p, rng, dtype, bias=True):
    x = rng.standard_normal((p["n"], p["c"], *p["sizes"])).astype(dtype)
    w = rng.standard_normal((p["o"], p["c"] // p["groups"], *p["kernel"])).astype(dtype)
    b = rng.standard_normal(p["o"]).astype(dtype) if bias else None
    return x, w, b


def _kwargs(p):
    return dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
                groups=p["groups"], padding_mode=p["mode"])


def _ref(p, x, w, b):
    return convnd_ref(x, w, b, p["stride"], p["pads"], p["dilation"], p["groups"], p["mode"])


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("last", [False, True], ids=["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_forward_matches_the_reference(rank, last, dtype, data):
    p = data.draw(nd_problems(rank))
    x, w, b = _arrays(p, np.random.default_rng(0), dtype, bias=data.draw(st.booleans()))
    ref = _ref(p, x, w, b)
    if last:
        y = from_last(CONV[rank](to_last(x), weight_to_last(w), b, layout=LAST[rank],
                                 **_kwargs(p)))
    else:
        y = CONV[rank](x, w, b, layout=FIRST[rank], **_kwargs(p))
    assert y.dtype == dtype
    assert_close(y, ref, dtype)


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("last", [False, True], ids=["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_gradients_match_the_reference(rank, last, dtype, data):
    """grad_weight and grad_bias against the reference; grad_x by the adjoint identity
    <grad_x, v> = <grad_out, conv(v)> with the reference conv, for random v."""
    p = data.draw(nd_problems(rank))
    rng = np.random.default_rng(1)
    x, w, _ = _arrays(p, rng, dtype, bias=False)
    y_shape = _ref(p, x, w, None).shape
    gout = rng.standard_normal(y_shape).astype(dtype)
    if last:
        gx, gw, gb = BACKWARD[rank](to_last(gout), to_last(x), weight_to_last(w),
                                    layout=LAST[rank], **_kwargs(p))
        gx, gw = from_last(gx), weight_from_last(gw)
    else:
        gx, gw, gb = BACKWARD[rank](gout, x, w, layout=FIRST[rank], **_kwargs(p))
    assert_close(gw, convnd_grad_weight_ref(x, w.shape, gout, p["stride"], p["pads"],
                                            p["dilation"], p["groups"], p["mode"]), dtype)
    assert_close(gb, gout.astype(np.float64).sum(axis=(0, *range(2, 2 + rank))), dtype)
    v = rng.standard_normal(x.shape)
    lhs = float(np.sum(gx.astype(np.float64) * v))
    rhs = float(np.sum(gout.astype(np.float64) * _ref(p, v, w, None)))
    scale = max(1.0, float(np.abs(gx).sum() * np.abs(v).max(initial=0.0)))
    tol = 2e-4 if dtype == np.float32 else 1e-9
    assert abs(lhs - rhs) <= tol * scale, (lhs, rhs)


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("last", [False, True], ids=["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_transpose_matches_the_reference(rank, last, dtype, data):
    groups = data.draw(st.integers(1, 2))
    c_in, og = groups * data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    n = data.draw(st.integers(0, 2))
    sizes = tuple(data.draw(st.integers(1, 5)) for _ in range(rank))
    kernel = tuple(data.draw(st.integers(1, 3)) for _ in range(rank))
    stride = tuple(data.draw(st.integers(1, 3)) for _ in range(rank))
    dilation = tuple(data.draw(st.integers(1, 2)) for _ in range(rank))
    pads = tuple(data.draw(st.integers(0, 2)) for _ in range(2 * rank))
    op = tuple(data.draw(st.integers(0, max(s, d) - 1))
               for s, d in zip(stride, dilation, strict=True))
    full = [(sizes[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 + op[i]
            for i in range(rank)]
    assume(all(f - pads[2 * i] - pads[2 * i + 1] >= 1 for i, f in enumerate(full)))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, c_in, *sizes)).astype(dtype)
    w = rng.standard_normal((c_in, og, *kernel)).astype(dtype)
    padding = tuple(zip(pads[::2], pads[1::2], strict=True))
    kw = dict(stride=stride, padding=padding, output_padding=op, groups=groups,
              dilation=dilation)
    ref = conv_transpose_nd_ref(x, w, stride, pads, op, dilation, groups)
    if last:
        y = from_last(TRANSPOSE[rank](to_last(x), weight_to_last(w), layout=LAST[rank], **kw))
    else:
        y = TRANSPOSE[rank](x, w, **kw)
    assert_close(y, ref, dtype)


@pytest.mark.parametrize("rank", [1, 3])
def test_depth_fold_in_chunks_and_unbatched(rank, monkeypatch):
    """A workspace bound of one folded row splits the 3-d fold into many chunks."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, *(6,) * rank))
    w = rng.standard_normal((5, 4, *(3,) * rank))
    kw = dict(stride=2 if rank == 1 else (1, 2, 1), padding=1, padding_mode="reflect")
    ref = CONV[rank](x, w, **kw)
    gref = BACKWARD[rank](np.ones_like(ref), x, w, **kw)
    monkeypatch.setattr(config, "max_workspace_bytes", 1)
    assert_close(CONV[rank](x, w, **kw), ref, np.float64)
    for got, want in zip(BACKWARD[rank](np.ones_like(ref), x, w, **kw), gref, strict=True):
        assert_close(got, want, np.float64)
    assert_close(CONV[rank](x[1], w, **kw), ref[1], np.float64)


@pytest.mark.parametrize("last", [False, True], ids=["channels_first", "channels_last"])
def test_depth_fold_chunks_straddle_images(last, monkeypatch):
    """Chunks of 2 or 3 folded rows cross image boundaries (D_out = 4), with groups."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 4, 7, 5, 6))
    w = rng.standard_normal((6, 2, 3, 2, 3))
    kw = dict(stride=(2, 1, 2), padding=((2, 1), (1, 1), (0, 0)), groups=2,
              padding_mode="replicate")
    ref = convnd_ref(x, w, None, (2, 1, 2), (2, 1, 1, 1, 0, 0), (1, 1, 1), 2, "replicate")
    gout = rng.standard_normal(ref.shape)
    gw_ref = convnd_grad_weight_ref(x, w.shape, gout, (2, 1, 2), (2, 1, 1, 1, 0, 0),
                                    (1, 1, 1), 2, "replicate")
    # The transposed convolution reads w as (C_in = 6, O = 2, KD, KH, KW).
    t_ref = conv_transpose_nd_ref(ref, w, (2, 1, 2), (1, 0, 1, 1, 0, 0), (1, 0, 1),
                                  (1, 1, 1), 1)
    layout = "NDHWC" if last else "NCDHW"
    row = 4 * 3 * 5 * 6 * 8  # one folded row's bytes: C * KD * H * W float64
    for rows in (2, 3):
        monkeypatch.setattr(config, "max_workspace_bytes", rows * row + 7)
        if last:
            y = from_last(numbaconv.conv3d(to_last(x), weight_to_last(w), layout=layout, **kw))
            gx, gw, _ = numbaconv.conv3d_backward(to_last(gout), to_last(x), weight_to_last(w),
                                                  layout=layout, **kw)
            gx, gw = from_last(gx), weight_from_last(gw)
            t = from_last(numbaconv.conv_transpose3d(
                to_last(ref), weight_to_last(w), stride=(2, 1, 2), padding=((1, 0), (1, 1), (0, 0)),
                output_padding=(1, 0, 1), layout=layout))
        else:
            y = numbaconv.conv3d(x, w, **kw)
            gx, gw, _ = numbaconv.conv3d_backward(gout, x, w, **kw)
            t = numbaconv.conv_transpose3d(ref, w, stride=(2, 1, 2),
                                           padding=((1, 0), (1, 1), (0, 0)),
                                           output_padding=(1, 0, 1))
        assert_close(y, ref, np.float64)
        assert_close(gw, gw_ref, np.float64)
        assert_close(t, t_ref, np.float64)
        v = rng.standard_normal(x.shape)  # grad_x by the adjoint identity
        lhs, rhs = float(np.sum(gx * v)), float(np.sum(gout * convnd_ref(
            v, w, None, (2, 1, 2), (2, 1, 1, 1, 0, 0), (1, 1, 1), 2, "replicate")))
        assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(rhs))


def test_transpose_valid_padding_is_tensorflows():
    x = np.ones((1, 1, 3))
    assert numbaconv.conv_transpose1d(x, np.ones((1, 1, 1)), stride=2,
                                      padding="valid").shape == (1, 1, 6)
    assert numbaconv.conv_transpose1d(x, np.ones((1, 1, 3)), stride=2,
                                      padding="valid").shape == (1, 1, 7)
    with pytest.raises(ValueError, match="output_size: padding='same' gives"):
        numbaconv.conv_transpose1d(x, np.ones((1, 1, 1)), stride=2, padding="same",
                                   output_size=(5,))


def test_transpose_same_padding_gives_input_times_stride():
    """TensorFlow/JAX 'same' and explicit asymmetric pads (ONNX SAME_UPPER/LOWER)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 3, 3))
    w = rng.standard_normal((2, 3, 3, 3))
    y = numbaconv.conv_transpose2d(x, w, stride=2, padding="same")
    assert y.shape == (1, 3, 6, 6)
    full = conv_transpose_nd_ref(x, w, (2, 2), (0, 0, 0, 0), (0, 0), (1, 1))  # 7x7
    assert_close(y, full[:, :, :6, :6], np.float64)  # 'same' crops the extra at the end
    lower = numbaconv.conv_transpose2d(x, w, stride=2, padding=((1, 0), (1, 0)))
    assert_close(lower, full[:, :, 1:, 1:], np.float64)
    y1 = numbaconv.conv_transpose1d(x[:, :, 0], w[:, :, 0], stride=3, padding="same")
    assert y1.shape == (1, 3, 9)


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("last", [False, True])
def test_layers_match_the_functions(rank, last):
    layout = LAST[rank] if last else FIRST[rank]
    layer_cls = numbaconv.Conv1d if rank == 1 else numbaconv.Conv3d
    layer = layer_cls(4, 6, 3, stride=2, padding="same", groups=2, layout=layout, rng=0,
                      dtype=np.float64)
    rng = np.random.default_rng(5)
    shape = (2, 4, *(7,) * rank)
    x = rng.standard_normal(shape)
    if last:
        x = to_last(x)
    y = layer(x)
    kw = dict(stride=2, padding="same", groups=2, layout=layout)
    np.testing.assert_allclose(y, CONV[rank](x, layer.weight, layer.bias, **kw))
    gy = rng.standard_normal(y.shape)
    gx = layer.backward(gy)
    want = BACKWARD[rank](gy, x, layer.weight, **kw)
    np.testing.assert_allclose(gx, want[0])
    np.testing.assert_allclose(layer.grad_weight, want[1])
    np.testing.assert_allclose(layer.grad_bias, want[2])
    fan_in = 2 * 3**rank
    assert np.abs(layer.weight).max() <= 1 / np.sqrt(fan_in)
    tcls = numbaconv.ConvTranspose1d if rank == 1 else numbaconv.ConvTranspose3d
    up = tcls(6, 4, 2, stride=2, layout=layout, rng=0, dtype=np.float64)
    z = up(y)
    np.testing.assert_allclose(z, TRANSPOSE[rank](y, up.weight, up.bias, stride=2,
                                                  layout=layout))
    assert up.backward(np.ones_like(z)).shape == y.shape
    assert "layout=" in repr(layer) and type(layer).__name__ in repr(layer)


def test_one_d_is_a_free_view_of_two_d():
    """1-d runs as 2-d with a unit height: the plan is the 2-d one, with P = 1."""
    plan = numbaconv.explain((8, 64, 1000), (128, 64, 3), padding=1)
    assert plan.rank == 1 and plan.lowered.geometry.h == 1
    assert plan.lowered.geometry.p == 1 and plan.lowered.geometry.q == 1000
    plan3 = numbaconv.explain((2, 8, 6, 10, 10), (16, 8, 3, 3, 3), padding=1)
    g = plan3.lowered.geometry
    assert (g.n, g.c, g.h, g.w, g.kh, g.kw) == (12, 24, 10, 10, 3, 3)
    assert "depth" in str(plan3)


BAD = [
    ("x-ndim", lambda: numbaconv.conv3d(np.zeros((1, 2, 3)), np.zeros((1, 2, 1, 1, 1))),
     ValueError, ["x", "5-d", "(N, C, D, H, W)"]),
    ("weight-ndim", lambda: numbaconv.conv1d(np.zeros((1, 2, 3)), np.zeros((1, 2, 1, 1))),
     ValueError, ["weight", "3-d", "OIW"]),
    ("layout", lambda: numbaconv.conv1d(np.zeros((1, 2, 3)), np.zeros((1, 2, 1)),
                                        layout="NCDHW"), ValueError, ["layout", "NCW"]),
    ("stride-length", lambda: numbaconv.conv3d(np.zeros((1, 1, 3, 3, 3)),
                                               np.zeros((1, 1, 1, 1, 1)), stride=(1, 2)),
     TypeError, ["stride", "3 ints"]),
    ("padding-pairs", lambda: numbaconv.conv1d(np.zeros((1, 1, 3)), np.zeros((1, 1, 1)),
                                               padding=((1, 1), (1, 1))),
     TypeError, ["padding", "1 (low, high) pairs"]),
    ("kernel-too-deep", lambda: numbaconv.conv3d(np.zeros((1, 1, 2, 3, 3)),
                                                 np.zeros((1, 1, 3, 1, 1))),
     ValueError, ["weight", "depth 3", "depth 2"]),
    ("reflect-depth", lambda: numbaconv.conv3d(np.zeros((1, 1, 2, 3, 3)),
                                               np.zeros((1, 1, 1, 1, 1)), padding=2,
                                               padding_mode="reflect"),
     ValueError, ["reflect", "depth 2"]),
    ("grad-out", lambda: numbaconv.conv1d_backward(np.zeros((1, 1, 9)), np.zeros((1, 1, 3)),
                                                   np.zeros((1, 1, 1))),
     ValueError, ["grad_out", "(1, 1, 3)"]),
    ("packed", lambda: numbaconv.conv1d(np.zeros((1, 1, 3)), numbaconv.pack_weight(
        np.zeros((1, 1, 1, 1), np.float32))), TypeError, ["weight", "PackedWeight"]),
    ("transpose-output-size", lambda: numbaconv.conv_transpose3d(
        np.zeros((1, 1, 2, 2, 2)), np.zeros((1, 1, 2, 2, 2)), stride=2,
        output_size=(9, 4, 4)), ValueError, ["output_size", "(4, 4, 4)", "(5, 5, 5)"]),
]


@pytest.mark.parametrize("name,call,error,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_clear_error(name, call, error, words):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 3, 4, 5, 5)), rng.standard_normal((2, 3, 2, 2, 2))
    x0, w0 = x.copy(), w.copy()
    numbaconv.conv3d(x, w, padding=1)
    numbaconv.conv3d_backward(np.ones((2, 2, 5, 6, 6)), x, w, padding=1)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


@pytest.mark.parametrize("rank", [1, 3])
def test_against_torch(rank):
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 6, *(9,) * rank)).astype(np.float32)
    w = rng.standard_normal((4, 3, *(3,) * rank)).astype(np.float32)
    conv = f.conv1d if rank == 1 else f.conv3d
    for mode, kw in itertools.product(["zeros", "circular"], [dict(stride=2, dilation=2)]):
        xt = torch.from_numpy(x)
        if mode != "zeros":
            xt = f.pad(xt, (1, 1) * rank, mode=mode)
        want = conv(xt, torch.from_numpy(w), padding=1 if mode == "zeros" else 0, groups=2,
                    **kw).numpy()
        got = CONV[rank](x, w, padding=1, groups=2, padding_mode=mode, **kw)
        assert_close(got, want, np.float32)


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("last", [False, True], ids=["channels_first", "channels_last"])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_im2col_and_col2im_in_every_rank(rank, last, data):
    """Columns against the reference's taps; col2im by the adjoint identity."""
    from naive import _tap_windows

    p = data.draw(nd_problems(rank, max_size=6))
    rng = np.random.default_rng(8)
    x = rng.standard_normal((p["n"], p["c"], *p["sizes"]))
    taps = list(_tap_windows(x, p["kernel"], p["stride"], p["dilation"], p["pads"], p["mode"]))
    out = taps[0][1].shape[2:]
    # ref[n, c, t, l]: channel c, tap t (row-major), output position l
    length = int(np.prod(out))
    ref = np.stack([win.reshape(p["n"], p["c"], length) for _, win in taps], axis=2)
    kw = dict(stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
              padding_mode=p["mode"])
    layout = LAST[rank] if last else FIRST[rank]
    if last:
        cols = numbaconv.im2col(to_last(x), p["kernel"], layout=layout, **kw)
        want = ref.transpose(0, 3, 2, 1).reshape(p["n"], length, len(taps) * p["c"])
    else:
        cols = numbaconv.im2col(x, p["kernel"], layout=layout, **kw)
        want = ref.reshape(p["n"], p["c"] * len(taps), length)
    assert_close(cols, want, np.float64)
    v = rng.standard_normal(cols.shape)
    back = numbaconv.col2im(v, p["sizes"], p["kernel"], layout=layout, **kw)
    xl = to_last(x) if last else x
    assert back.shape == xl.shape and length == cols.shape[1 + (not last)]
    lhs, rhs = float(np.sum(back * xl)), float(np.sum(v * cols))
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(rhs), float(np.abs(v).sum()))
