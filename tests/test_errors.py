"""Every bad input gets a ValueError or TypeError naming the argument."""

import re

import numpy as np
import pytest
from checks import assert_clear_error

import numbaconv

X = np.zeros((2, 4, 8, 8), np.float32)
W = np.zeros((6, 4, 3, 3), np.float32)
XN = np.zeros((2, 8, 8, 4), np.float32)
WN = np.zeros((3, 3, 4, 6), np.float32)


def conv(**kw):
    args = dict(x=X, weight=W)
    args.update(kw)
    return numbaconv.conv2d(**args)


CASES = [
    # (id, call, exception, words the message must contain)
    ("x-ndim", lambda: conv(x=np.zeros((4, 8), np.float32)), ValueError, ["x", "4-d", "(4, 8)"]),
    ("x-5d", lambda: conv(x=np.zeros((1, 2, 4, 8, 8), np.float32)), ValueError, ["x", "3-d"]),
    ("weight-ndim", lambda: conv(weight=np.zeros((6, 4, 3), np.float32)), ValueError,
     ["weight", "4-d", "OIHW"]),
    ("weight-ndim-nhwc", lambda: numbaconv.conv2d(XN, np.zeros((3, 3, 4)), layout="NHWC"),
     ValueError, ["weight", "HWIO"]),
    ("channel-mismatch", lambda: conv(weight=np.zeros((6, 3, 3, 3), np.float32)), ValueError,
     ["weight", "4 input channels", "got 3"]),
    ("channel-mismatch-nhwc", lambda: numbaconv.conv2d(XN, np.zeros((3, 3, 5, 6)), layout="NHWC"),
     ValueError, ["weight", "got 5"]),
    ("groups-c", lambda: conv(groups=3, weight=np.zeros((6, 1, 3, 3))), ValueError,
     ["groups", "input channels 4", "groups=3"]),
    ("groups-o", lambda: conv(groups=4, weight=np.zeros((6, 1, 3, 3))), ValueError,
     ["groups", "output channels 6"]),
    ("groups-zero", lambda: conv(groups=0), ValueError, ["groups", ">= 1", "0"]),
    ("groups-float", lambda: conv(groups=1.5), TypeError, ["groups", "1.5"]),
    ("stride-zero", lambda: conv(stride=0), ValueError, ["stride", ">= 1", "0"]),
    ("stride-negative", lambda: conv(stride=(1, -2)), ValueError, ["stride", "(1, -2)"]),
    ("stride-float", lambda: conv(stride=1.0), TypeError, ["stride", "int", "1.0"]),
    ("stride-bool", lambda: conv(stride=True), TypeError, ["stride", "True"]),
    ("stride-len3", lambda: conv(stride=(1, 1, 1)), TypeError, ["stride", "pair", "(1, 1, 1)"]),
    ("dilation-zero", lambda: conv(dilation=0), ValueError, ["dilation", ">= 1"]),
    ("dilation-str", lambda: conv(dilation="2"), TypeError, ["dilation", "'2'"]),
    ("padding-negative", lambda: conv(padding=-1), ValueError, ["padding", ">= 0", "-1"]),
    ("padding-negative-explicit", lambda: conv(padding=((0, -1), (0, 0))), ValueError,
     ["padding", ">= 0"]),
    ("padding-float", lambda: conv(padding=1.5), TypeError, ["padding", "1.5"]),
    ("padding-len3", lambda: conv(padding=(1, 1, 1)), TypeError, ["padding", "(1, 1, 1)"]),
    ("padding-string", lambda: conv(padding="full"), ValueError, ["padding", "'same'", "'full'"]),
    ("kernel-too-big", lambda: conv(x=np.zeros((1, 4, 2, 8))), ValueError,
     ["weight", "height 3", "padded input height 2"]),
    ("kernel-too-big-dilated", lambda: conv(dilation=(1, 4), padding=0), ValueError,
     ["weight", "width 9", "padded input width 8"]),
    ("bias-shape", lambda: conv(bias=np.zeros(5, np.float32)), ValueError,
     ["bias", "(6,)", "(5,)"]),
    ("bias-2d", lambda: conv(bias=np.zeros((6, 1), np.float32)), ValueError, ["bias", "(6, 1)"]),
    ("layout", lambda: conv(layout="NCWH"), ValueError, ["layout", "NCHW", "'NCWH'"]),
    ("layout-type", lambda: conv(layout=None), ValueError, ["layout", "None"]),
    ("padding-mode", lambda: conv(padding_mode="mirror"), ValueError,
     ["padding_mode", "reflect", "'mirror'"]),
    ("reflect-too-big", lambda: conv(padding=8, padding_mode="reflect"), ValueError,
     ["padding", "reflect", "height 8", "got 8"]),
    ("circular-too-big", lambda: conv(padding=9, padding_mode="circular"), ValueError,
     ["padding", "circular", "got 9"]),
    ("x-int", lambda: conv(x=np.zeros((2, 4, 8, 8), np.int32)), TypeError,
     ["x", "int32", "float32 and float64"]),
    ("x-bool", lambda: conv(x=np.zeros((2, 4, 8, 8), bool)), TypeError, ["x", "bool"]),
    ("weight-float16", lambda: conv(weight=W.astype(np.float16)), TypeError,
     ["weight", "float16", "float32"]),
    ("x-complex", lambda: conv(x=X.astype(np.complex64)), TypeError, ["x", "complex64"]),
    ("x-object", lambda: conv(x=X.astype(object)), TypeError, ["x", "object"]),
    ("bias-int", lambda: conv(bias=np.zeros(6, np.int64)), TypeError, ["bias", "int64"]),
    ("x-longdouble", lambda: conv(x=X.astype(np.longdouble)), TypeError, ["x", "float"]),
    ("x-ragged", lambda: conv(x=[[[[1.0, 2.0], [3.0]]]]), ValueError, ["x", "ragged"]),
    ("x-strings", lambda: conv(x=[[[["a", "b"]]]]), TypeError, ["x", "non-numeric"]),
    ("x-zero-width", lambda: conv(x=np.zeros((1, 4, 8, 0))), ValueError, ["x", ">= 1"]),
    ("weight-zero-out", lambda: conv(weight=np.zeros((0, 4, 3, 3))), ValueError, ["weight"]),
    # im2col / col2im
    ("im2col-kernel", lambda: numbaconv.im2col(X, 0), ValueError, ["kernel_size", ">= 1"]),
    ("im2col-kernel-type", lambda: numbaconv.im2col(X, "3"), TypeError, ["kernel_size"]),
    ("im2col-ndim", lambda: numbaconv.im2col(X[0, 0], 3), ValueError, ["x", "3-d"]),
    ("im2col-too-big", lambda: numbaconv.im2col(X, 9), ValueError,
     ["kernel_size", "height 9", "padded input height 8"]),
    ("col2im-too-big", lambda: numbaconv.col2im(np.zeros((1, 18, 1)), (2, 2), 3), ValueError,
     ["kernel_size", "output_size height 2"]),
    ("im2col-reflect", lambda: numbaconv.im2col(X, 3, padding=8, padding_mode="reflect"),
     ValueError, ["reflect"]),
    ("im2col-layout", lambda: numbaconv.im2col(X, 3, layout="CHWN"), ValueError, ["layout"]),
    ("im2col-int", lambda: numbaconv.im2col(X.astype(int), 3), TypeError, ["x", "int64"]),
    ("col2im-ndim", lambda: numbaconv.col2im(np.zeros(9), (5, 5), 3), ValueError,
     ["cols", "3-d", "(9,)"]),
    ("col2im-rows", lambda: numbaconv.col2im(np.zeros((1, 10, 9)), (5, 5), 3), ValueError,
     ["cols", "multiple of KH*KW = 9"]),
    ("col2im-length", lambda: numbaconv.col2im(np.zeros((1, 18, 8)), (5, 5), 3), ValueError,
     ["cols", "expected 9 patches", "(1, 18, 8)"]),
    ("col2im-output-size", lambda: numbaconv.col2im(np.zeros((1, 18, 9)), (5, 0), 3),
     ValueError, ["output_size", ">= 1"]),
    ("col2im-dtype", lambda: numbaconv.col2im(np.zeros((1, 18, 9), np.float16), 5, 3),
     TypeError, ["cols", "float16"]),
    ("explain-shape", lambda: numbaconv.explain((4, 8, 8), (6, 4)), ValueError,
     ["4-d"]),
    ("explain-dtype", lambda: numbaconv.explain((1, 4, 8, 8), (6, 4, 3, 3), dtype=np.int32),
     TypeError, ["dtype", "int32"]),
    ("explain-algorithm", lambda: numbaconv.explain(X, W, algorithm="fft"), ValueError,
     ["algorithm", "'fft'"]),
    ("explain-forced-1x1", lambda: numbaconv.explain(X, W, algorithm="gemm_1x1"), ValueError,
     ["algorithm", "1x1", "3x3"]),
]


