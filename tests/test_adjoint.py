"""grad_input of a stride-1 layer as a forward convolution (``algorithms._adjoint``).

The forward algorithms that compute it (``indirect_gemm`` here; ``winograd``
in test_winograd.py) are forced on small problems and checked against the
float64 reference gradient, on every ISA variant this host runs; then the
backward rules are checked to take them where they should, and only there.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from naive import assert_close, conv2d_ref, from_nhwc, grads_ref, to_hwio, to_nhwc
from strategies import DTYPES, LAYOUTS

import numbaconv
from numbaconv import _args
from numbaconv._plan import backward_plan, get_plan
from numbaconv.algorithms import REGISTRY, _adjoint

# Every ISA variant this host runs, in turn (conftest.isa): one register tile each.
pytestmark = pytest.mark.usefixtures("isa")


@st.composite
def adjoint_problems(draw):
    """Stride 1, zero padding, each pad at most the dilated kernel's reach (asymmetric)."""
    groups = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 5)), draw(st.integers(1, 20))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    reach = ((kh - 1) * dil[0], (kw - 1) * dil[1])
    pads = tuple(draw(st.integers(0, reach[i // 2])) for i in range(4))
    h = draw(st.integers(max(1, reach[0] + 1 - pads[0] - pads[1]), 12))
    w = draw(st.integers(max(1, reach[1] + 1 - pads[2] - pads[3]), 12))
    return dict(n=draw(st.integers(1, 3)), c=groups * cg, o=groups * og, h=h, w=w, kh=kh,
                kw=kw, dilation=dil, pads=pads, groups=groups)


def forced_grad_input(prob, w, gout, layout, algorithm="indirect_gemm"):
    """``algorithm``'s grad_input on NCHW/OIHW data in either layout; NCHW back."""
    lay = _args.layout_of(layout)
    x_shape = (prob["n"], prob["c"], prob["h"], prob["w"])
    if layout == "NHWC":
        x_shape = (x_shape[0], *x_shape[2:], x_shape[1])
        w, gout = to_hwio(w), to_nhwc(gout)
    w, gout = np.ascontiguousarray(w), np.ascontiguousarray(gout)
    p = prob["pads"]
    g = _args.conv_geometry(x_shape, w.shape, lay, 1, ((p[0], p[1]), (p[2], p[3])),
                            prob["dilation"], prob["groups"], "zeros")
    gx = REGISTRY[algorithm].grad_input(get_plan(g, lay, w.dtype, algorithm), w, gout)
    assert gx.dtype == w.dtype and gx.shape == x_shape
    return gx if layout == "NCHW" else from_nhwc(gx)


@given(prob=adjoint_problems(), dtype=st.sampled_from(DTYPES), layout=st.sampled_from(LAYOUTS),
       seed=st.integers(0, 2**16))
def test_indirect_grad_input_matches_reference(prob, dtype, layout, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((prob["n"], prob["c"], prob["h"], prob["w"])).astype(dtype)
    w = rng.standard_normal((prob["o"], prob["c"] // prob["groups"], prob["kh"], prob["kw"]))
    w = w.astype(dtype)
    args = ((1, 1), prob["pads"], prob["dilation"], prob["groups"])
    gout = rng.standard_normal(conv2d_ref(x, w, None, *args).shape).astype(dtype)
    gout_before = gout.copy()
    gx = forced_grad_input(prob, w, gout, layout)
    assert_close(gx, grads_ref(x, w, gout, *args)[0], dtype)
    np.testing.assert_array_equal(gout, gout_before)  # inputs are never modified


def geometry(x_shape, w_shape, layout="NCHW", stride=1, padding=1, dilation=1, groups=1,
             mode="zeros"):
    return _args.conv_geometry(x_shape, w_shape, _args.layout_of(layout), stride, padding,
                               dilation, groups, mode)


def test_transposed_is_the_input_sized_forward_problem():
    g = geometry((2, 6, 9, 11), (8, 3, 5, 3), padding=((4, 0), (1, 2)), dilation=(1, 2),
                 groups=2)
    t = _adjoint.transposed(g)
    assert (t.c, t.o, t.h, t.w, t.p, t.q) == (g.o, g.c, g.p, g.q, g.h, g.w)
    assert t.pads == (0, 4, 3, 2) and t.dilation == g.dilation and t.groups == 2
    # None where grad_input is no plain convolution of grad_out:
    assert _adjoint.transposed(geometry((1, 4, 9, 9), (4, 4, 3, 3), stride=2)) is None
    assert _adjoint.transposed(geometry((1, 4, 9, 9), (4, 4, 3, 3), mode="reflect")) is None
    assert _adjoint.transposed(geometry((1, 4, 9, 9), (4, 4, 3, 3), padding=3)) is None


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_backward_rules(layout, restore_config):
    lay = _args.layout_of(layout)

    def algorithm(x_shape, w_shape, **kw):
        if layout == "NHWC":
            x_shape = (x_shape[0], *x_shape[2:], x_shape[1])
            w_shape = (*w_shape[2:], w_shape[1], w_shape[0])
        return backward_plan(geometry(x_shape, w_shape, layout, **kw), lay,
                             np.float32).algorithm

    resnet_3x3 = ((8, 64, 56, 56), (64, 64, 3, 3))
    assert algorithm(*resnet_3x3) == "indirect_gemm"
    assert algorithm((8, 64, 28, 28), (64, 64, 5, 5), padding=2, dilation=2) == "indirect_gemm"
    assert algorithm((8, 128, 28, 28), (128, 128, 3, 3)) == "winograd"
    restore_config.winograd = False  # then its grad_input convolution is indirect_gemm's
    assert algorithm((8, 128, 28, 28), (128, 128, 3, 3)) == "indirect_gemm"
    for kw in (dict(stride=2), dict(mode="reflect"), dict(padding=3)):
        assert algorithm(*resnet_3x3, **kw) == "im2col_gemm", kw
    assert algorithm((1, 8, 6, 6), (8, 8, 3, 3)) == "im2col_gemm"  # too small for indirect
    # Fewer input pixels than ADJOINT_MIN_PIXELS: the per-call flip of the weight is not paid.
    assert algorithm((1, 256, 14, 14), (256, 256, 3, 3)) == "im2col_gemm"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_through_the_rule_against_im2col(layout, rng, monkeypatch):
    # The whole conv2d_backward with the rule, against the same with it taken out.
    x = rng.standard_normal((4, 64, 32, 32))  # large enough for indirect_gemm's rule
    w = rng.standard_normal((64, 32, 3, 3))
    kw = dict(padding=((2, 1), (1, 0)), groups=2)
    lay = _args.layout_of(layout)
    shape = x.shape if layout == "NCHW" else to_nhwc(x).shape
    wshape = w.shape if layout == "NCHW" else to_hwio(w).shape
    g = geometry(shape, wshape, layout, padding=kw["padding"], groups=2)
    assert backward_plan(g, lay, np.float64).algorithm == "indirect_gemm"
    y = conv2d_ref(x, w, None, (1, 1), (2, 1, 1, 0), groups=2)
    gout = rng.standard_normal(y.shape)
    if layout == "NHWC":
        x, w, gout = to_nhwc(x), to_hwio(w), to_nhwc(gout)
    on = numbaconv.conv2d_backward(gout, x, w, layout=layout, **kw)
    im2col = REGISTRY["im2col_gemm"]
    monkeypatch.setitem(REGISTRY, "indirect_gemm", im2col)  # the rule's plan, run by im2col
    numbaconv._plan.cache_clear()
    off = numbaconv.conv2d_backward(gout, x, w, layout=layout, **kw)
    numbaconv._plan.cache_clear()
    for a, b in zip(on, off, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())
