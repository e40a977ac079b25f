"""Conv2d and ConvTranspose2d layers: against the functions, PyTorch's init, end to end."""

import math
import pathlib
import runpy

import numpy as np
import pytest
from checks import assert_clear_error, torch
from naive import assert_close
from strategies import LAYOUTS

import numbaconv

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def nhwc(a):
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


CONV_CASES = {
    "3x3-pad": dict(args=(4, 6, 3), kw=dict(padding=1), shape=(3, 4, 7, 6)),
    "strided-grouped-reflect": dict(args=(4, 6, (3, 2)),
                                    kw=dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2,
                                            padding_mode="reflect"),
                                    shape=(2, 4, 9, 8)),
    "pointwise": dict(args=(4, 6, 1), kw=dict(groups=2), shape=(2, 4, 5, 5)),
    "small-images": dict(args=(4, 16, 3), kw=dict(padding="same"), shape=(3, 4, 2, 2)),
    "no-bias": dict(args=(3, 5, 2), kw=dict(bias=False, padding=((0, 1), (1, 0))),
                    shape=(2, 3, 6, 5)),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("workspace", ["big", "tiny"])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_layer_matches_functions(case, workspace, layout, restore_config):
    # A tiny workspace bound makes the layer recompute the columns in
    # backward instead of keeping them from forward; both must agree.
    if workspace == "tiny":
        restore_config.max_workspace_bytes = 1
    spec = CONV_CASES[case]
    layer = numbaconv.Conv2d(*spec["args"], **spec["kw"], layout=layout, dtype=np.float64,
                             rng=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(spec["shape"])
    if layout == "NHWC":
        x = nhwc(x)
    fkw = {k: v for k, v in spec["kw"].items() if k != "bias"}
    y = layer.forward(x)
    np.testing.assert_allclose(y, numbaconv.conv2d(x, layer.weight, layer.bias, layout=layout,
                                                   **fkw), rtol=1e-13, atol=1e-13)
    gout = rng.standard_normal(y.shape)
    gx = layer.backward(gout)
    rx, rw, rb = numbaconv.conv2d_backward(gout, x, layer.weight, layout=layout, **fkw)
    np.testing.assert_allclose(gx, rx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.grad_weight, rw, rtol=1e-12, atol=1e-12)
    if layer.bias is None:
        assert layer.grad_bias is None and len(layer.parameters()) == 1
    else:
        np.testing.assert_allclose(layer.grad_bias, rb, rtol=1e-12, atol=1e-12)
    # A second backward of the same forward gives the same answer (the cache stays).
    np.testing.assert_array_equal(layer.backward(gout), gx)


TRANSPOSE_CASES = {
    "s2-op1": dict(args=(4, 6, 3), kw=dict(stride=2, padding=1, output_padding=1),
                   shape=(2, 4, 5, 4)),
    "grouped-dilated": dict(args=(4, 6, (2, 3)),
                            kw=dict(stride=(1, 2), padding=(1, 0), output_padding=(1, 1),
                                    groups=2, dilation=(2, 1)),
                            shape=(2, 4, 4, 5)),
    "unreachable-rows": dict(args=(2, 3, 2), kw=dict(output_padding=2, dilation=3, bias=False),
                             shape=(2, 2, 3, 3)),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", list(TRANSPOSE_CASES))
def test_conv_transpose2d_layer(case, layout):
    spec = TRANSPOSE_CASES[case]
    layer = numbaconv.ConvTranspose2d(*spec["args"], **spec["kw"], layout=layout,
                                      dtype=np.float64, rng=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal(spec["shape"])
    if layout == "NHWC":
        x = nhwc(x)
    fkw = {k: v for k, v in spec["kw"].items() if k != "bias"}
    y = layer.forward(x)
    assert_close(y, numbaconv.conv_transpose2d(x, layer.weight, layer.bias, layout=layout,
                                               **fkw), np.float64)
    gout = rng.standard_normal(y.shape)
    gx = layer.backward(gout)
    # The loss <y, gout> is linear in x and in the weight, so a central
    # difference of any size is exact up to rounding.
    eps = 0.5

    def loss(x, w, b):
        return float(np.sum(numbaconv.conv_transpose2d(x, w, b, layout=layout, **fkw) * gout))

    b = layer.bias
    for k, grad in enumerate((gx, layer.grad_weight, layer.grad_bias)):
        if grad is None:
            assert b is None and k == 2
            continue
        args = [x, layer.weight, b]
        v = rng.standard_normal(args[k].shape)
        plus = [a + eps * v if i == k else a for i, a in enumerate(args)]
        minus = [a - eps * v if i == k else a for i, a in enumerate(args)]
        fd = (loss(*plus) - loss(*minus)) / (2 * eps)
        assert abs(fd - float(np.sum(grad * v))) <= 1e-9 * max(1.0, abs(fd)), (k, fd)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float32_layers_keep_their_dtype(layout):
    conv = numbaconv.Conv2d(3, 4, 3, padding=1, layout=layout, rng=0)
    up = numbaconv.ConvTranspose2d(4, 2, 2, stride=2, layout=layout, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))  # float64 input
    if layout == "NHWC":
        x = nhwc(x)
    y = up(conv(x.astype(np.float32)))
    assert y.dtype == np.float32 and conv.weight.dtype == np.float32
    gx = conv.backward(up.backward(np.ones_like(y)))
    assert gx.dtype == np.float32
    # float64 input is promoted like conv2d does; parameter gradients keep the layer's dtype.
    y64 = conv(x)
    assert y64.dtype == np.float64
    conv.backward(np.ones_like(y64))
    assert conv.grad_weight.dtype == np.float32 and conv.grad_bias.dtype == np.float32


def test_unbatched_input_and_output_size():
    conv = numbaconv.Conv2d(3, 4, 3, stride=2, dtype=np.float64, rng=0)
    x = np.random.default_rng(1).standard_normal((3, 7, 7))
    y = conv(x)
    assert y.shape == (4, 3, 3)
    assert conv.backward(np.ones_like(y)).shape == x.shape
    batched = numbaconv.Conv2d(3, 4, 3, stride=2, dtype=np.float64, rng=0)
    batched.forward(x[None])
    batched.backward(np.ones((1, 4, 3, 3)))
    np.testing.assert_allclose(conv.grad_weight, batched.grad_weight, rtol=1e-14)
    up = numbaconv.ConvTranspose2d(4, 3, 3, stride=2, dtype=np.float64, rng=0)
    assert up(y, output_size=(8, 8)).shape == (3, 8, 8)
    assert up.backward(np.ones((3, 8, 8))).shape == y.shape
    assert up(y).shape == (3, 7, 7)


def test_inputs_are_never_modified():
    conv = numbaconv.Conv2d(2, 3, 3, dtype=np.float64, rng=0, padding=1)
    up = numbaconv.ConvTranspose2d(3, 2, 3, dtype=np.float64, rng=0, padding=1)
    x = np.random.default_rng(1).standard_normal((2, 2, 5, 5))
    g = np.random.default_rng(2).standard_normal((2, 2, 5, 5))
    before = (x.copy(), g.copy())
    y = up(conv(x))
    conv.backward(up.backward(g))
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(g, before[1])
    assert y.shape == x.shape


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["conv", "transpose"])
def test_eval_mode_gives_the_same_output_and_keeps_nothing(kind, layout):
    make = numbaconv.Conv2d if kind == "conv" else numbaconv.ConvTranspose2d
    layer = make(4, 6, 3, padding=1, layout=layout, rng=0)
    shape = (2, 4, 7, 6) if layout == "NCHW" else (2, 7, 6, 4)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    trained = layer(x)
    assert layer.training and layer._cache is not None
    assert layer.eval() is layer and not layer.training
    assert_close(layer(x), trained, np.float32)
    assert layer._cache is None  # the training forward's input (or columns) let go
    assert_clear_error(lambda: layer.backward(np.ones_like(trained)), ValueError,
                       ["backward", "eval mode", "train()"])
    assert layer(x[0]).shape == trained.shape[1:]  # unbatched too
    assert layer.train() is layer and layer.training
    layer(x)
    assert layer.backward(np.ones_like(trained)).shape == x.shape
    assert_clear_error(lambda: layer.train(1), TypeError, ["mode", "True or False", "1"])


# --------------------------------------------------------------------------
# Initialisation
# --------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_init_follows_pytorch_bounds(layout):
    conv = numbaconv.Conv2d(6, 8, (3, 2), groups=2, layout=layout, rng=0)
    bound = 1 / math.sqrt(3 * 3 * 2)  # fan_in = in_channels / groups * KH * KW
    assert conv.weight.shape == ((8, 3, 3, 2) if layout == "NCHW" else (3, 2, 3, 8))
    for p in (conv.weight, conv.bias):
        assert p.dtype == np.float32
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.8 * bound
    up = numbaconv.ConvTranspose2d(6, 8, 3, groups=2, layout=layout, rng=0, dtype=np.float64)
    bound = 1 / math.sqrt(4 * 3 * 3)  # PyTorch's fan_in here: out_channels / groups * KH * KW
    assert up.weight.shape == ((6, 4, 3, 3) if layout == "NCHW" else (3, 3, 4, 6))
    assert np.abs(up.weight).max() <= bound and np.abs(up.weight).max() > 0.9 * bound
    assert up.bias.shape == (8,) and np.abs(up.bias).max() <= bound
    # rng: a seed or a Generator makes it reproducible; None draws fresh weights.
    again = numbaconv.Conv2d(6, 8, (3, 2), groups=2, layout=layout, rng=0)
    np.testing.assert_array_equal(again.weight, conv.weight)
    gen = numbaconv.Conv2d(6, 8, (3, 2), groups=2, layout=layout,
                           rng=np.random.default_rng(0))
    np.testing.assert_array_equal(gen.weight, conv.weight)
    assert not np.array_equal(numbaconv.Conv2d(6, 8, 3).weight, numbaconv.Conv2d(6, 8, 3).weight)


# PyTorch is an optional peer: these tests skip without it.


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
def test_init_bounds_equal_pytorchs():
    # kaiming_uniform_(a=sqrt(5)) draws from +-gain * sqrt(3 / fan_in), fan_in as
    # PyTorch computes it for that weight; the bias from +-1/sqrt(fan_in).
    torch.manual_seed(0)
    for ours, theirs in [
        (numbaconv.Conv2d(6, 8, (3, 2), groups=2, rng=0), torch.nn.Conv2d(6, 8, (3, 2), groups=2)),
        (numbaconv.ConvTranspose2d(6, 8, 3, groups=2, rng=0),
         torch.nn.ConvTranspose2d(6, 8, 3, groups=2)),
    ]:
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(theirs.weight)
        gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
        bound = gain * math.sqrt(3 / fan_in)
        assert bound == pytest.approx(1 / math.sqrt(fan_in))
        assert ours.weight.shape == tuple(theirs.weight.shape)
        for mine, their in ((ours.weight, theirs.weight), (ours.bias, theirs.bias)):
            assert float(their.detach().abs().max()) <= bound
            assert np.abs(mine).max() <= bound
        assert np.abs(ours.weight).max() > 0.9 * bound


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("kind", ["conv", "transpose"])
def test_layers_match_pytorch_autograd(kind):
    rng = np.random.default_rng(5)
    if kind == "conv":
        ours = numbaconv.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="circular",
                                dtype=np.float64, rng=0)
        theirs = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2,
                                 padding_mode="circular", dtype=torch.float64)
        x = rng.standard_normal((2, 4, 7, 7))
    else:
        ours = numbaconv.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                         groups=2, dtype=np.float64, rng=0)
        theirs = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                          groups=2, dtype=torch.float64)
        x = rng.standard_normal((2, 4, 5, 5))
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight))
        theirs.bias.copy_(torch.from_numpy(ours.bias))
    xt = torch.from_numpy(x).requires_grad_()
    yt = theirs(xt)
    gout = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(gout))
    assert_close(ours.forward(x), yt.detach().numpy(), np.float64)
    assert_close(ours.backward(gout), xt.grad.numpy(), np.float64)
    assert_close(ours.grad_weight, theirs.weight.grad.numpy(), np.float64)
    assert_close(ours.grad_bias, theirs.bias.grad.numpy(), np.float64)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------
