"""pack_weight / PackedWeight (numbaconv/packed.py): a weight packed once for many calls.

conv2d with a PackedWeight is checked against the float64 reference over
every argument in both layouts and dtypes, with the dispatcher's choice and
with indirect_gemm forced (the path that reads the ready panels); then the
copy semantics, the dtype fallback, the dispatcher's rule for deep layers,
and the errors for a weight packed for another layout or groups.
"""

import numpy as np
import pytest
from checks import assert_clear_error, bench_csv, write_suite
from hypothesis import given
from hypothesis import strategies as st
from naive import assert_close, from_nhwc, to_hwio, to_nhwc
from strategies import DTYPES, LAYOUTS, arrays_for, conv_problems, reference_for

import numbaconv
from numbaconv.cli import main


def _in_layout(layout, x, w):
    if layout == "NCHW":
        return x, w
    return np.ascontiguousarray(to_nhwc(x)), np.ascontiguousarray(to_hwio(w))


def _kwargs(prob, layout):
    return dict(stride=prob["stride_arg"], padding=prob["padding"], dilation=prob["dil_arg"],
                groups=prob["groups"], padding_mode=prob["mode"], layout=layout)


@given(prob=conv_problems(og=(1, 20), max_size=12), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), algorithm=st.sampled_from(["auto", "indirect_gemm"]),
       with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_packed_weight_matches_reference(prob, dtype, layout, algorithm, with_bias, seed, isa):
    x, w, b = arrays_for(prob, dtype, with_bias, seed)
    xl, wl = _in_layout(layout, x, w)
    w0 = wl.copy()
    packed = numbaconv.pack_weight(wl, prob["groups"], layout=layout)
    kw = _kwargs(prob, layout)
    plan = numbaconv.explain(xl, packed, b, algorithm=algorithm, **kw)
    depthwise = prob["c"] == prob["groups"] > 1  # packed with no panels
    assert plan.prepacked == (plan.algorithm == "indirect_gemm" and not depthwise)
    y = numbaconv.conv2d_with(xl, packed, b, algorithm=algorithm, **kw)
    assert y.dtype == dtype
    ref = reference_for(prob, x, w, b)
    assert_close(y if layout == "NCHW" else from_nhwc(y), ref, dtype)
    np.testing.assert_array_equal(wl, w0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_deep_layer_takes_indirect_gemm_only_when_packed(layout, rng):
    # K = 512*9 = 4608: above the per-call packing limit (see algorithms.RULES),
    # with two images' pixels (66 tiles) more than one block, on images of
    # more than 64 pixels.
    x = rng.standard_normal((2, 512, 14, 14)).astype(np.float32)
    w = (rng.standard_normal((512, 512, 3, 3)) / 48).astype(np.float32)
    xl, wl = _in_layout(layout, x, w)
    packed = numbaconv.pack_weight(wl, layout=layout)
    assert numbaconv.explain(xl, wl, padding=1, layout=layout).algorithm == "im2col_gemm"
    plan = numbaconv.explain(xl, packed, padding=1, layout=layout)
    assert (plan.algorithm, plan.prepacked) == ("indirect_gemm", True)
    assert "weight packed beforehand" in str(plan)
    y = numbaconv.conv2d(xl, packed, padding=1, layout=layout)
    assert_close(y, numbaconv.conv2d(xl.astype(np.float64), wl.astype(np.float64), padding=1,
                                     layout=layout), np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_deep_nchw_layer_with_few_pixels_takes_indirect_gemm(dtype, restore_config):
    restore_config.winograd = False  # the rules after Winograd's (tests/test_winograd.py)
    # One image of 7x7: every task packs its own panels from the OIHW weight,
    # reading it once.  Not from HWIO (no gain measured there).  With more
    # pixels than one block of tiles, only float32 on small images goes, or
    # float32 with at least four blocks.
    w = (512, 512, 3, 3)
    assert numbaconv.explain((1, 512, 7, 7), w, padding=1, dtype=dtype).algorithm == \
        "indirect_gemm"
    assert numbaconv.explain((1, 7, 7, 512), (3, 3, 512, 512), padding=1, dtype=dtype,
                             layout="NHWC").algorithm == "im2col_gemm"
    assert numbaconv.explain((8, 512, 7, 7), w, padding=1, dtype=dtype).algorithm == (
        "indirect_gemm" if dtype == np.float32 else "im2col_gemm")
    # At least four blocks of tiles (1568 pixels here): float32 goes again.
    assert numbaconv.explain((8, 512, 14, 14), w, padding=1, dtype=dtype).algorithm == (
        "indirect_gemm" if dtype == np.float32 else "im2col_gemm")
    assert numbaconv.explain((4, 512, 14, 14), w, padding=1, dtype=dtype).algorithm == \
        "im2col_gemm"


def test_packed_weight_is_a_private_copy(rng):
    x = rng.standard_normal((2, 16, 12, 12)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    packed = numbaconv.pack_weight(w)
    before = numbaconv.conv2d(x, packed, padding=1)
    w *= 2  # the caller's array changes; the packed weight does not
    np.testing.assert_array_equal(numbaconv.conv2d(x, packed, padding=1), before)
    assert not packed.weight.flags.writeable
    np.testing.assert_array_equal(np.asarray(packed), w / 2)
    assert packed.shape == w.shape and packed.dtype == np.float32
    assert packed.nbytes >= 2 * w.nbytes


def test_other_compute_dtype_runs_from_the_weight(rng):
    # A float64 input with a float32 packed weight computes in float64: the
    # float32 panels do not apply, and the result is still right.
    x = rng.standard_normal((1, 64, 28, 28))
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    packed = numbaconv.pack_weight(w)
    assert not numbaconv.explain(x, packed, padding=1).prepacked
    y = numbaconv.conv2d(x, packed, padding=1)
    assert y.dtype == np.float64
    assert_close(y, numbaconv.conv2d(x, w.astype(np.float64), padding=1), np.float64)


def test_packed_weight_works_where_a_weight_array_does(rng):
    # np.asarray(packed) is the weight: the backward functions take it as is.
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    packed = numbaconv.pack_weight(w)
    np.testing.assert_array_equal(numbaconv.conv2d_grad_input(x.shape, packed, dy, padding=1),
                                  numbaconv.conv2d_grad_input(x.shape, w, dy, padding=1))


def test_depthwise_weight_has_no_panels(rng):
    w = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 32, 10, 10)).astype(np.float32)
    packed = numbaconv.pack_weight(w, 32)
    assert packed.nbytes == w.nbytes
    assert_close(numbaconv.conv2d(x, packed, padding=1, groups=32),
                 numbaconv.conv2d(x, w, padding=1, groups=32), np.float32)


@pytest.mark.parametrize(("call", "exc", "words"), [
    (lambda p, x: numbaconv.conv2d(x, p, groups=2), ValueError, ["groups", "groups=1", "2"]),
    (lambda p, x: numbaconv.conv2d(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), p,
                                   layout="NHWC"),
     ValueError, ["layout", "'NCHW'", "'NHWC'"]),
    (lambda p, x: numbaconv.explain(x, p, groups=2), ValueError, ["groups", "groups=1"]),
])
def test_packed_for_other_arguments_is_refused(call, exc, words, rng):
    # The panels' order depends on the layout and groups: another call would
    # read them wrongly, so it is an error rather than a silent repack.
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float32)
    packed = numbaconv.pack_weight(rng.standard_normal((4, 4, 3, 3)).astype(np.float32))
    assert_clear_error(lambda: call(packed, x), exc, words)


