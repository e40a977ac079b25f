"""The fused activation (``activation=``): every algorithm, layout, dtype and ISA variant,
the layers' gradients through it, N-d, Dask, and bad values."""

import numpy as np
import pytest
from checks import assert_clear_error, optional, torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from naive import (
    assert_close,
    convnd_ref,
    from_last,
    from_nhwc,
    grads_ref,
    to_hwio,
    to_last,
    to_nhwc,
    weight_to_last,
)
from strategies import DTYPES, LAYOUTS, arrays_for, conv_problems, reference_for

import numbaconv
from numbaconv._plan import algorithm_names

ACTS = ["relu", "relu6", "silu"]


def act_ref(z, name):
    """The activations in float64, written out from their definitions."""
    z = np.asarray(z, np.float64)
    if name == "relu":
        return np.where(z < 0, 0.0, z)
    if name == "relu6":
        return np.where(z < 0, 0.0, np.where(z > 6, 6.0, z))
    with np.errstate(over="ignore"):
        return z * (1.0 / (1.0 + np.exp(-z)))


def act_grad_ref(z, name):
    """d act / dz at the activation's input z (0 at the kinks, as PyTorch)."""
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "relu6":
        return ((z > 0) & (z < 6)).astype(np.float64)
    s = 1.0 / (1.0 + np.exp(-z))
    return s * (1 + z * (1 - s))


def supported(x, w, algorithm, **kw) -> bool:
    try:
        numbaconv.explain(x, w, algorithm=algorithm, **kw)
    except ValueError:
        return False
    return True


@settings(max_examples=60)
@given(prob=conv_problems(), algorithm=st.sampled_from(algorithm_names()),
       act=st.sampled_from(ACTS), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_every_algorithm_matches_the_reference(isa, prob, algorithm, act, dtype, layout,
                                               with_bias, seed):
    x, w, b = arrays_for(prob, dtype, with_bias, seed)
    x = 3 * x  # values past ReLU6's 6 too
    ref = act_ref(reference_for(prob, x, w, b), act)
    if layout == "NHWC":
        x, w = np.ascontiguousarray(to_nhwc(x)), np.ascontiguousarray(to_hwio(w))
    kw = dict(stride=prob["stride_arg"], padding=prob["padding"], dilation=prob["dil_arg"],
              groups=prob["groups"], padding_mode=prob["mode"], layout=layout)
    assume(supported(x, w, algorithm, **kw))
    y = numbaconv.conv2d_with(x, w, b, activation=act, algorithm=algorithm, **kw)
    assert y.dtype == dtype
    assert_close(y if layout == "NCHW" else from_nhwc(y), ref, dtype)


# Problems each algorithm takes, big enough for whole register tiles, edges
# and (batched NCHW GEMMs) several images: (x NCHW, w OIHW, conv2d kwargs).
CASES = {
    "indirect_gemm": ((2, 16, 11, 13), (40, 16, 3, 3), dict(padding=1)),
    "im2col_gemm": ((3, 8, 9, 9), (20, 8, 3, 3), dict(padding=1, stride=2)),
    "winograd": ((2, 16, 10, 9), (24, 16, 3, 3), dict(padding=1)),
    "packed_gemm": ((2, 16, 9, 11), (24, 16, 3, 3), dict(padding=1)),
    "pointwise_gemm": ((2, 16, 9, 9), (40, 16, 1, 1), {}),
    "gemm_1x1": ((2, 16, 9, 9), (40, 16, 1, 1), {}),
    "direct_depthwise": ((2, 16, 9, 9), (32, 1, 3, 3), dict(padding=1, groups=16)),
}


def case_arrays(algorithm, layout, dtype, rng, n=None):
    xs, ws, kw = CASES[algorithm]
    if n is not None:
        xs = (n, *xs[1:])
    x = (3 * rng.standard_normal(xs)).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    if layout == "NHWC":
        x, w = np.ascontiguousarray(to_nhwc(x)), np.ascontiguousarray(to_hwio(w))
    return x, w, b, dict(layout=layout, **kw)


@pytest.mark.parametrize("n", [1, 9])  # 9 small images: gemm_1x1's and im2col's batched GEMM
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("algorithm", list(CASES))
def test_fused_equals_the_activation_of_the_plain_result(algorithm, layout, n, rng):
    if algorithm == "packed_gemm" and layout == "NHWC":
        pytest.skip("packed_gemm is NCHW only")
    x, w, b, kw = case_arrays(algorithm, layout, np.float32, rng, n)
    x0 = x.copy()
    plain = numbaconv.conv2d_with(x, w, b, algorithm=algorithm, **kw)
    assert (plain < 0).any() and (plain > 6).any()  # every branch of every activation runs
    for act in ACTS:
        y = numbaconv.conv2d_with(x, w, b, activation=act, algorithm=algorithm, **kw)
        if act == "silu":  # the kernels compute it in float64, NumPy in float32
            np.testing.assert_allclose(y, act_ref(plain, act), rtol=2e-6, atol=1e-6)
        else:  # a select after the same arithmetic: exact
            np.testing.assert_array_equal(y, act_ref(plain, act).astype(np.float32))
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("algorithm", list(CASES))
def test_nan_stays_nan(algorithm, layout, rng):
    # PyTorch's relu(nan) is nan: the activation must not turn a NaN into 0 or 6.
    if algorithm == "packed_gemm" and layout == "NHWC":
        pytest.skip("packed_gemm is NCHW only")
    x, w, b, kw = case_arrays(algorithm, layout, np.float32, rng)
    x[(0,) * x.ndim] = np.nan
    plain = numbaconv.conv2d_with(x, w, b, algorithm=algorithm, **kw)
    assert np.isnan(plain).any()
    for act in ["relu", "relu6"]:
        y = numbaconv.conv2d_with(x, w, b, activation=act, algorithm=algorithm, **kw)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(plain))


