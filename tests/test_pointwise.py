"""pointwise_gemm (kernels/pointwise.py): 1x1 convolutions on Numba's own GEMM.

Checked against the float64 reference in NCHW and NHWC, both dtypes, with
groups, bias, and sizes around the register tile (fewer than MR rows, fewer
than NR columns, partial last tiles); then with the task sizes drawn too.
"""

import dataclasses

import numpy as np
import pytest
from checks import assert_clear_error
from hypothesis import given
from hypothesis import strategies as st
from naive import assert_close, conv2d_ref, from_nhwc, to_hwio, to_nhwc
from strategies import DTYPES, LAYOUTS

import numbaconv
from numbaconv import machine
from numbaconv.algorithms import POINTWISE_MAX_FLOPS, REGISTRY
from numbaconv.algorithms._base import tile_for
from numbaconv.algorithms.indirect_gemm import wide_panels
from numbaconv.algorithms.pointwise_gemm import pointwise_tile


def run_with_tile(plan, x, w, b, y, **tile):
    """Run ``plan`` with its task sizes replaced by ``tile`` (kc, panels, row_tiles)."""
    plan = dataclasses.replace(plan, tile=dataclasses.replace(plan.tile, **tile))
    REGISTRY["pointwise_gemm"].run(plan, x, w, b, y)

# Every ISA variant this host runs, in turn (conftest.isa): one register tile each.
pytestmark = pytest.mark.usefixtures("isa")


@st.composite
def pointwise_problems(draw):
    groups = draw(st.integers(1, 3))
    return dict(n=draw(st.integers(0, 3)), groups=groups, c=groups * draw(st.integers(1, 40)),
                o=groups * draw(st.integers(1, 40)), h=draw(st.integers(1, 9)),
                w=draw(st.integers(1, 9)))