@pytest.mark.parametrize(("args", "kwargs", "exc", "words"), [
    (([[1.0]],), {}, ValueError, ["weight", "4"]),
    ((np.ones((4, 2, 3, 3), np.int32),), {}, TypeError, ["weight", "int32"]),
    ((np.ones((4, 2, 3, 3), np.float32), 3), {}, ValueError, ["groups", "4", "3"]),
    ((np.ones((4, 2, 3, 3), np.float32), 0), {}, ValueError, ["groups", ">= 1"]),
    ((np.ones((4, 2, 3, 3), np.float32), 1.5), {}, TypeError, ["groups"]),
    ((np.ones((4, 2, 3, 3), np.float32),), {"layout": "NCWH"}, ValueError, ["layout"]),
    ((np.ones((4, 0, 3, 3), np.float32),), {}, ValueError, ["weight", ">= 1"]),
])
def test_bad_pack_weight_arguments(args, kwargs, exc, words):
    assert_clear_error(lambda: numbaconv.pack_weight(*args, **kwargs), exc, words)


def test_bench_prepack_times_packed_weights_and_says_so(tmp_path, capsys):
    suite = write_suite(tmp_path, [{"name": "t.3x3", "C": 3, "H": 10, "W": 9, "O": 20,
                                    "kernel": 3, "padding": 1}])
    out_csv = tmp_path / "r.csv"
    args = ["bench", "--suite", suite, "--compare", "numpy", "--repeat", "1", "--layout",
            "NCHW", "NHWC", "--algorithm", "indirect_gemm", "--csv", str(out_csv)]
    assert main([*args, "--prepack"]) == 0
    assert "weights packed beforehand" in capsys.readouterr().out
    header, rows = bench_csv(out_csv)
    assert "# prepack: True" in header
    assert [r["check"] for r in rows] == ["ok", "ok"]  # checked against NumPy's result
    assert main([*args, "--resume"]) == 2  # rows of another kind are not mixed
    assert "written with --prepack" in capsys.readouterr().err


