"""indirect_gemm (kernels/gemm.py): NHWC convolution with no column matrix.

The micro-kernel reads the padded input through two offset tables.  Checked
against the float64 reference over every argument (groups, strides,
dilations, padding forms and modes), with the task sizes drawn too, and
with a workspace bound that forces one image per chunk.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from naive import assert_close, conv2d_ref, from_nhwc, to_hwio, to_nhwc
from strategies import DTYPES, arrays_for, conv_problems, reference_for

import numbaconv
from numbaconv._execute import RUNNERS


def _kwargs(prob):
    return dict(stride=prob["stride_arg"], padding=prob["padding"], dilation=prob["dil_arg"],
                groups=prob["groups"], padding_mode=prob["mode"], layout="NHWC")


@given(prob=conv_problems(og=(1, 20), max_size=14), dtype=st.sampled_from(DTYPES),
       with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matchesreference_for(prob, dtype, with_bias, seed):
    x, w, b = arrays_for(prob, dtype, with_bias, seed)
    y = numbaconv.conv2d_with(to_nhwc(x), to_hwio(w), b, algorithm="indirect_gemm",
                              **_kwargs(prob))
    assert y.dtype == dtype
    assert_close(from_nhwc(y), reference_for(prob, x, w, b), dtype)


@given(prob=conv_problems(max_groups=2, og=(1, 20), max_size=10),
       dtype=st.sampled_from(DTYPES), data=st.data())
def test_any_task_sizes_matchreference_for(prob, dtype, data):
    x, w, b = arrays_for(prob, dtype, True, 0)
    xn, wn = np.ascontiguousarray(to_nhwc(x)), np.ascontiguousarray(to_hwio(w))
    plan = numbaconv.explain(xn, wn, b, algorithm="indirect_gemm", **_kwargs(prob))
    tile = (data.draw(st.integers(1, plan.gemm_k), label="kc"),
            data.draw(st.integers(1, 5), label="tiles per task"),
            data.draw(st.integers(1, 3), label="panels per task"))
    ref = reference_for(prob, x, w, b)
    y = np.empty(to_nhwc(ref).shape, dtype)
    if prob["n"]:
        RUNNERS["indirect_gemm"](dataclasses.replace(plan, tile=tile), xn, wn, b, y)
        assert_close(from_nhwc(y), ref, dtype)


def test_one_image_per_chunk_under_a_small_workspace(rng, restore_config):
    x = rng.standard_normal((3, 9, 10, 6)).astype(np.float32)
    w = rng.standard_normal((3, 3, 6, 18)).astype(np.float32)
    restore_config.max_workspace_bytes = 4096
    plan = numbaconv.explain(x, w, padding=1, layout="NHWC", algorithm="indirect_gemm")
    assert plan.batch_chunk == 1 and plan.chunks == 3
    y = numbaconv.conv2d_with(x, w, padding=1, layout="NHWC", algorithm="indirect_gemm")
    ref = conv2d_ref(from_nhwc(x), w.transpose(3, 2, 0, 1), None, (1, 1), (1,) * 4, (1, 1), 1,
                     "zeros")
    assert_close(from_nhwc(y), ref, np.float32)


def test_the_dispatcher_picks_it_for_wide_nhwc_layers():
    stem = numbaconv.explain((8, 224, 224, 3), (7, 7, 3, 64), stride=2, padding=3,
                             layout="NHWC")
    assert stem.algorithm == "indirect_gemm"
    assert "no column matrix" in str(stem)
    deep = numbaconv.explain((8, 7, 7, 512), (3, 3, 512, 512), padding=1, layout="NHWC")
    assert deep.algorithm == "im2col_gemm"  # K = 4608: BLAS was faster there
    assert numbaconv.explain((8, 64, 56, 56), (64, 64, 3, 3), padding=1).algorithm == (
        "im2col_gemm")  # NCHW


def test_nchw_is_refused_clearly():
    with pytest.raises(ValueError, match="algorithm: 'indirect_gemm' needs layout 'NHWC'"):
        numbaconv.explain((1, 8, 9, 9), (4, 8, 3, 3), algorithm="indirect_gemm")
