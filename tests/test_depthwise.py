"""The channel-blocked NCHW depthwise kernel: every ISA variant, bands, chunks, edges."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import assert_close, conv2d_ref
from strategies import DTYPES, conv_problems

import numbaconv
from numbaconv import machine
from numbaconv.algorithms import REGISTRY, direct_depthwise


def forward(plan, x, w, b):
    g = plan.geometry
    out = np.empty((g.n, g.o, g.p, g.q), x.dtype)
    REGISTRY["direct_depthwise"].run(plan, x, w, b, out)
    return out


@settings(max_examples=60)
@given(prob=conv_problems(max_groups=19, og=(1, 1), max_size=21, depthwise=True),
       dtype=st.sampled_from(DTYPES), band=st.integers(1, 8), chunks=st.integers(1, 5),
       act=st.sampled_from([None, "relu6"]), seed=st.integers(0, 2**16))
def test_matches_the_reference(isa, prob, dtype, band, chunks, act, seed):
    # Channel counts past and short of a whole vector, widths short of one
    # transpose, every padding mode, stride and dilation; any band and chunking.
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((prob["n"], prob["c"], prob["h"], prob["w"]))).astype(dtype)
    w = rng.standard_normal((prob["c"], 1, prob["kh"], prob["kw"])).astype(dtype)
    b = rng.standard_normal(prob["c"]).astype(dtype)
    kw = dict(stride=prob["stride_arg"], padding=prob["padding"], dilation=prob["dil_arg"],
              groups=prob["groups"], padding_mode=prob["mode"])
    plan = numbaconv.explain(x, w, b, **kw)
    (sh, sw), (dh, dw) = plan.geometry.stride, prob["dilation"]  # (capped at one pixel)
    wide = sh == sw == 1 and plan.geometry.q > 4 * plan.register_tile.vw
    takes = not wide and sh <= (prob["kh"] - 1) * dh + 1 and sw <= (prob["kw"] - 1) * dw + 1
    assert plan.algorithm == "direct_depthwise" and (plan.tile is not None) == takes
    ref = conv2d_ref(x, w, b, prob["stride"], prob["pads"], prob["dilation"], prob["groups"],
                     prob["mode"])
    if act == "relu6":
        ref = np.clip(ref, 0, 6)
    assert_close(numbaconv.conv2d(x, w, b, activation=act, **kw), ref, dtype)
    if takes:  # the same problem in other bands and chunks
        tile = direct_depthwise.DepthwiseTile(band, chunks)
        assert_close(forward(dataclasses.replace(plan, tile=tile), x, w, b),
                     conv2d_ref(x, w, b, prob["stride"], prob["pads"], prob["dilation"],
                                prob["groups"], prob["mode"]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_stay_in_their_channel(isa, dtype, rng):
    # Padding contributes w * 0, as a convolution of the padded input does: a
    # NaN in a corner tap reaches every output of its channel, the border ones
    # too, and an inf in the input reaches its own channel's window only.
    c = 2 * machine.register_tile(isa, dtype).vw + 3
    x = rng.standard_normal((1, c, 9, 10)).astype(dtype)
    w = rng.standard_normal((c, 1, 3, 3)).astype(dtype)
    w[1, 0, 0, 0] = np.nan
    x[0, c - 1, 4, 4] = np.inf
    y = numbaconv.conv2d(x, w, padding=1, stride=2, groups=c)
    assert numbaconv.explain(x, w, padding=1, stride=2, groups=c).tile is not None
    ref = numbaconv.conv2d_with(x, w, padding=1, stride=2, groups=c, algorithm="im2col_gemm")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(ref))
    assert np.isnan(y[0, 1]).all() and not np.isnan(np.delete(y, 1, axis=1)).any()


def test_bands_keep_their_input_within_half_of_l2(monkeypatch):
    monkeypatch.setattr(machine, "cache_sizes", lambda: (32 << 10, 64 << 10))
    plan = numbaconv.explain((1, 32, 112, 112), (32, 1, 3, 3), stride=2, padding=1, groups=32)
    row = 114 * plan.register_tile.vw * 4  # one padded row of VW float32 channels

    def rows(band):  # the padded rows a band of output rows reads at stride 2
        return (band - 1) * 2 + 3

    assert rows(plan.tile.band) * row <= 32 << 10 < rows(2 * plan.tile.band) * row
    assert plan.tile.chunks == 8 * plan.threads


def test_which_layers_run_the_plane_kernel():
    # Rows and columns that no tap reads are not interleaved: stride past the kernel.
    plan = numbaconv.explain((1, 8, 64, 64), (8, 1, 3, 3), stride=4, padding=1, groups=8)
    assert plan.algorithm == "direct_depthwise" and plan.tile is None
    multiplier = numbaconv.explain((1, 8, 16, 16), (16, 1, 3, 3), padding=1, groups=8)
    assert multiplier.tile is None
    # stride 1: rows of more than 4 vectors take the plane kernel's flat passes
    vw = plan.register_tile.vw
    for q, tiled in ((4 * vw, True), (4 * vw + 1, False)):
        p = numbaconv.explain((1, 8, 3, q), (8, 1, 3, 3), padding=1, groups=8)
        assert (p.tile is not None) == tiled
        assert (numbaconv.explain((1, 8, 3, 2 * q), (8, 1, 3, 3), stride=2, padding=1,
                                  groups=8).tile is not None)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("band", [1, 2, 10])
def test_every_band_and_padding_mode(isa, mode, band, rng):
    # A circular band at the top reads the image's last rows: past the band's
    # reach, so it interleaves row by row; the other modes read one run.
    c = 2 * machine.register_tile(isa, np.float64).vw + 3
    x = rng.standard_normal((2, c, 10, 9))
    w = rng.standard_normal((c, 1, 3, 3))
    b = rng.standard_normal(c)
    plan = numbaconv.explain(x, w, b, padding=2, dilation=(2, 1), groups=c, padding_mode=mode)
    plan = dataclasses.replace(plan, tile=direct_depthwise.DepthwiseTile(band, 3))
    ref = conv2d_ref(x, w, b, (1, 1), (2, 2, 2, 2), (2, 1), c, mode)
    assert_close(forward(plan, x, w, b), ref, np.float64)