@pytest.mark.parametrize("call, exc, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(call, exc, words):
    assert_clear_error(call, exc, words)


def test_errors_leave_inputs_untouched():
    x = np.random.default_rng(0).standard_normal((2, 4, 8, 8))
    before = x.copy()
    with pytest.raises(ValueError):
        numbaconv.conv2d(x, np.zeros((6, 4, 3, 3)), bias=np.zeros(3))
    np.testing.assert_array_equal(x, before)


def test_messages_start_with_the_argument_name():
    for name, call, exc, _ in CASES:
        with pytest.raises(exc) as info:
            call()
        assert re.match(r"^[a-z_, ]+:", str(info.value)), (name, str(info.value))


class _Hostile:
    """A value whose attributes and repr raise, or whose shape is not ints."""

    def __init__(self, shape=None):
        self._shape = shape

    @property
    def shape(self):
        if self._shape is None:
            raise RuntimeError("no shape here")
        return self._shape

    dtype = np.dtype(np.float32)

    def __repr__(self):
        raise RuntimeError("no repr either")


@pytest.mark.parametrize("value", [_Hostile(), _Hostile(("a", "b")), _Hostile((3, None))],
                         ids=["raising shape", "str shape", "None in shape"])
def test_a_hostile_value_still_gets_the_argument_named(value):
    with pytest.raises(TypeError, match=r"^stride: .*<_Hostile>"):
        numbaconv.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), stride=value)
