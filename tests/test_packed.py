"""packed_gemm (kernels/packed_gemm.py): the register-tiled micro-kernel and its column tiles.

Checked against the float64 reference over every argument, and with the
tile sizes drawn too, so that partial register tiles (rows and columns),
several K blocks, split output channels and tiles that span images all run.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from naive import assert_close, conv2d_ref
from strategies import DTYPES, arrays_for, conv_problems, reference_for

import numbaconv
from numbaconv import machine
from numbaconv.algorithms import REGISTRY
from numbaconv.algorithms._base import tile_for
from numbaconv.algorithms.packed_gemm import PackedTile

# Every ISA variant this host runs, in turn (conftest.isa): one register tile each.
pytestmark = pytest.mark.usefixtures("isa")

# Output channels per group from the smallest variant's MR up: each variant
# (its own MR: both dtypes have as many rows) keeps the problems it can run,
# so og == MR and the partial tiles just past it come up under every one.
ROWS = sorted({machine.register_tile(v, "float32").mr for v in machine.runnable()})
MR = ROWS[-1]


def _runnable_here(prob):
    assume(prob["o"] // prob["groups"] >= tile_for("float32").mr)


def _kwargs(prob):
    return dict(stride=prob["stride_arg"], padding=prob["padding"], dilation=prob["dil_arg"],
                groups=prob["groups"], padding_mode=prob["mode"])


@given(prob=conv_problems(og=(ROWS[0], 3 * MR + 1), max_size=20), dtype=st.sampled_from(DTYPES),
       with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matchesreference_for(prob, dtype, with_bias, seed):
    _runnable_here(prob)
    x, w, b = arrays_for(prob, dtype, with_bias, seed)
    y = numbaconv.conv2d_with(x, w, b, algorithm="packed_gemm", **_kwargs(prob))
    assert y.dtype == dtype
    assert_close(y, reference_for(prob, x, w, b), dtype)


@given(prob=conv_problems(max_groups=2, og=(ROWS[0], 2 * MR + 3), max_size=14),
       dtype=st.sampled_from(DTYPES), data=st.data())
def test_any_tile_sizes_matchreference_for(prob, dtype, data):
    _runnable_here(prob)
    x, w, b = arrays_for(prob, dtype, True, 0)
    y = np.empty_like(reference_for(prob, x, w, b), dtype=dtype)
    plan = numbaconv.explain(x, w, b, algorithm="packed_gemm", **_kwargs(prob))
    k = plan.gemm_k
    tile = PackedTile(
        kc=data.draw(st.integers(1, k), label="kc"),
        nc=tile_for(plan.dtype).nr * data.draw(st.integers(1, 4), label="panels"),
        mc=data.draw(st.integers(tile_for(plan.dtype).mr, prob["o"] // prob["groups"]),
                     label="mc"))
    if prob["n"]:
        REGISTRY["packed_gemm"].run(dataclasses.replace(plan, tile=tile), x, w, b, y)
        assert_close(y, reference_for(prob, x, w, b), dtype)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize(("c", "size", "o", "k", "stride", "pad"), [
    (3, 33, 16, 7, 2, 3),    # a stem: strided runs, 7x7 padding
    (16, 7, 32, 3, 1, 1),    # 49-pixel images: tiles span images
    (24, 15, 20, 3, 1, 1),   # 'same' 3x3: the band copy, partial row tile
    (8, 12, 12, 1, 1, 0),    # 1x1
], ids=lambda v: str(v))
def test_network_shapes(n, c, size, o, k, stride, pad, rng):
    x = rng.standard_normal((n, c, size, size)).astype(np.float32)
    w = rng.standard_normal((o, c, k, k)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    y = numbaconv.conv2d_with(x, w, b, stride=stride, padding=pad, algorithm="packed_gemm")
    ref = conv2d_ref(x, w, b, (stride, stride), (pad,) * 4, (1, 1), 1, "zeros")
    assert_close(y, ref, np.float32)


def test_inputs_are_read_only_and_untouched(rng):
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((MR + 2, 4, 3, 3)).astype(np.float32)
    copies = x.copy(), w.copy()
    x.flags.writeable = w.flags.writeable = False
    numbaconv.conv2d_with(x, w, padding=1, algorithm="packed_gemm")
    np.testing.assert_array_equal(x, copies[0])
    np.testing.assert_array_equal(w, copies[1])


def test_explain_shows_the_tiles():
    plan = numbaconv.explain((8, 64, 56, 56), (64, 64, 3, 3), padding=1,
                             algorithm="packed_gemm")
    kc, nc, mc = plan.tile.kc, plan.tile.nc, plan.tile.mc
    assert 0 < kc <= 576 and nc % tile_for("float32").nr == 0 and MR <= mc <= 64
    assert plan.workspace_bytes <= plan.threads * kc * nc * 4
    assert "packed per thread" in str(plan)
    assert numbaconv.explain((1, 128, 14, 14), (128, 128, 3, 3), padding=1).tile is None


@pytest.mark.parametrize(("x_shape", "w_shape", "layout", "words"), [
    ((1, 9, 9, 8), (3, 3, 8, 16), "NHWC", ["packed_gemm", "NCHW", "'NHWC'"]),
    ((1, 8, 9, 9), (3, 8, 3, 3), "NCHW", ["packed_gemm", "output channels per group", "with 3"]),
])
def test_unsupported_problems_get_a_clear_error(x_shape, w_shape, layout, words):
    with pytest.raises(ValueError, match="algorithm") as err:
        numbaconv.explain(x_shape, w_shape, layout=layout, algorithm="packed_gemm")
    for word in words:
        assert word in str(err.value)
