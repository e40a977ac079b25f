"""winograd (F(4x4, 3x3) and F(2x2, 3x3)) against the float64 reference."""

import os
import subprocess
import sys

import numpy as np
import pytest
from checks import assert_clear_error
from hypothesis import assume, given
from hypothesis import strategies as st
from naive import assert_close, conv2d_ref, from_nhwc, grads_ref, to_hwio, to_nhwc
from strategies import DTYPES, LAYOUTS, MODES, padding_forms, valid_geometry

import numbaconv
from numbaconv import _args
from numbaconv._plan import backward_plan, problem_of
from numbaconv.algorithms import REGISTRY, RULES, _adjoint, winograd


@st.composite
def winograd_problems(draw, max_size=14, modes=MODES):
    """3x3, stride 1, dilation 1: every padding form and mode, groups, any batch."""
    groups = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    n = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    padding, pads = draw(padding_forms(3, 3, h, w, (1, 1), (1, 1)))
    mode = draw(st.sampled_from(modes))
    assume(valid_geometry(h, w, 3, 3, (1, 1), pads, mode))
    return dict(n=n, c=groups * cg, h=h, w=w, o=groups * og, groups=groups, pads=pads,
                padding=padding, mode=mode)


def run_winograd(x, w, b, layout, m, **kw):
    """winograd with F(m x m) forced, on NCHW/OIHW data in either layout; NCHW back."""
    lay = _args.layout_of(layout)
    if layout == "NHWC":
        x, w = to_nhwc(x), to_hwio(w)
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    g = _args.conv_geometry(x.shape, w.shape, lay, 1, kw["padding"], 1, kw["groups"],
                            kw["padding_mode"])
    plan = winograd.plan(problem_of(g, lay, x.dtype), m)
    out = np.empty(lay.x_shape(g.n, g.o, g.p, g.q), x.dtype)
    REGISTRY["winograd"].run(plan, x, w, b, out)
    return out if layout == "NCHW" else from_nhwc(out)