def test_packed_weight_cannot_be_made_or_changed_behind_pack_weight(rng):
    # Its panels must match its weight: no public constructor, no reassignment,
    # no writing into its arrays.
    w = rng.standard_normal((20, 4, 3, 3)).astype(np.float32)
    packed = numbaconv.pack_weight(w)
    assert_clear_error(lambda: numbaconv.PackedWeight(w, "NCHW", 1, None), TypeError,
                       ["pack_weight"])
    for name in ("weight", "layout", "groups", "_panels"):
        assert_clear_error(lambda name=name: setattr(packed, name, None), AttributeError,
                           ["read-only", repr(name)])
    with pytest.raises(ValueError):
        packed.weight[0, 0, 0, 0] = 1.0
    assert_clear_error(lambda: np.asarray(packed, dtype=np.float64, copy=False), ValueError,
                       ["copy"])
    assert np.asarray(packed, dtype=np.float64).dtype == np.float64


def test_pickled_packed_weight_is_packed_again(rng):
    import pickle

    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    packed = numbaconv.pack_weight(rng.standard_normal((3, 3, 4, 20)).astype(np.float32),
                                   layout="NHWC")
    again = pickle.loads(pickle.dumps(packed))
    assert (again.layout, again.groups, again.weight.flags.writeable) == ("NHWC", 1, False)
    xh = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(
        numbaconv.conv2d_with(xh, again, layout="NHWC", algorithm="indirect_gemm"),
        numbaconv.conv2d_with(xh, packed, layout="NHWC", algorithm="indirect_gemm"))


def test_explain_counts_the_bias_dtype(rng):
    # A float64 bias makes the call float64, where float32 panels do not apply.
    x = np.zeros((1, 128, 28, 28), np.float32)
    packed = numbaconv.pack_weight(rng.standard_normal((128, 128, 3, 3)).astype(np.float32))
    bias = np.zeros(128)
    plan = numbaconv.explain(x, packed, bias, padding=1)
    assert (plan.dtype, plan.prepacked) == ("float64", False)
    assert numbaconv.conv2d(x, packed, bias, padding=1).dtype == np.float64
    assert numbaconv.explain(x, packed, bias.astype(np.float32), padding=1).prepacked
