"""conv2d against the float64 reference, in both layouts and both dtypes."""

import threading

import numpy as np
import pytest
from checks import torch
from hypothesis import given
from hypothesis import strategies as st
from naive import assert_close, conv2d_ref, from_nhwc, to_hwio, to_nhwc
from strategies import DTYPES, LAYOUTS, conv_problems

import numbaconv
from numbaconv import machine


def run(x, w, b, layout, **kw):
    """conv2d on NCHW/OIHW data in either layout; the result comes back as NCHW."""
    if layout == "NCHW":
        return numbaconv.conv2d(x, w, b, **kw)
    return from_nhwc(numbaconv.conv2d(to_nhwc(x), to_hwio(w), b, layout="NHWC", **kw))


@given(prob=conv_problems(), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
       with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_reference(prob, dtype, layout, with_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((prob["n"], prob["c"], prob["h"], prob["w"])).astype(dtype)
    w = rng.standard_normal((prob["o"], prob["c"] // prob["groups"], prob["kh"], prob["kw"]))
    w = w.astype(dtype)
    b = rng.standard_normal(prob["o"]).astype(dtype) if with_bias else None
    y = run(x, w, b, layout, stride=prob["stride_arg"], padding=prob["padding"],
            dilation=prob["dil_arg"], groups=prob["groups"], padding_mode=prob["mode"])
    ref = conv2d_ref(x, w, b, prob["stride"], prob["pads"], prob["dilation"], prob["groups"],
                     prob["mode"])
    assert y.dtype == dtype
    assert_close(y, ref, dtype)


@given(prob=conv_problems(max_groups=6, og=(1, 3), max_size=16, depthwise=True),
       dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_depthwise_matches_reference(prob, dtype, layout, seed):
    # Any kernel size, unequal strides and dilations, asymmetric padding: the
    # NCHW kernel's phase-split scratch plane and its flat/row-wise passes.
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((prob["n"], prob["c"], prob["h"], prob["w"])).astype(dtype)
    w = rng.standard_normal((prob["o"], 1, prob["kh"], prob["kw"])).astype(dtype)
    b = rng.standard_normal(prob["o"]).astype(dtype)
    kw = dict(stride=prob["stride_arg"], padding=prob["padding"], dilation=prob["dil_arg"],
              groups=prob["groups"], padding_mode=prob["mode"])
    assert numbaconv.explain(x, w, b, layout="NCHW", **kw).algorithm == "direct_depthwise"
    y = run(x, w, b, layout, **kw)
    ref = conv2d_ref(x, w, b, prob["stride"], prob["pads"], prob["dilation"], prob["groups"],
                     prob["mode"])
    assert_close(y, ref, dtype)



def test_depthwise_planes_are_bounded_by_memory_not_the_workspace(restore_config,
                                                                  monkeypatch):
    # A plane per thread does not grow with the batch: a tight workspace bound
    # keeps direct_depthwise; only planes past a quarter of memory decline it.
    # (The plane-by-plane kernel runs channel multipliers; the channel-blocked
    # one, for one output per channel, needs only bands of rows.)
    from numbaconv.algorithms import direct_depthwise
    restore_config.max_workspace_bytes = 1
    shapes = ((1, 8, 64, 64), (16, 1, 3, 3))
    assert numbaconv.explain(*shapes, padding=1, groups=8).algorithm == "direct_depthwise"
    from numbaconv import _args
    small = 4 * 64 * 64 * 4  # below the planes' 68 KiB at any thread count
    monkeypatch.setattr(direct_depthwise, "physical_memory", lambda: small)
    numbaconv.cache_clear()
    assert numbaconv.explain(*shapes, padding=1, groups=8).algorithm == "im2col_gemm"
    blocked = numbaconv.explain((1, 8, 64, 64), (8, 1, 3, 3), stride=2, padding=1, groups=8)
    assert blocked.algorithm == "direct_depthwise" and blocked.tile is not None
    # NHWC and the gradients read through index tables: no planes, no exception
    nhwc = ((1, 64, 64, 8), (3, 3, 1, 8))
    assert numbaconv.explain(*nhwc, padding=1, groups=8,
                             layout="NHWC").algorithm == "direct_depthwise"
    x = np.ones(shapes[0], np.float32)
    w = np.ones(shapes[1], np.float32)
    gx, gw, _ = numbaconv.conv2d_backward(np.ones((1, 16, 64, 64), np.float32), x, w,
                                          padding=1, groups=8)
    assert gx.shape == x.shape and gw.shape == w.shape
    assert numbaconv.explain(*shapes, padding=1, groups=8,
                             algorithm="direct_depthwise").algorithm == "direct_depthwise"
    # Forced, planes past the whole memory where x and y fit: padded by 1000
    # per side, 17 MiB a plane; x, the 33x33 output and the tables 0.1 MiB.
    monkeypatch.setattr(_args, "physical_memory", lambda: 2**20)
    with pytest.raises(MemoryError, match="direct_depthwise's padded planes"):
        numbaconv.conv2d_with(x, w, padding=1000, stride=64, groups=8,
                              algorithm="direct_depthwise")
    numbaconv.cache_clear()

RESNET50 = [(3, 224, 64, 7, 2, 3), (64, 56, 64, 1, 1, 0), (64, 56, 64, 3, 1, 1),
            (64, 56, 256, 1, 1, 0), (256, 56, 64, 1, 1, 0), (128, 56, 128, 3, 2, 1),
            (128, 28, 128, 3, 1, 1), (512, 28, 128, 1, 1, 0), (256, 14, 256, 3, 1, 1),
            (1024, 14, 256, 1, 1, 0), (512, 7, 512, 3, 1, 1), (512, 7, 2048, 1, 1, 0)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", RESNET50, ids=lambda s: "C{}-H{}-O{}-k{}-s{}-p{}".format(*s))
def test_resnet50_shapes(shape, layout, rng):
    c, hw, o, k, s, p = shape
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    y = run(x, w, b, layout, stride=s, padding=p)
    assert_close(y, conv2d_ref(x, w, b, (s, s), (p,) * 4), np.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("limit", [1, 3000, 20000], ids=lambda v: f"limit={v}")
def test_chunked_workspace_matches_reference(layout, limit, rng, restore_config):
    # A tiny bound forces row bands within an image; a medium one batches images.
    restore_config.max_workspace_bytes = limit
    x = rng.standard_normal((5, 4, 11, 9))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    kw = dict(stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2,
              padding_mode="reflect")
    y = run(x, w, b, layout, **kw)
    assert_close(y, conv2d_ref(x, w, b, (2, 1), (1, 2, 0, 1), (1, 2), 2, "reflect"), np.float64)
    plan = numbaconv.explain(x, w, b, layout="NCHW", **kw)
    one_row = 4 * 3 * 2 * plan.geometry.q * 8
    assert plan.workspace_bytes <= max(limit, one_row)
    assert plan.chunks > 1


def test_workspace_bound_for_a_big_batch():
    # 256 ImageNet-sized images: the full column matrix would be ~9.5 GB.
    plan = numbaconv.explain((256, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)
    assert 0 < plan.workspace_bytes <= numbaconv.config.max_workspace_bytes
    assert plan.batch_chunk * plan.chunks >= 256
    plan = numbaconv.explain((256, 224, 224, 3), (7, 7, 3, 64), stride=2, padding=3,
                             layout="NHWC")
    assert 0 < plan.workspace_bytes <= numbaconv.config.max_workspace_bytes


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unbatched_and_empty_batch(layout, rng):
    x = rng.standard_normal((3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    y = run(x[None], w, None, layout, padding=1)
    if layout == "NCHW":
        got = numbaconv.conv2d(x, w, padding=1)
    else:
        got = from_nhwc(numbaconv.conv2d(to_nhwc(x[None])[0], to_hwio(w), padding=1,
                                         layout="NHWC")[None])[0]
    assert got.shape == y.shape[1:]
    np.testing.assert_array_equal(got, y[0])
    empty = run(np.zeros((0, 3, 6, 5)), w, None, layout, padding=1, stride=2)
    assert empty.shape == (0, 4, 3, 3)


@pytest.mark.parametrize("xdt, wdt, bdt, expected", [
    (np.float32, np.float32, None, np.float32),
    (np.float32, np.float64, None, np.float64),
    (np.float64, np.float32, np.float32, np.float64),
    (np.float32, np.float32, np.float64, np.float64),
])
def test_result_dtype(xdt, wdt, bdt, expected, rng):
    x = rng.standard_normal((2, 2, 5, 5)).astype(xdt)
    w = rng.standard_normal((3, 2, 2, 2)).astype(wdt)
    b = None if bdt is None else rng.standard_normal(3).astype(bdt)
    y = numbaconv.conv2d(x, w, b)
    assert y.dtype == expected
    assert_close(y, conv2d_ref(x, w, b), np.float32)


def _variants(x):
    """The same values as C order, F order, a strided view, read-only, byte-swapped, a list."""
    big = np.zeros((x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3]), x.dtype)
    big[:, :, ::2] = x
    ro = x.copy()
    ro.flags.writeable = False
    return {
        "c": x.copy(),
        "fortran": np.asfortranarray(x),
        "strided": big[:, :, ::2],
        "transposed": np.ascontiguousarray(x.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0),
        "readonly": ro,
        "byteswapped": x.astype(x.dtype.newbyteorder(">" if x.dtype.byteorder != ">" else "<")),
        "list": x.tolist(),
    }


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", list(_variants(np.zeros((1, 1, 1, 1)))))
def test_array_likes_are_accepted_and_never_modified(kind, layout, rng):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    ref = conv2d_ref(x, w, None, (1, 1), (1, 1, 1, 1))
    if layout == "NHWC":
        x, w, ref = to_nhwc(x), to_hwio(w), to_nhwc(ref)
    xv, wv = _variants(x)[kind], _variants(w)[kind]
    before = (np.array(xv, copy=True), np.array(wv, copy=True))
    y = numbaconv.conv2d(xv, wv, padding=1, layout=layout)
    assert_close(y, ref, np.float64)
    np.testing.assert_array_equal(np.asarray(xv), before[0])
    np.testing.assert_array_equal(np.asarray(wv), before[1])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pointwise", [False, True], ids=["3x3", "1x1"])
def test_nan_and_inf_stay_in_their_image(layout, pointwise, rng):
    k = 1 if pointwise else 3
    x = rng.standard_normal((3, 4, 6, 6))
    x[0, 1, 2, 3] = np.nan
    x[2, 0, 0, 0] = np.inf
    w = rng.standard_normal((5, 4, k, k))
    ref = conv2d_ref(x, w, None, (1, 1), (k // 2,) * 4)
    y = run(x, w, None, layout, padding=k // 2)
    assert np.isnan(y[0]).any() and not np.isnan(y[1]).any()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(ref))
    finite = np.isfinite(ref)
    assert_close(y[finite], ref[finite], np.float64)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_input_gives_no_floating_point_warning_anywhere(layout, rng):
    # The suite turns warnings into errors: a NaN must not make NumPy's
    # "invalid value encountered in matmul" escape from any GEMM inside.
    x = rng.standard_normal((2, 4, 6, 6))
    x[0, 1, 2, 3] = np.nan
    w = rng.standard_normal((5, 4, 3, 3))
    if layout == "NHWC":
        x, w = to_nhwc(x), to_hwio(w)
    for algorithm in ("im2col_gemm", "indirect_gemm"):
        y = numbaconv.conv2d_with(x, w, padding=1, layout=layout, algorithm=algorithm)
        assert np.isnan(y[0]).any() and np.isfinite(y[1]).all()
    gx, gw, gb = numbaconv.conv2d_backward(np.ones_like(y), x, w, padding=1, layout=layout)
    assert np.isnan(gw).any() and np.isfinite(gb).all()
    layer = numbaconv.Conv2d(4, 5, 3, padding=1, layout=layout, dtype=np.float64)
    layer.backward(np.ones_like(layer.forward(x)))
    assert np.isnan(layer.grad_weight).any()
    t = numbaconv.conv_transpose2d(y, w, padding=1, layout=layout)  # (5 -> 4 channels)
    assert np.isnan(t).any()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_second_call_hits_both_caches(layout, rng):
    numbaconv.cache_clear()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    if layout == "NHWC":
        x, w = to_nhwc(x), to_hwio(w)
    numbaconv.conv2d(x, w, padding=1, layout=layout)
    first = numbaconv.cache_info()
    assert (first.plan_misses, first.kernel_misses) == (1, 1)
    numbaconv.conv2d(x, w, padding=1, layout=layout)
    second = numbaconv.cache_info()
    assert second.plan_misses == 1 and second.plan_hits == first.plan_hits + 1
    assert second.kernel_misses == 1 and second.kernel_hits == first.kernel_hits + 1
    kernel = numbaconv.kernels.get("im2col", layout, "float32")
    assert len(kernel.dispatcher.signatures) == 1  # compiled once, for its one explicit signature


@pytest.mark.parametrize(("kwargs", "exc"), [
    (dict(stride=True), TypeError),  # True == 1, but conv2d refuses a bool stride
    (dict(stride=1.0), TypeError),
    (dict(groups=True), TypeError),
    (dict(padding=(1.0, 1)), TypeError),
    (dict(bias=np.zeros(5, np.float32)), ValueError),
])
def test_a_cached_call_does_not_let_a_look_alike_through(kwargs, exc, rng):
    # conv2d remembers a call's checks and plan by its signature; arguments
    # that compare equal to a good one but are refused must still be refused.
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    good = dict(stride=1, padding=(1, 1), groups=1, bias=np.zeros(4, np.float32))
    numbaconv.conv2d(x, w, **good)
    numbaconv.conv2d(x, w, **good)
    with pytest.raises(exc):
        numbaconv.conv2d(x, w, **{**good, **kwargs})


def test_a_cached_call_follows_config_and_threads(rng, restore_config):
    x = rng.standard_normal((4, 8, 20, 20)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    ref = numbaconv.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1)
    numbaconv.conv2d_with(x, w, padding=1, algorithm="im2col_gemm")
    restore_config.max_workspace_bytes = 4096  # now one output row per chunk
    before = numbaconv.cache_info().plan_misses
    y = numbaconv.conv2d_with(x, w, padding=1, algorithm="im2col_gemm")
    assert numbaconv.cache_info().plan_misses == before + 1  # planned again, not reused
    assert_close(y, ref, np.float32)
    with numbaconv.threads(1):
        assert_close(numbaconv.conv2d_with(x, w, padding=1, algorithm="im2col_gemm"), ref,
                     np.float32)
    assert numbaconv.cache_info().plan_misses == before + 2


def test_explain_describes_the_plan():
    plan = numbaconv.explain((1, 128, 14, 14), (128, 128, 3, 3), padding=1)
    assert plan.algorithm == "im2col_gemm"
    assert (plan.gemm_m, plan.gemm_n, plan.gemm_k) == (128, 14 * 14, 128 * 9)
    assert plan.threads >= 1 and plan.workspace_bytes > 0
    text = str(plan)
    for word in ("im2col_gemm", "128 x 196 x 1152", "workspace", "threads"):
        assert word in text
    pw = numbaconv.explain((8, 56, 56, 64), (1, 1, 64, 256), layout="NHWC")
    assert pw.algorithm == "gemm_1x1" and pw.workspace_bytes == 0
    assert (pw.gemm_m, pw.gemm_n, pw.gemm_k) == (8 * 56 * 56, 256, 64)
    own = numbaconv.explain((1, 56, 56, 64), (1, 1, 64, 256), layout="NHWC")
    assert own.algorithm == "pointwise_gemm" and own.workspace_bytes == 0
    assert (own.gemm_m, own.gemm_n, own.gemm_k) == (56 * 56, 256, 64)
    assert "Numba micro-kernel" in str(own)
    forced = numbaconv.explain((8, 64, 56, 56), (64, 64, 1, 1), algorithm="im2col_gemm")
    assert forced.algorithm == "im2col_gemm"
    assert numbaconv.explain(np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))).dtype == "float64"


def test_nchw_batches_thin_gemms_and_1x1_layers_only_on_tiny_images():
    def batched(x, w, **kw):
        return numbaconv.explain(x, w, **kw).gemm_batched

    assert batched((8, 512, 14, 14), (512, 512, 3, 3), padding=1,  # 196 columns per image
                   algorithm="im2col_gemm")
    assert not batched((8, 64, 56, 56), (64, 64, 3, 3), padding=1, algorithm="im2col_gemm")
    # 1x1: batching copies the input first, which only pays below 128 pixels.
    blas = dict(algorithm="gemm_1x1")
    assert batched((8, 512, 7, 7), (2048, 512, 1, 1), **blas)
    assert not batched((8, 1024, 14, 14), (256, 1024, 1, 1), **blas)
    assert not batched((1, 512, 7, 7), (2048, 512, 1, 1), **blas)  # one image: nothing to batch
    assert not batched((8, 7, 7, 512), (1, 1, 512, 2048), layout="NHWC", **blas)  # batch in M


@pytest.mark.parametrize("layout", LAYOUTS)
def test_forced_im2col_matches_pointwise_fast_path(layout, rng):
    x = rng.standard_normal((2, 6, 5, 4))
    w = rng.standard_normal((4, 3, 1, 1))
    ref = conv2d_ref(x, w, None, groups=2)
    assert_close(run(x, w, None, layout, groups=2), ref, np.float64)


def test_concurrent_calls_from_eight_threads(rng):
    # Every thread checks its own answer: a shared buffer or a race would show.
    problems = []
    for i in range(8):
        x = rng.standard_normal((2, 3 + i % 3, 12, 10)).astype(np.float32)
        w = rng.standard_normal((5, x.shape[1], 3, 3)).astype(np.float32)
        problems.append((x, w, conv2d_ref(x, w, None, (1, 1), (1,) * 4)))
    errors = []

    def work(x, w, ref):
        try:
            for _ in range(10):
                assert_close(numbaconv.conv2d(x, w, padding=1), ref, np.float32)
        except Exception as err:  # reported in the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=p) for p in problems]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlock"
    assert not errors, errors


# PyTorch is an optional peer: these tests skip without it.


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_matches_pytorch(mode, rng):
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    layer = torch.nn.Conv2d(4, 6, 3, stride=(2, 1), padding=2, dilation=(1, 2), groups=2,
                            padding_mode=mode, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))
        ref = layer(torch.from_numpy(x)).numpy()
    y = numbaconv.conv2d(x, w, b, stride=(2, 1), padding=2, dilation=(1, 2), groups=2,
                         padding_mode=mode)
    assert_close(y, ref, np.float64)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("multiplier, stride, dilation", [(1, 1, 1), (2, 2, 1), (1, 2, 2)])
def test_depthwise(layout, dtype, mode, multiplier, stride, dilation, rng):
    c = 12
    x = rng.standard_normal((2, c, 13, 11)).astype(dtype)
    w = rng.standard_normal((c * multiplier, 1, 3, 3)).astype(dtype)
    b = rng.standard_normal(c * multiplier).astype(dtype)
    kw = dict(stride=stride, padding=dilation, dilation=dilation, groups=c, padding_mode=mode)
    ref = conv2d_ref(x, w, b, (stride,) * 2, (dilation,) * 4, (dilation,) * 2, c, mode)
    assert numbaconv.explain(x, w, b, **kw).algorithm == "direct_depthwise"
    for algorithm in ("direct_depthwise", "im2col_gemm"):
        if layout == "NCHW":
            y = numbaconv.conv2d_with(x, w, b, algorithm=algorithm, **kw)
        else:
            y = from_nhwc(numbaconv.conv2d_with(to_nhwc(x), to_hwio(w), b, layout="NHWC",
                                                algorithm=algorithm, **kw))
        assert_close(y, ref, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("shape", [(16, 12, 12, 3, 1, 1), (8, 7, 9, 3, 2, 1), (4, 20, 6, 5, 1, 2),
                                   (6, 9, 9, 1, 2, 0), (3, 16, 16, 7, 2, 3)],
                         ids=lambda s: "C{}-H{}-W{}-k{}-s{}-p{}".format(*s))
def test_fast_paths_match_reference(layout, batch, shape, rng):
    # The band copy (stride 1, Q == W), strided rows, batched GEMMs and the
    # NHWC whole-kernel-row runs, at sizes where each path is taken.
    c, h, w_, k, s, p = shape
    x = rng.standard_normal((batch, c, h, w_))
    w = rng.standard_normal((5, c, k, k))
    for mode in ("zeros", "reflect"):
        ref = conv2d_ref(x, w, None, (s, s), (p,) * 4, (1, 1), 1, mode)
        assert_close(run(x, w, None, layout, stride=s, padding=p, padding_mode=mode), ref,
                     np.float64)


def test_num_threads_environment_variable_sets_both_pools():
    import os
    import subprocess
    import sys

    code = ("import threading, numbaconv, threadpoolctl, numpy as np\n"
            "blas = [i['num_threads'] for i in threadpoolctl.threadpool_info()"
            " if i['user_api'] == 'blas']\n"
            "other = []\n"
            "t = threading.Thread(target=lambda: other.append(numbaconv.get_num_threads()))\n"
            "t.start(); t.join()\n"
            "plan = numbaconv.explain((1, 3, 8, 8), (4, 3, 3, 3))\n"
            "print(numbaconv.get_num_threads(), other[0], plan.threads, set(blas))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "NUMBACONV_"))}
    proc = subprocess.run([sys.executable, "-c", code], env={**env, "NUMBACONV_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1", "1", "{1}"]
    bad = subprocess.run([sys.executable, "-c", "import numbaconv"],
                         env={**env, "NUMBACONV_NUM_THREADS": "lots"}, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0
    assert "NUMBACONV_NUM_THREADS: expected a positive integer" in bad.stderr


def test_threads_context_restores_counts():
    import threadpoolctl

    def blas_threads():
        return {i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"}

    before = (numbaconv.get_num_threads(), blas_threads())
    with numbaconv.threads(1):
        assert numbaconv.get_num_threads() == 1 and blas_threads() == {1}
        assert numbaconv.explain((1, 3, 8, 8), (4, 3, 3, 3)).threads == 1
    assert (numbaconv.get_num_threads(), blas_threads()) == before
    with pytest.raises(ValueError, match="n: expected 1 <= n"):
        numbaconv.set_num_threads(0)
    with pytest.raises(TypeError, match="n: expected an int"):
        numbaconv.set_num_threads(1.5)


@pytest.mark.parametrize("isa", machine.runnable())
def test_kernels_mean_the_same_with_the_jit_off(tmp_path, isa):
    # The kernels run as plain Python under NUMBA_DISABLE_JIT=1 (unsigned
    # index casts, prange as range); both versions must agree exactly enough,
    # for every register tile this host runs.
    import os
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys, numpy as np, numbaconv
        from numbaconv.algorithms import _adjoint
        rng = np.random.default_rng(3)
        x = rng.standard_normal((2, 4, 7, 6)); w = rng.standard_normal((6, 2, 3, 3))
        dw = rng.standard_normal((8, 1, 3, 3))
        dwb = rng.standard_normal((4, 1, 3, 3))  # one output per channel: channel-blocked
        wide = rng.standard_normal((32, 4, 3, 3))  # whole weight panels (OIHW: transposed)
        out = {}
        for layout in ("NCHW", "NHWC"):
            xi = x if layout == "NCHW" else x.transpose(0, 2, 3, 1).copy()
            wi = w if layout == "NCHW" else w.transpose(2, 3, 1, 0).copy()
            di = dw if layout == "NCHW" else dw.transpose(2, 3, 1, 0).copy()
            kw = dict(layout=layout, padding=((1, 2), (2, 0)), stride=(1, 2),
                      padding_mode="reflect")
            out["conv" + layout] = numbaconv.conv2d(xi, wi, groups=2, **kw)
            if layout == "NHWC":
                out["indirect"] = numbaconv.conv2d_with(xi, wi, groups=2,
                                                        algorithm="indirect_gemm", **kw)
            wd = wide if layout == "NCHW" else wide.transpose(2, 3, 1, 0).copy()
            out["wide" + layout] = numbaconv.conv2d_with(xi, wd, algorithm="indirect_gemm", **kw)
            if layout == "NCHW":
                out["packed"] = numbaconv.conv2d_with(xi, np.tile(wi, (4, 1, 1, 1)), groups=2,
                                                      algorithm="packed_gemm", **kw)
            out["dw" + layout] = numbaconv.conv2d(xi, di, groups=4, **kw)
            bi = dwb if layout == "NCHW" else dwb.transpose(2, 3, 1, 0).copy()
            out["dwb" + layout] = numbaconv.conv2d(xi, bi, groups=4, activation="silu", **kw)
            out["winograd" + layout] = numbaconv.conv2d_with(  # stride 1 only
                xi, wi, groups=2, algorithm="winograd",
                **{**kw, "stride": 1, "padding_mode": "replicate"})
            out["flip" + layout] = _adjoint.flipped(wi, numbaconv._args.layout_of(layout), 2)
            cols = numbaconv.im2col(xi, 3, **kw)
            out["cols" + layout] = cols
            out["fold" + layout] = numbaconv.col2im(cols, (7, 6), 3, **kw)
        np.savez(sys.argv[1], **out)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    results = []
    for jit_off in ("0", "1"):
        path = tmp_path / f"jit_off_{jit_off}.npz"
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                              text=True, timeout=300,
                              env={**env, "NUMBA_DISABLE_JIT": jit_off, "NUMBACONV_ISA": isa})
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(np.load(path))
    compiled, python = results
    for key in compiled.files:
        np.testing.assert_allclose(python[key], compiled[key], rtol=1e-12, atol=1e-12,
                                   err_msg=key)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_serial_kernels_give_the_same_result_and_restore_the_thread_count(layout, rng,
                                                                          restore_config):
    import numba

    x = rng.standard_normal((2, 5, 9, 8))
    dense, depthwise = rng.standard_normal((4, 5, 3, 3)), rng.standard_normal((5, 1, 3, 3))
    for w, groups in ((dense, 1), (depthwise, 5)):  # the gather, the depthwise kernel
        results = []
        for limit in (0, 2**40):  # never serial, always serial
            restore_config.serial_kernel_bytes = limit
            before = numba.get_num_threads()
            results.append(run(x, w, None, layout, padding=1, groups=groups))
            assert numba.get_num_threads() == before
        np.testing.assert_array_equal(results[0], results[1])
        ref = conv2d_ref(x, w, None, (1, 1), (1,) * 4, (1, 1), groups, "zeros")
        assert_close(results[1], ref, np.float64)


def test_workspace_is_kept_per_thread_and_can_be_released(rng):
    from numbaconv import _execute

    x = rng.standard_normal((2, 3, 9, 9))
    w = rng.standard_normal((4, 3, 3, 3))
    numbaconv.conv2d(x, w)
    kept = _execute._local.bufs["conv"]
    assert kept is not None and kept.nbytes >= numbaconv.explain(x, w).workspace_bytes
    numbaconv.conv2d(x, w)
    assert _execute._local.bufs["conv"] is kept  # reused, not reallocated
    numbaconv.conv3d(x[:, :, None], w[:, :, None])  # the depth fold has a slot of its own
    assert _execute._local.bufs["conv"] is kept and "fold" in _execute._local.bufs
    numbaconv.release_workspace()
    assert _execute._local.bufs is None
    assert_close(numbaconv.conv2d(x, w), conv2d_ref(x, w), np.float64)


@pytest.mark.parametrize(("env", "expect"), [
    ({}, "stopped before large Numba kernels"),
    ({"NUMBACONV_BLAS_SPIN": "keep"}, "left alone"),
])
def test_idle_openblas_threads_are_stopped_and_restart(env, expect):
    import os
    import subprocess
    import sys
    import textwrap

    # quiet_blas() stops OpenBLAS's idle threads only while no other Python
    # thread exists; BLAS must give right answers, threaded, afterwards.
    code = textwrap.dedent("""
        import threading, numpy as np, numbaconv
        from numbaconv import _threads
        print(_threads.blas_spin)
        a = np.random.default_rng(0).standard_normal((700, 700))
        ref = np.einsum("ij,jk->ik", a, a)
        for _ in range(3):
            a @ a
            _threads.quiet_blas()
            assert np.allclose(a @ a, ref)
        t = threading.Thread(target=lambda: [a @ a for _ in range(20)])
        t.start()
        _threads.quiet_blas()  # another thread exists: must do nothing
        t.join()
        print("ok", np.allclose(a @ a, ref), len(_threads._blas_shutdowns))
    """)
    clean = {k: v for k, v in os.environ.items() if k != "NUMBACONV_BLAS_SPIN"}
    proc = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, *_, last = proc.stdout.splitlines()
    assert expect in first or "no pthreads OpenBLAS" in first
    assert last.startswith("ok True")
    if env:
        assert last == "ok True 0"


def test_a_stride_past_the_input_is_shown_capped():
    # One output pixel per axis: any stride past the 1-pixel slack gives it.
    plan = numbaconv.explain((1, 1, 4, 5), (1, 1, 3, 3), stride=(100, 1))
    assert (plan.geometry.p, plan.geometry.q) == (1, 3) and plan.geometry.stride == (2, 1)
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    w = np.ones((1, 1, 3, 3))
    assert_close(numbaconv.conv2d(x, w, stride=(100, 1)), conv2d_ref(x, w, None, (100, 1),
                                                                       (0,) * 4), np.float64)