def _arrays(prob, dtype, layout, with_bias, seed):
    """(x, w, b) in ``layout``, and the float64 reference (NCHW)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((prob["n"], prob["c"], prob["h"], prob["w"])).astype(dtype)
    w = rng.standard_normal((prob["o"], prob["c"] // prob["groups"], 1, 1)).astype(dtype)
    b = rng.standard_normal(prob["o"]).astype(dtype) if with_bias else None
    ref = conv2d_ref(x, w, b, (1, 1), (0, 0, 0, 0), (1, 1), prob["groups"], "zeros")
    if layout == "NHWC":
        x, w = np.ascontiguousarray(to_nhwc(x)), np.ascontiguousarray(to_hwio(w))
    return x, w, b, ref


@given(prob=pointwise_problems(), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_reference(prob, dtype, layout, with_bias, seed):
    x, w, b, ref = _arrays(prob, dtype, layout, with_bias, seed)
    x0, w0 = x.copy(), w.copy()
    y = numbaconv.conv2d_with(x, w, b, groups=prob["groups"], layout=layout,
                              algorithm="pointwise_gemm")
    assert y.dtype == dtype
    assert_close(y if layout == "NCHW" else from_nhwc(y), ref, dtype)
    np.testing.assert_array_equal(x, x0)  # A and B are read in place / packed: untouched
    np.testing.assert_array_equal(w, w0)


@given(prob=pointwise_problems(), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), data=st.data())
def test_any_task_sizes_match_reference(prob, dtype, layout, data):
    x, w, b, ref = _arrays(prob, dtype, layout, True, 0)
    plan = numbaconv.explain(x, w, b, groups=prob["groups"], layout=layout,
                             algorithm="pointwise_gemm")
    tile = dict(kc=data.draw(st.integers(1, plan.gemm_k), label="kc"),
                panels=data.draw(st.integers(1, 3), label="panels per task"),
                row_tiles=data.draw(st.integers(1, 4), label="row tiles per task"))
    y = np.full(ref.shape if layout == "NCHW" else to_nhwc(ref).shape, np.nan, dtype)
    run_with_tile(plan, x, w, b, y, **tile)
    assert_close(y if layout == "NCHW" else from_nhwc(y), ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_width_of_last_panel_matches_reference(dtype):
    # Up to half a panel, the last one runs as dot products (dot_rows), past
    # it as a register tile: every remainder of columns, with rows below,
    # at and past MR, and K with taps left over from the vector width.
    rt = tile_for(dtype)
    nr = rt.nr
    for cols in range(1, nr):
        for o, c in ((3, 5), (rt.mr, 17), (rt.mr + 7, 12)):
            prob = dict(n=2, groups=1, c=c, o=o, h=1, w=2 * nr + cols)
            x, w, b, ref = _arrays(prob, dtype, "NCHW", True, cols)
            y = numbaconv.conv2d_with(x, w, b, algorithm="pointwise_gemm")
            assert_close(y, ref, dtype)
            # K blocks of 3: the first stores whole tiles, the rest add, and
            # the dot products of a narrow panel add up across the blocks.
            plan = numbaconv.explain(x, w, b, algorithm="pointwise_gemm")
            y = np.full(ref.shape, np.nan, dtype)
            run_with_tile(plan, x, w, b, y, kc=3, panels=2, row_tiles=1)
            assert_close(y, ref, dtype)


def test_dispatcher_takes_it_for_small_layers_and_blas_above():
    # ResNet-50's 1x1 layers at batch 1 (0.03-0.1 GFLOP) stay on Numba's pool,
    # at batch 8 (0.2-0.8 GFLOP) they go to OpenBLAS.  On a wide register
    # tile (AVX-512), a layer whose pixels make one block of tiles (7x7 at
    # batch 1) takes indirect_gemm, still on Numba's pool.
    for shapes in (((64, 56, 56), (256, 64, 1, 1)), ((512, 7, 7), (2048, 512, 1, 1))):
        small = numbaconv.explain((1, *shapes[0]), shapes[1])
        one_block = shapes[0][1] == 7 and wide_panels(np.float32)
        assert small.flops < POINTWISE_MAX_FLOPS and small.algorithm == (
            "indirect_gemm" if one_block else "pointwise_gemm")
        big = numbaconv.explain((8, *shapes[0]), shapes[1])
        assert big.flops >= POINTWISE_MAX_FLOPS and big.algorithm == "gemm_1x1"
    # Not a plain GEMM: strided or padded 1x1 layers gather as before.
    assert numbaconv.explain((1, 64, 56, 56), (256, 64, 1, 1), stride=2).algorithm != (
        "pointwise_gemm")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tasks_fill_the_threads(layout):
    # Batch 1, 7x7 pixels and 2048 channels: one block of columns, so the
    # rows are split, into whole rounds for the threads.
    x = (1, 512, 7, 7) if layout == "NCHW" else (1, 7, 7, 512)
    w = (2048, 512, 1, 1) if layout == "NCHW" else (1, 1, 512, 2048)
    plan = numbaconv.explain(x, w, layout=layout, algorithm="pointwise_gemm")
    kc, panels, rows = plan.tile.kc, plan.tile.panels, plan.tile.row_tiles
    rt = plan.register_tile
    tasks = -(-plan.gemm_n // (panels * rt.nr)) * -(-plan.gemm_m // (rows * rt.mr))
    k_blocks = -(-plan.gemm_k // machine.blocks(rt).kc)  # as few as fit, even
    assert kc == -(-plan.gemm_k // k_blocks) and tasks >= 4 * plan.threads
    assert tasks % plan.threads == 0


def test_fewer_panels_per_task_before_splitting_rows(zen3_avx2):
    # 28x28 pixels (49 panels) at batch 1: blocks of 5 panels make 10 tasks,
    # a whole number of rounds for 2 threads, with every row in each task
    # (a row split would pack each panel's B twice).
    dims = numbaconv.explain((1, 512, 28, 28), (128, 512, 1, 1)).tile.dims
    tile = pointwise_tile(dims, np.dtype(np.float32), 2)
    assert (tile.kc, tile.panels) == (256, 5) and tile.row_tiles * 6 >= 128
    # 14x14 with K = 1024 has 13 panels: too few, so its rows split.
    dims = numbaconv.explain((1, 1024, 14, 14), (256, 1024, 1, 1)).tile.dims
    assert pointwise_tile(dims, np.dtype(np.float32), 2).row_tiles * 6 < 256


def test_forcing_it_on_a_layer_that_is_no_gemm_names_the_reason():
    assert_clear_error(
        lambda: numbaconv.conv2d_with(np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3)),
                                      algorithm="pointwise_gemm"),
        ValueError, ["algorithm", "pointwise_gemm", "1x1", "3x3"])
