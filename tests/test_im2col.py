"""im2col and col2im against the reference, the worked example, and adjointness."""

import numpy as np
import pytest
from checks import torch
from hypothesis import given
from hypothesis import strategies as st
from naive import assert_close, col2im_ref, im2col_ref, to_nhwc
from strategies import DTYPES, LAYOUTS, conv_problems

import numbaconv

# The worked example from the im2col literature: 1x3x4x4 input, 2x2 kernel.
EXAMPLE = np.array([
    [[3, 0, 4, 2], [6, 5, 4, 3], [3, 0, 2, 3], [1, 0, 3, 1]],
    [[1, 2, 0, 1], [3, 0, 2, 4], [1, 0, 3, 2], [4, 3, 0, 1]],
    [[4, 2, 0, 1], [1, 2, 0, 4], [3, 0, 4, 2], [6, 2, 4, 5]],
], dtype=np.float64)[None]

# Worked out by hand: patch (p, q) is [channel 0 | channel 1 | channel 2], each (kh, kw).
EXAMPLE_PATCHES = np.array([
    [3, 0, 6, 5, 1, 2, 3, 0, 4, 2, 1, 2],
    [0, 4, 5, 4, 2, 0, 0, 2, 2, 0, 2, 0],
    [4, 2, 4, 3, 0, 1, 2, 4, 0, 1, 0, 4],
    [6, 5, 3, 0, 3, 0, 1, 0, 1, 2, 3, 0],
    [5, 4, 0, 2, 0, 2, 0, 3, 2, 0, 0, 4],
    [4, 3, 2, 3, 2, 4, 3, 2, 0, 4, 4, 2],
    [3, 0, 1, 0, 1, 0, 4, 3, 3, 0, 6, 2],
    [0, 2, 0, 3, 0, 3, 3, 0, 0, 4, 2, 4],
    [2, 3, 3, 1, 3, 2, 0, 1, 4, 2, 4, 5],
], dtype=np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_worked_example_nchw(dtype):
    cols = numbaconv.im2col(EXAMPLE.astype(dtype), 2)
    assert cols.shape == (1, 12, 9) and cols.dtype == dtype
    np.testing.assert_array_equal(cols[0].T, EXAMPLE_PATCHES)


@pytest.mark.parametrize("dtype", DTYPES)
def test_worked_example_nhwc(dtype):
    cols = numbaconv.im2col(to_nhwc(EXAMPLE).astype(dtype), (2, 2), layout="NHWC")
    assert cols.shape == (1, 9, 12)
    # NHWC columns are (kh, kw, c): the same patches with the axes reordered.
    expected = EXAMPLE_PATCHES.reshape(9, 3, 2, 2).transpose(0, 2, 3, 1).reshape(9, 12)
    np.testing.assert_array_equal(cols[0], expected)


def _problem_arrays(prob, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((prob["n"], prob["c"], prob["h"], prob["w"])).astype(dtype)
    kw = dict(stride=prob["stride_arg"], padding=prob["padding"], dilation=prob["dil_arg"])
    return rng, x, kw


def _nhwc_cols_to_nchw(cols, c, kh, kw):
    n, length, _ = cols.shape
    cols = cols.reshape(n, length, kh, kw, c).transpose(0, 4, 2, 3, 1)
    return cols.reshape(n, c * kh * kw, length)


@given(prob=conv_problems(max_groups=1), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_im2col_matches_reference(prob, dtype, layout, seed):
    _, x, kw = _problem_arrays(prob, dtype, seed)
    ref = im2col_ref(x, prob["kh"], prob["kw"], prob["stride"], prob["pads"], prob["dilation"],
                     prob["mode"])
    k = (prob["kh"], prob["kw"])
    if layout == "NCHW":
        cols = numbaconv.im2col(x, k, padding_mode=prob["mode"], **kw)
    else:
        cols = numbaconv.im2col(to_nhwc(x), k, layout="NHWC", padding_mode=prob["mode"], **kw)
        cols = _nhwc_cols_to_nchw(cols, prob["c"], *k)
    assert cols.dtype == dtype
    np.testing.assert_array_equal(cols, ref.astype(dtype))  # a gather is exact


@given(prob=conv_problems(max_groups=1), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_col2im_is_the_adjoint_of_im2col(prob, dtype, layout, seed):
    # <im2col(x), y> == <x, col2im(y)>, for every padding mode.
    rng, x, kw = _problem_arrays(prob, dtype, seed)
    k = (prob["kh"], prob["kw"])
    if layout == "NHWC":
        x = to_nhwc(x)
    cols = numbaconv.im2col(x, k, layout=layout, padding_mode=prob["mode"], **kw)
    y = rng.standard_normal(cols.shape).astype(dtype)
    back = numbaconv.col2im(y, (prob["h"], prob["w"]), k, layout=layout,
                            padding_mode=prob["mode"], **kw)
    assert back.shape == x.shape and back.dtype == dtype
    lhs = np.sum(cols.astype(np.float64) * y)
    rhs = np.sum(x.astype(np.float64) * back)
    scale = max(1.0, float(np.sum(np.abs(cols.astype(np.float64) * y))))
    assert abs(lhs - rhs) <= (1e-5 if dtype == np.float32 else 1e-12) * scale


@given(prob=conv_problems(max_groups=1), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_col2im_matches_fold_reference(prob, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    h, w, kh, kw = prob["h"], prob["w"], prob["kh"], prob["kw"]
    pads = prob["pads"]
    p = (h + pads[0] + pads[1] - (kh - 1) * prob["dilation"][0] - 1) // prob["stride"][0] + 1
    q = (w + pads[2] + pads[3] - (kw - 1) * prob["dilation"][1] - 1) // prob["stride"][1] + 1
    cols = rng.standard_normal((prob["n"], prob["c"] * kh * kw, p * q)).astype(dtype)
    ref = col2im_ref(cols, h, w, kh, kw, prob["stride"], pads, prob["dilation"])
    kwargs = dict(stride=prob["stride_arg"], padding=prob["padding"], dilation=prob["dil_arg"])
    if layout == "NCHW":
        got = numbaconv.col2im(cols, (h, w), (kh, kw), **kwargs)
    else:
        nhwc_cols = cols.reshape(prob["n"], prob["c"], kh, kw, p * q).transpose(0, 4, 2, 3, 1)
        nhwc_cols = nhwc_cols.reshape(prob["n"], p * q, kh * kw * prob["c"])
        got = numbaconv.col2im(nhwc_cols, (h, w), (kh, kw), layout="NHWC", **kwargs)
        got = np.moveaxis(got, -1, 1)
    assert_close(got, ref, dtype)


def test_unbatched_and_array_likes():
    x = EXAMPLE[0]
    cols = numbaconv.im2col(x.tolist(), 2)
    np.testing.assert_array_equal(cols.T, EXAMPLE_PATCHES)
    ro = EXAMPLE.astype(">f4")
    ro.flags.writeable = False
    np.testing.assert_array_equal(numbaconv.im2col(ro, 2)[0].T, EXAMPLE_PATCHES)
    back = numbaconv.col2im(cols, 4, 2)
    assert back.shape == (3, 4, 4)
    np.testing.assert_array_equal(back, col2im_ref(cols[None], 4, 4, 2, 2)[0])
    assert numbaconv.im2col(np.zeros((0, 2, 5, 5)), 3).shape == (0, 18, 9)
    assert numbaconv.col2im(np.zeros((0, 18, 9)), 5, 3).shape == (0, 2, 5, 5)


# PyTorch is an optional peer: these tests skip without it.


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
def test_matches_torch_unfold_and_fold():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 9, 7))
    kw = dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    cols = numbaconv.im2col(x, **kw)
    np.testing.assert_allclose(cols, torch.nn.functional.unfold(torch.from_numpy(x), **kw))
    back = numbaconv.col2im(cols, (9, 7), **kw)
    ref = torch.nn.functional.fold(torch.from_numpy(cols), output_size=(9, 7), **kw)
    np.testing.assert_allclose(back, ref.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize(("kernel", "stride", "dilation"), [(7, 2, 1), (3, 1, 1), (3, 1, 2)])
def test_nhwc_col2im_adds_whole_kernel_rows(mode, kernel, stride, dilation):
    # Without groups, a kernel row whose taps land on consecutive pixels is added as one
    # run of KW*C values (kernels/col2im.py); at the edges and with dilation, tap by tap.
    # Against the float64 fold reference, on a 3-channel stem-like problem.
    rng = np.random.default_rng(kernel * 10 + stride + dilation)
    n, c, h, w = 2, 3, 17, 20
    pad = dilation * (kernel - 1) // 2
    cols = numbaconv.im2col(np.zeros((n, h, w, c)), kernel, stride=stride, padding=pad,
                            dilation=dilation, layout="NHWC", padding_mode=mode)
    y = rng.standard_normal(cols.shape)
    got = numbaconv.col2im(y, (h, w), kernel, stride=stride, padding=pad, dilation=dilation,
                           layout="NHWC", padding_mode=mode)
    # The adjoint, one tap at a time: every column entry back onto the input it was read from.
    x = rng.standard_normal((n, h, w, c))
    lhs = np.sum(numbaconv.im2col(x, kernel, stride=stride, padding=pad, dilation=dilation,
                                  layout="NHWC", padding_mode=mode) * y)
    assert abs(lhs - np.sum(x * got)) <= 1e-9 * max(1.0, float(np.sum(np.abs(y))))
    if mode == "zeros":
        nchw = y.reshape(n, -1, kernel, kernel, c).transpose(0, 4, 2, 3, 1)
        ref = col2im_ref(nchw.reshape(n, c * kernel * kernel, -1), h, w, kernel, kernel,
                         (stride, stride), (pad,) * 4, (dilation, dilation))
        assert_close(np.moveaxis(got, -1, 1), ref, np.float64)