BAD = [
    ("backward-before-forward", lambda: numbaconv.Conv2d(2, 3, 3).backward(np.zeros((1, 3, 1, 1))),
     ValueError, ["backward", "forward", "before"]),
    ("transpose-backward-before-forward",
     lambda: numbaconv.ConvTranspose2d(2, 3, 3).backward(np.zeros((1, 3, 3, 3))), ValueError,
     ["backward", "forward"]),
    ("grad_out-shape", lambda: _after_forward().backward(np.zeros((2, 3, 4, 4))), ValueError,
     ["grad_out", "(2, 3, 3, 3)", "(2, 3, 4, 4)"]),
    ("transpose-grad_out-shape",
     lambda: _after_forward(transpose=True).backward(np.zeros((2, 3, 5, 5))), ValueError,
     ["grad_out", "(2, 3, 7, 7)", "(2, 3, 5, 5)"]),
    ("in_channels", lambda: numbaconv.Conv2d(0, 3, 3), ValueError, ["in_channels", ">= 1"]),
    ("in_channels-type", lambda: numbaconv.Conv2d(2.0, 3, 3), TypeError, ["in_channels", "2.0"]),
    ("groups", lambda: numbaconv.Conv2d(4, 6, 3, groups=4), ValueError,
     ["groups", "out_channels 6", "groups=4"]),
    ("kernel_size", lambda: numbaconv.Conv2d(2, 3, 0), ValueError, ["kernel_size", ">= 1"]),
    ("stride", lambda: numbaconv.Conv2d(2, 3, 3, stride=(1, 0)), ValueError, ["stride"]),
    ("padding", lambda: numbaconv.Conv2d(2, 3, 3, padding="full"), ValueError, ["padding"]),
    ("padding_mode", lambda: numbaconv.Conv2d(2, 3, 3, padding_mode="wrap"), ValueError,
     ["padding_mode", "'wrap'"]),
    ("dtype", lambda: numbaconv.Conv2d(2, 3, 3, dtype=np.int32), TypeError, ["dtype", "int32"]),
    ("dtype-junk", lambda: numbaconv.Conv2d(2, 3, 3, dtype="fp32"), TypeError, ["dtype"]),
    ("bias-type", lambda: numbaconv.Conv2d(2, 3, 3, bias=None), TypeError, ["bias", "None"]),
    ("layout", lambda: numbaconv.Conv2d(2, 3, 3, layout="HWC"), ValueError, ["layout"]),
    ("x-channels", lambda: numbaconv.Conv2d(2, 3, 3)(np.zeros((1, 4, 5, 5), np.float32)),
     ValueError, ["weight", "4 input channels"]),
    ("x-ndim", lambda: numbaconv.Conv2d(2, 3, 3)(np.zeros((5, 5))), ValueError, ["x", "3-d"]),
    ("transpose-output_padding",
     lambda: numbaconv.ConvTranspose2d(2, 3, 3, stride=2, output_padding=2), ValueError,
     ["output_padding", "max(stride, dilation)"]),
    ("transpose-padding_mode",
     lambda: numbaconv.ConvTranspose2d(2, 3, 3, padding_mode="reflect"), ValueError,
     ["padding_mode", "'zeros'", "'reflect'"]),
    ("transpose-output_size",
     lambda: numbaconv.ConvTranspose2d(2, 3, 3, stride=2)(np.zeros((1, 2, 4, 4)),
                                                         output_size=(7, 7)), ValueError,
     ["output_size", "(9, 9)", "(10, 10)"]),
]


def _after_forward(transpose=False):
    if transpose:
        layer = numbaconv.ConvTranspose2d(2, 3, 3, rng=0)
    else:
        layer = numbaconv.Conv2d(2, 3, 3, rng=0)
    layer.forward(np.zeros((2, 2, 5, 5), np.float32))
    return layer


@pytest.mark.parametrize("call, exc, words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_gets_a_clear_error(call, exc, words):
    assert_clear_error(call, exc, words)


def test_repr_names_the_arguments():
    assert repr(numbaconv.Conv2d(2, 3, 3, padding="same")).startswith(
        "Conv2d(2, 3, kernel_size=(3, 3), stride=(1, 1), padding='same'")
    assert "output_padding=1" in repr(numbaconv.ConvTranspose2d(2, 3, 3, 2, output_padding=1))


# --------------------------------------------------------------------------
# The docs example, end to end
# --------------------------------------------------------------------------
def test_docs_example_trains(capsys):
    example = runpy.run_path(str(DOCS / "train_tiny_net.py"))
    history = example["train"](steps=100, every=25)
    losses = [loss for _, loss in history]
    assert losses[-1] < 0.25 * losses[0]
    assert "loss" in capsys.readouterr().out