@pytest.mark.parametrize("m", [2, 4])
@given(prob=winograd_problems(), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_reference(isa, m, prob, dtype, layout, with_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((prob["n"], prob["c"], prob["h"], prob["w"])).astype(dtype)
    w = rng.standard_normal((prob["o"], prob["c"] // prob["groups"], 3, 3)).astype(dtype)
    b = rng.standard_normal(prob["o"]).astype(dtype) if with_bias else None
    y = run_winograd(x, w, b, layout, m, padding=prob["padding"], groups=prob["groups"],
                     padding_mode=prob["mode"])
    ref = conv2d_ref(x, w, b, (1, 1), prob["pads"], (1, 1), prob["groups"], prob["mode"])
    assert y.dtype == dtype
    assert_close(y, ref, dtype)


def winograd_grad_input(x_shape, w, gout, layout, padding, groups):
    """winograd's grad_input on NCHW/OIHW data in either layout; NCHW back."""
    lay = _args.layout_of(layout)
    if layout == "NHWC":
        x_shape = (x_shape[0], *x_shape[2:], x_shape[1])
        w, gout = to_hwio(w), to_nhwc(gout)
    w, gout = np.ascontiguousarray(w), np.ascontiguousarray(gout)
    g = _args.conv_geometry(x_shape, w.shape, lay, 1, padding, 1, groups, "zeros")
    assert _adjoint.transposed(g) is not None
    plan = winograd.plan(problem_of(g, lay, w.dtype))
    gx = REGISTRY["winograd"].grad_input(plan, w, gout)
    assert gx.dtype == w.dtype
    return gx if layout == "NCHW" else from_nhwc(gx)


@given(prob=winograd_problems(modes=["zeros"]), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_grad_input_matches_reference(prob, dtype, layout, seed):
    # grad_x of a 3x3 stride-1 layer is itself a Winograd convolution (pads <= 2).
    assume(max(prob["pads"]) <= 2)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((prob["n"], prob["c"], prob["h"], prob["w"])).astype(dtype)
    w = rng.standard_normal((prob["o"], prob["c"] // prob["groups"], 3, 3)).astype(dtype)
    y = conv2d_ref(x, w, None, (1, 1), prob["pads"], (1, 1), prob["groups"])
    gout = rng.standard_normal(y.shape).astype(dtype)
    gx = winograd_grad_input(x.shape, w, gout, layout, prob["padding"], prob["groups"])
    ref = grads_ref(x, w, gout, (1, 1), prob["pads"], (1, 1), prob["groups"])[0]
    assert_close(gx, ref, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 2)])
def test_grad_input_with_4x4_tiles(layout, pads, rng):
    x = rng.standard_normal((4, 6, 17, 15))  # 48 or more 4x4 tiles: F(4x4)
    w = rng.standard_normal((4, 3, 3, 3))
    gout = rng.standard_normal(conv2d_ref(x, w, None, (1, 1), pads, (1, 1), 2).shape)
    padding = ((pads[0], pads[1]), (pads[2], pads[3]))
    gx = winograd_grad_input(x.shape, w, gout, layout, padding, 2)
    assert_close(gx, grads_ref(x, w, gout, (1, 1), pads, (1, 1), 2)[0], np.float64)


def test_the_backward_rules_take_it_for_grad_input(rng, restore_config):
    lay = _args.layout_of("NCHW")

    def algorithm(padding, mode="zeros"):
        g = _args.conv_geometry((8, 128, 28, 28), (128, 128, 3, 3), lay, 1, padding, 1, 1, mode)
        return backward_plan(g, lay, np.float32).algorithm

    assert algorithm(1) == "winograd"
    assert algorithm(1, "reflect") == "im2col_gemm"  # its adjoint is not a convolution
    assert algorithm(3) == "im2col_gemm"  # 2 - 3: a negative pad
    restore_config.winograd = False
    assert algorithm(1) == "indirect_gemm"  # the forward rule's choice without Winograd
    # The whole backward through the rule, against the same with Winograd off.
    x = rng.standard_normal((8, 128, 28, 28))
    w = rng.standard_normal((128, 128, 3, 3))
    gout = rng.standard_normal((8, 128, 28, 28))
    off = numbaconv.conv2d_backward(gout, x, w, padding=1)
    restore_config.winograd = True
    on = numbaconv.conv2d_backward(gout, x, w, padding=1)
    for a, b in zip(on, off, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * np.abs(b).max())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forced_through_conv2d_with(layout, dtype, rng):
    x = rng.standard_normal((2, 6, 11, 9)).astype(dtype)
    w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    kw = dict(padding="same", groups=2, padding_mode="replicate")
    ref = conv2d_ref(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 2, "replicate")
    xi, wi = (x, w) if layout == "NCHW" else (to_nhwc(x), to_hwio(w))
    before = (xi.copy(), wi.copy())
    y = numbaconv.conv2d_with(xi, wi, b, layout=layout, algorithm="winograd", **kw)
    np.testing.assert_array_equal(xi, before[0])  # inputs are never modified
    np.testing.assert_array_equal(wi, before[1])
    assert_close(y if layout == "NCHW" else from_nhwc(y), ref, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("limit", [1, 40_000, 120_000])
def test_chunks_of_tile_rows_and_images(layout, limit, rng, restore_config):
    # 1 byte: a band of one tile row per chunk; then several rows; then whole images.
    restore_config.max_workspace_bytes = limit
    x = rng.standard_normal((3, 5, 19, 13))
    w = rng.standard_normal((4, 5, 3, 3))
    plan = numbaconv.explain(x, w, padding=1, algorithm="winograd")
    assert plan.chunks > 1
    ref = conv2d_ref(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, "zeros")
    for m in (2, 4):
        assert_close(run_winograd(x, w, None, layout, m, padding=1, groups=1,
                                  padding_mode="zeros"), ref, np.float64)


@pytest.mark.parametrize("kw, words", [
    (dict(stride=2), ["algorithm", "'winograd'", "stride 1", "(2, 2)"]),
    (dict(dilation=(1, 2)), ["algorithm", "'winograd'", "dilation 1", "(1, 2)"]),
])
def test_refuses_what_it_cannot_run(kw, words):
    assert_clear_error(lambda: numbaconv.explain((1, 4, 16, 16), (4, 4, 3, 3), padding=2,
                                                 algorithm="winograd", **kw),
                       ValueError, words)
    assert_clear_error(lambda: numbaconv.explain((1, 4, 16, 16), (4, 4, 5, 5),
                                                 algorithm="winograd"), ValueError, ["5x5"])


def test_the_dispatcher_takes_it_for_wide_layers_with_many_pixels(restore_config):
    def algorithm(x, w, **kw):
        return numbaconv.explain(x, w, padding=1, **kw).algorithm

    vgg = ((1, 256, 56, 56), (256, 256, 3, 3))
    assert algorithm(*vgg) == "winograd"
    assert algorithm(vgg[0], (256, 256, 3, 3), stride=2) != "winograd"
    assert algorithm((1, 64, 56, 56), (64, 64, 3, 3)) != "winograd"  # too few channels
    assert algorithm((1, 512, 14, 14), (512, 512, 3, 3)) != "winograd"  # too few pixels
    plan = numbaconv.explain(*vgg, padding=1)
    assert plan.tile.m == 4 and "F(4x4, 3x3)" in str(plan)
    said = " ".join(str(plan).split())  # explain() says why, and where the evidence is
    assert f"why RULES #{[r.algorithm for r in RULES].index('winograd') + 1}," in said
    assert '"Winograd: F(4x4) and F(2x2)"' in said and "WINOGRAD_MIN_CHANNELS" in said
    assert "why forced: algorithm='winograd'" in " ".join(str(numbaconv.explain(
        *vgg, padding=1, algorithm="winograd")).split())
    assert numbaconv.explain((8, 512, 7, 7), (512, 512, 3, 3), padding=1,
                             algorithm="winograd").tile.m == 2  # few 4x4 tiles
    restore_config.winograd = False
    assert algorithm(*vgg) != "winograd"
    assert numbaconv.explain(*vgg, padding=1, algorithm="winograd").algorithm == "winograd"


def test_conv2d_follows_the_switch_after_a_cached_call(monkeypatch, restore_config):
    # The cached plans and calls are keyed by the switch too.
    import dataclasses

    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 128, 28, 28), dtype=np.float32)
    w = rng.standard_normal((128, 128, 3, 3), dtype=np.float32)
    ran = []
    for name in ("winograd", "indirect_gemm", "im2col_gemm"):
        algo = REGISTRY[name]
        monkeypatch.setitem(REGISTRY, name, dataclasses.replace(
            algo, run=lambda *a, algo=algo: (ran.append(algo.name), algo.run(*a))))
    restore_config.max_workspace_bytes = 2**26 + 1  # no plan from another test
    for n in (8, 8):
        numbaconv.conv2d(np.repeat(x, n, 0), w, padding=1)
    restore_config.winograd = False
    numbaconv.conv2d(np.repeat(x, 8, 0), w, padding=1)
    assert ran[:2] == ["winograd", "winograd"] and ran[2] != "winograd"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_packed_weight_keeps_its_transform(layout, rng):
    x = rng.standard_normal((2, 6, 9, 10), dtype=np.float32)
    w = rng.standard_normal((4, 3, 3, 3), dtype=np.float32)
    if layout == "NHWC":
        x, w = to_nhwc(x), to_hwio(w)
    kw = dict(padding=1, groups=2, layout=layout, algorithm="winograd")
    packed = numbaconv.pack_weight(w, 2, layout=layout)
    before = packed.nbytes
    want = numbaconv.conv2d_with(x, w, **kw)
    np.testing.assert_array_equal(numbaconv.conv2d_with(x, packed, **kw), want)
    made = packed.nbytes
    assert made > before
    np.testing.assert_array_equal(numbaconv.conv2d_with(x, packed, **kw), want)  # kept
    assert packed.nbytes == made
    x64 = x.astype(np.float64)  # another compute dtype: a transform of its own
    np.testing.assert_array_equal(numbaconv.conv2d_with(x64, packed, **kw),
                                  numbaconv.conv2d_with(x64, w, **kw))
    assert packed.nbytes > made


def test_environment_variable_switches_it_off():
    code = ("import numbaconv; print(numbaconv.config.winograd, numbaconv.explain("
            "(1, 256, 56, 56), (256, 256, 3, 3), padding=1).algorithm)")
    env = {**os.environ, "NUMBACONV_WINOGRAD": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120, check=True).stdout.split()
    assert out[0] == "False" and out[1] != "winograd"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_float32_error_on_a_wide_layer(layout):
    # The error the dispatcher's choice costs on a realistic layer (C = 256):
    # within the float32 bound, and what decisions.md records.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 256, 20, 20))
    w = rng.standard_normal((256, 256, 3, 3)) / np.sqrt(256 * 9)
    ref = conv2d_ref(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, "zeros")
    rms = np.sqrt(np.mean(ref**2))
    for m, rel_rms in ((2, 2e-6), (4, 1e-5)):
        y = run_winograd(x.astype(np.float32), w.astype(np.float32), None, layout, m,
                         padding=1, groups=1, padding_mode="zeros")
        assert_close(y, ref, np.float32)
        assert np.sqrt(np.mean((y - ref) ** 2)) / rms < rel_rms


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_stays_in_its_image_and_its_tile(layout):
    # A NaN reaches the outputs of its own tile (the transforms mix a patch),
    # never another image's, nor a tile whose patch does not hold it.
    x = np.ones((2, 4, 16, 16), np.float32)
    x[1, 2, 5, 6] = np.nan
    w = np.ones((4, 4, 3, 3), np.float32)
    y = run_winograd(x, w, None, layout, 4, padding=1, groups=1, padding_mode="zeros")
    assert np.isfinite(y[0]).all()
    bad = ~np.isfinite(y[1, 0])
    assert bad[4:7, 5:8].all()  # the direct convolution's NaNs
    rows, cols = np.nonzero(bad)
    # Padded (6, 7) is in tile (1, 1) only: output rows and columns 4..7.
    assert rows.min() >= 4 and rows.max() < 8 and cols.min() >= 4 and cols.max() < 8