def test_the_dispatcher_and_a_packed_weight(rng):
    x = rng.standard_normal((1, 64, 14, 14)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    plain = numbaconv.conv2d(x, w, b, padding=1)
    np.testing.assert_array_equal(numbaconv.conv2d(x, w, b, padding=1, activation="relu"),
                                  np.maximum(plain, 0))
    packed = numbaconv.pack_weight(w)
    np.testing.assert_allclose(numbaconv.conv2d(x, packed, b, padding=1, activation="relu6"),
                               np.clip(plain, 0, 6), rtol=1e-5, atol=1e-5)


def test_unbatched_and_empty_batches(rng):
    x = rng.standard_normal((3, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    y = numbaconv.conv2d(x, w, activation="relu")
    np.testing.assert_array_equal(y, np.maximum(numbaconv.conv2d(x, w), 0))
    assert numbaconv.conv2d(np.zeros((0, 3, 6, 6)), w, activation="silu").shape == (0, 4, 4, 4)


BAD = [("gelu", ValueError), ("ReLU", ValueError), ("", ValueError), (1, TypeError),
       (True, TypeError), (np.maximum, TypeError)]


@pytest.mark.parametrize("value, exc", BAD)
def test_bad_activation_values_name_the_argument(value, exc):
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    words = ["activation", "relu", "relu6", "silu"]
    assert_clear_error(lambda: numbaconv.conv2d(x, w, activation=value), exc, words)
    assert_clear_error(lambda: numbaconv.conv1d(np.ones((1, 2, 5)), np.ones((3, 2, 3)),
                                                activation=value), exc, words)
    # checked even where no convolution runs
    assert_clear_error(lambda: numbaconv.conv3d(np.ones((0, 2, 3, 3, 3)),
                                                np.ones((3, 2, 1, 1, 1)), activation=value),
                       exc, words)
    assert_clear_error(lambda: numbaconv.Conv2d(2, 3, 3, activation=value), exc, words)
    layer = numbaconv.Conv1d(2, 3, 3)
    assert_clear_error(lambda: setattr(layer, "activation", value), exc, words)
    assert layer.activation is None


# --------------------------------------------------------------------------
# N-d
# --------------------------------------------------------------------------
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rank", [1, 3])
def test_conv1d_and_conv3d(rank, channels_last, act, rng):
    sizes = (23,) if rank == 1 else (5, 6, 7)
    x = 3 * rng.standard_normal((2, 4, *sizes))
    w = rng.standard_normal((6, 2, *(3,) * rank))
    b = rng.standard_normal(6)
    ref = act_ref(convnd_ref(x, w, b, pads=(1,) * (2 * rank), groups=2), act)
    layout = {(1, False): "NCW", (1, True): "NWC", (3, False): "NCDHW",
              (3, True): "NDHWC"}[rank, channels_last]
    if channels_last:
        x, w = to_last(x), weight_to_last(w)
    conv = numbaconv.conv1d if rank == 1 else numbaconv.conv3d
    y = conv(x, w, b, padding=1, groups=2, layout=layout, activation=act)
    assert_close(from_last(y) if channels_last else y, ref, np.float64)


# --------------------------------------------------------------------------
# Layers: forward fused, backward through the activation
# --------------------------------------------------------------------------
LAYER_CASES = [  # (class, x shape, kwargs): 2-d cases take different backward paths
    (numbaconv.Conv2d, (2, 4, 7, 7), dict(kernel_size=3, padding=1)),  # im2col columns kept
    (numbaconv.Conv2d, (2, 4, 7, 7), dict(kernel_size=1)),  # gemm_1x1
    (numbaconv.Conv2d, (2, 4, 7, 7), dict(kernel_size=3, groups=4)),  # depthwise
    (numbaconv.Conv1d, (2, 4, 11), dict(kernel_size=3, padding=1)),
    (numbaconv.Conv3d, (2, 4, 4, 5, 5), dict(kernel_size=3, padding=1)),
]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: f"{c[0].__name__}-{c[2]}")
def test_layer_forward_and_backward_through_the_activation(case, act, rng):
    cls, xs, kw = case
    out_channels = 8
    layer = cls(4, out_channels, activation=act, dtype=np.float64, rng=0, **kw)
    x = 3 * rng.standard_normal(xs)
    rank = len(xs) - 2
    pads = (kw.get("padding", 0),) * (2 * rank)
    z = convnd_ref(x, layer.weight, layer.bias, pads=pads, groups=kw.get("groups", 1))
    y = layer.forward(x)
    assert_close(y, act_ref(z, act), np.float64)
    gout = rng.standard_normal(y.shape)
    gx = layer.backward(gout)
    gz = gout * act_grad_ref(z, act)  # the convolution's own gradient, from here on
    if rank == 2:
        ref_gx, ref_gw, ref_gb = grads_ref(x, layer.weight, gz, pads=pads,
                                           groups=kw.get("groups", 1))
    else:  # the plain layer's backward, checked against references in test_convnd
        plain = cls(4, out_channels, dtype=np.float64, rng=0, **kw)
        plain.forward(x)
        ref_gx = plain.backward(gz)
        ref_gw, ref_gb = plain.grad_weight, plain.grad_bias
    assert_close(gx, ref_gx, np.float64)
    assert_close(layer.grad_weight, ref_gw, np.float64)
    assert_close(layer.grad_bias, ref_gb, np.float64)
    # eval(): the same output, fused, keeping nothing
    np.testing.assert_allclose(layer.eval().forward(x), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layer_in_nhwc_and_float32(layout, rng):
    layer = numbaconv.Conv2d(8, 16, 3, padding=1, layout=layout, activation="relu6", rng=1)
    plain = numbaconv.Conv2d(8, 16, 3, padding=1, layout=layout, rng=1)
    shape = (2, 8, 9, 9) if layout == "NCHW" else (2, 9, 9, 8)
    x = (3 * rng.standard_normal(shape)).astype(np.float32)
    z = plain.forward(x)
    y = layer.forward(x)
    np.testing.assert_array_equal(y, np.clip(z, 0, 6))
    gout = rng.standard_normal(y.shape).astype(np.float32)
    gx = layer.backward(gout)
    gx_plain = plain.backward(np.where((z > 0) & (z < 6), gout, 0).astype(np.float32))
    np.testing.assert_allclose(gx, gx_plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.grad_weight, plain.grad_weight, rtol=1e-4, atol=1e-4)


def test_setting_the_activation_after_construction(rng):
    layer = numbaconv.Conv2d(3, 4, 3, rng=0)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    z = layer(x)
    layer.activation = "relu"
    assert "activation='relu'" in repr(layer)
    np.testing.assert_array_equal(layer(x), np.maximum(z, 0))


# --------------------------------------------------------------------------
# Peers and Dask
# --------------------------------------------------------------------------
@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("act", ACTS)
def test_against_torch(act, rng):
    x = (3 * rng.standard_normal((2, 8, 10, 10))).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    f = {"relu": torch.relu, "relu6": torch.nn.functional.relu6,
         "silu": torch.nn.functional.silu}[act]
    ref = f(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                       torch.from_numpy(b), padding=1)).numpy()
    y = numbaconv.conv2d(x, w, b, padding=1, activation=act)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_dask_passes_it_to_every_block(rng):
    da = optional("dask.array")
    if da is None:
        pytest.skip("dask not installed")
    import numbaconv.dask

    x = (3 * rng.standard_normal((2, 3, 20, 20))).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    y = numbaconv.dask.conv2d(da.from_array(x, chunks=(1, 3, 10, 10)), w, padding=1,
                              activation="relu6")
    ref = numbaconv.conv2d(x, w, padding=1, activation="relu6")
    np.testing.assert_allclose(y.compute(scheduler="synchronous"), ref, rtol=1e-5, atol=1e-5)
    assert_clear_error(lambda: numbaconv.dask.conv2d(da.from_array(x), w, activation="tanh"),
                       ValueError, ["activation"])


def test_reference_activations_are_what_they_say():
    # The test's own reference, against values worked out by hand.
    z = np.array([-7.0, -1.0, 0.0, 0.5, 6.0, 7.5])
    np.testing.assert_array_equal(act_ref(z, "relu"), [0, 0, 0, 0.5, 6, 7.5])
    np.testing.assert_array_equal(act_ref(z, "relu6"), [0, 0, 0, 0.5, 6, 6])
    np.testing.assert_allclose(act_ref([0.0, 1.0], "silu"), [0, 1 / (1 + np.exp(-1))])


def test_transposed_layers_refuse_an_activation():
    # Their forward applies none: setting one must not be silently ignored.
    up = numbaconv.ConvTranspose2d(2, 3, 3)
    assert up.activation is None
    assert_clear_error(lambda: setattr(up, "activation", "relu"), ValueError,
                       ["activation", "ConvTranspose2d", "'relu'"])
    up.activation = None
    assert up.activation is None
