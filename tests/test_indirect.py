"""indirect_gemm (kernels/indirect_gemm.py): convolution with no column matrix, both layouts.

The micro-kernel reads the padded input (or x itself, when nothing is
padded) through two offset tables; the layout is data (``algorithms.indirect_gemm.IndirectDims``).
Checked against the float64 reference over every argument (groups, strides,
dilations, padding forms and modes), in NCHW and NHWC, with the task sizes
and the weight-packing path drawn too, and with a workspace bound that forces
one image per chunk.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from naive import assert_close, conv2d_ref, from_nhwc, to_hwio, to_nhwc
from strategies import DTYPES, LAYOUTS, arrays_for, conv_problems, reference_for

import numbaconv
from numbaconv.algorithms import REGISTRY
from numbaconv.algorithms.indirect_gemm import workspace_bytes


def with_tile(plan, **tile):
    """``plan`` with its task sizes replaced, and the workspace sized for them as planned."""
    tile = dataclasses.replace(plan.tile, **tile)
    room = workspace_bytes(plan.geometry, np.dtype(plan.dtype), plan.batch_chunk,
                           tile.pack_once)
    return dataclasses.replace(plan, tile=tile, workspace_bytes=room)

# Every ISA variant this host runs, in turn (conftest.isa): one register tile each.
pytestmark = pytest.mark.usefixtures("isa")


def _kwargs(prob, layout):
    return dict(stride=prob["stride_arg"], padding=prob["padding"], dilation=prob["dil_arg"],
                groups=prob["groups"], padding_mode=prob["mode"], layout=layout)


def _in_layout(layout, x, w):
    """x and w (NCHW, OIHW) as C-contiguous arrays of ``layout``."""
    if layout == "NCHW":
        return x, w
    return np.ascontiguousarray(to_nhwc(x)), np.ascontiguousarray(to_hwio(w))


def _as_nchw(layout, y):
    return y if layout == "NCHW" else from_nhwc(y)


@given(prob=conv_problems(og=(1, 20), max_size=14), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matchesreference_for(prob, dtype, layout, with_bias, seed):
    x, w, b = arrays_for(prob, dtype, with_bias, seed)
    xl, wl = _in_layout(layout, x, w)
    x0, w0 = xl.copy(), wl.copy()
    y = numbaconv.conv2d_with(xl, wl, b, algorithm="indirect_gemm", **_kwargs(prob, layout))
    assert y.dtype == dtype
    assert_close(_as_nchw(layout, y), reference_for(prob, x, w, b), dtype)
    np.testing.assert_array_equal(xl, x0)  # inputs untouched (x may be read in place)
    np.testing.assert_array_equal(wl, w0)


@given(prob=conv_problems(max_groups=2, og=(1, 20), max_size=10),
       dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS), data=st.data())
def test_any_task_sizes_matchreference_for(prob, dtype, layout, data):
    x, w, b = arrays_for(prob, dtype, True, 0)
    xl, wl = _in_layout(layout, x, w)
    plan = numbaconv.explain(xl, wl, b, algorithm="indirect_gemm", **_kwargs(prob, layout))
    tile = dict(kc=data.draw(st.integers(1, plan.gemm_k), label="kc"),
                tiles=data.draw(st.integers(1, 5), label="tiles per task"),
                panels=data.draw(st.integers(1, 3), label="panels per task"),
                pack_once=data.draw(st.booleans(), label="pack the weight once"))
    ref = reference_for(prob, x, w, b)
    y = np.empty(ref.shape if layout == "NCHW" else to_nhwc(ref).shape, dtype)
    if prob["n"]:
        REGISTRY["indirect_gemm"].run(with_tile(plan, **tile), xl, wl, b, y)
        assert_close(_as_nchw(layout, y), ref, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_image_per_chunk_under_a_small_workspace(layout, rng, restore_config):
    x = rng.standard_normal((3, 6, 9, 10)).astype(np.float32)
    w = rng.standard_normal((18, 6, 3, 3)).astype(np.float32)
    xl, wl = _in_layout(layout, x, w)
    restore_config.max_workspace_bytes = 4096
    plan = numbaconv.explain(xl, wl, padding=1, layout=layout, algorithm="indirect_gemm")
    assert plan.batch_chunk == 1 and plan.chunks == 3
    y = numbaconv.conv2d_with(xl, wl, padding=1, layout=layout, algorithm="indirect_gemm")
    ref = conv2d_ref(x, w, None, (1, 1), (1,) * 4, (1, 1), 1, "zeros")
    assert_close(_as_nchw(layout, y), ref, np.float32)


def test_unpadded_input_is_read_in_place(zen3_avx2):
    padded = numbaconv.explain((2, 64, 28, 28), (128, 64, 3, 3), padding=1,
                               algorithm="indirect_gemm")
    unpadded = numbaconv.explain((2, 64, 28, 28), (128, 64, 3, 3), algorithm="indirect_gemm")
    panels = 64 * 9 * 128 * 4  # the weight as panels (128 channels: whole panels)
    assert padded.workspace_bytes == panels + 2 * 64 * 30 * 30 * 4
    assert unpadded.workspace_bytes == panels
    # Batch 1, 14x14: two tile blocks, each task packs its own panels, so the
    # workspace holds the padded image only.
    own = numbaconv.explain((1, 256, 14, 14), (256, 256, 3, 3), padding=1,
                            algorithm="indirect_gemm")
    assert not own.tile.pack_once and own.workspace_bytes == 256 * 16 * 16 * 4


def test_tiles_follow_the_problem(zen3_avx2):
    # Batch 1, 7x7 images, a deep layer: one block of tiles, the weight's
    # panels split across tasks and packed per task (each is read once).
    t = numbaconv.explain((1, 512, 7, 7), (512, 512, 3, 3), padding=1,
                          algorithm="indirect_gemm").tile
    kc, per, panels, once = t.kc, t.tiles, t.panels, t.pack_once
    assert (per, once) == (9, False) and panels < 32 and kc <= 256
    # Many pixels: blocks of at most 32 tiles, the weight packed once per call.
    t = numbaconv.explain((8, 64, 56, 56), (64, 64, 3, 3), padding=1).tile
    kc, per, panels, once = t.kc, t.tiles, t.panels, t.pack_once
    assert per <= 32 and panels == 4 and once
    # K blocks: at most 256 rows, 128 in strided NCHW layers (a strided task
    # spans more input rows), in even blocks; any stride.
    assert kc == 192
    strided = dict(stride=2, padding=1, algorithm="indirect_gemm")
    assert numbaconv.explain((1, 128, 56, 56), (128, 128, 3, 3), **strided).tile.kc == 128
    assert numbaconv.explain((1, 56, 56, 128), (3, 3, 128, 128), layout="NHWC",
                             **strided).tile.kc == 231
    assert numbaconv.explain((11, 9, 600, 600), (512, 9, 16, 16), stride=300).tile.kc == 128


def test_a_stride_above_the_k_block(rng):
    x = rng.standard_normal((2, 4, 600, 5)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    got = numbaconv.conv2d_with(x, w, stride=(257, 1), algorithm="indirect_gemm")
    assert_close(got, conv2d_ref(x, w, stride=(257, 1)), np.float32)


def test_the_dispatcher_picks_it_for_wide_layers(restore_config):
    restore_config.winograd = False  # the rules after Winograd's (tests/test_winograd.py)
    for layout, x, w in (("NHWC", (8, 224, 224, 3), (7, 7, 3, 64)),
                         ("NCHW", (8, 3, 224, 224), (64, 3, 7, 7))):
        stem = numbaconv.explain(x, w, stride=2, padding=3, layout=layout)
        assert stem.algorithm == "indirect_gemm"
        assert "no column matrix" in str(stem)
    deep = numbaconv.explain((8, 7, 7, 512), (3, 3, 512, 512), padding=1, layout="NHWC")
    assert deep.algorithm == "im2col_gemm"  # K = 4608: BLAS was faster there
    assert numbaconv.explain((8, 256, 14, 14), (256, 256, 3, 3), padding=1).algorithm == (
        "indirect_gemm")  # K = 2304
    assert numbaconv.explain((1, 64, 56, 56), (64, 64, 3, 3), padding=1).algorithm == (
        "indirect_gemm")  # 0.23 GFLOP


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_small_calls_take_it_only_when_narrow(layout, dtype):
    """Below INDIRECT_MIN_FLOPS, down to NARROW_MIN_FLOPS for at most NARROW_MAX_CHANNELS
    output channels per group (the gather im2col_gemm would run feeds few multiply-adds)."""
    def pick(x, w, **kw):
        if layout == "NHWC":
            x, w = (x[0], *x[2:], x[1]), (*w[2:], w[1], w[0])
        return numbaconv.explain(np.empty(x, dtype), np.empty(w, dtype), layout=layout,
                                 **kw).algorithm

    # MobileNetV2's stem, 0.022 GFLOP, 32 channels; a 64-channel 28x28 layer, 0.058 GFLOP.
    assert pick((1, 3, 224, 224), (32, 3, 3, 3), stride=2, padding=1) == "indirect_gemm"
    assert pick((1, 64, 28, 28), (64, 64, 3, 3), padding=1) == "indirect_gemm"
    assert pick((1, 64, 28, 28), (65, 64, 3, 3), padding=1) == "im2col_gemm"  # 65 channels
    assert pick((1, 128, 16, 16), (128, 64, 3, 3), padding=1, groups=2) == "indirect_gemm"
    assert pick((1, 16, 16, 16), (16, 16, 3, 3), padding=1) == "im2col_gemm"  # 0.0012 GFLOP


@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_pixel_images(layout, rng):
    # P*Q == 1: NCHW's channel stride equals NHWC's, yet its tiles are not rows of out.
    x = rng.standard_normal((5, 3, 1, 1)).astype(np.float32)
    w = rng.standard_normal((20, 3, 1, 1)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    xl, wl = _in_layout(layout, x, w)
    y = numbaconv.conv2d_with(xl, wl, b, layout=layout, algorithm="indirect_gemm")
    assert_close(_as_nchw(layout, y), conv2d_ref(x, w, b), np.float32)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("panels", [1, 2])
def test_write_out_blocks_and_leftovers(layout, dtype, with_bias, panels, rng):
    # Each task sums into a scratch block, panel by panel, then writes it
    # out: NCHW in blocks of VW pixels x VW channels, transposed in
    # registers; NHWC as one line of NR channels per pixel and panel.  19
    # channels: one panel a task leaves a short panel (no whole line, and
    # for NR = 16 or 32 no whole block); two leave whole ones and channels
    # over in one task.  Three tiles a task over 7x9 = 63-pixel images: a
    # task's pixels run across two images, in runs that end in a short
    # block, and the last task's tile is partly real pixels.  C = 32 makes
    # K = 288: two K blocks of 144, each packed by the task itself or read
    # from panels packed once.
    x = rng.standard_normal((3, 32, 7, 9)).astype(dtype)
    w = rng.standard_normal((19, 32, 3, 3)).astype(dtype)
    b = rng.standard_normal(19).astype(dtype) if with_bias else None
    want = conv2d_ref(x, w, b, pads=(1, 1, 1, 1))
    if layout == "NHWC":
        x, w, want = x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), want.transpose(0, 2, 3, 1)
        x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    plan = numbaconv.explain(x, w, b, padding=1, layout=layout, algorithm="indirect_gemm")
    plan = with_tile(plan, kc=144, tiles=3, panels=panels, pack_once=panels == 1)
    out = np.full(want.shape, np.nan, dtype)
    REGISTRY["indirect_gemm"].run(plan, x, w, b, out)
    assert_close(out, want, dtype)


@pytest.mark.parametrize("vw", [1, 2, 4, 8, 16])
def test_the_shuffle_network_transposes(vw):
    from numbaconv.kernels.registers import transpose_network

    rows = [[(j, k) for k in range(vw)] for j in range(vw)]
    assert transpose_network(vw, rows) == [[(j, k) for j in range(vw)] for k in range(vw)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("o, k", [(16, 8), (40, 27), (7, 100), (64, 147), (33, 4)])
@pytest.mark.parametrize("weight_layout", ["OIHW", "HWIO"])
def test_weight_panels_match_a_plain_reshape(dtype, o, k, weight_layout, rng):
    """pack_panels (the in-register transposes of OIHW blocks, and every edge) vs NumPy."""
    from numbaconv import kernels
    from numbaconv._args import layout_of
    from numbaconv.algorithms.indirect_gemm import panel_shape, panel_strides

    w = rng.standard_normal((o, k)).astype(dtype)  # W[o, k]
    flat = (w if weight_layout == "OIHW" else np.ascontiguousarray(w.T)).reshape(-1)
    w_k, w_o = panel_strides(layout_of("NCHW" if weight_layout == "OIHW" else "NHWC"), o, k)
    shape = panel_shape(1, o, k, np.dtype(dtype))
    got = np.full(shape, np.nan, dtype)
    kernels.get("pack_panels", "ANY", dtype)(flat, w_k, w_o, got)
    nr = shape[3]
    want = np.zeros((shape[1] * nr, k), dtype)
    want[:o] = w
    want = want.reshape(shape[1], nr, k).transpose(0, 2, 1)[None]  # (1, panels, K, NR)
    np.testing.assert_array_equal(got, want)
