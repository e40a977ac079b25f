"""The ONNX backend node tests for Conv and ConvTranspose, in every rank (needs onnx).

``onnx`` ships each node test case as a one-node model with its inputs
and expected outputs.  Each case's attributes are translated into
numbaconv's arguments as ONNX defines them (``pads`` as (begin, end) per
axis, ``auto_pad``, ``output_shape``) and the result compared.
"""

import warnings

import numpy as np
import pytest

import numbaconv

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402
from onnx.backend.test.case.node import collect_testcases  # noqa: E402

CONV = {1: numbaconv.conv1d, 2: numbaconv.conv2d, 3: numbaconv.conv3d}
TRANSPOSE = {1: numbaconv.conv_transpose1d, 2: numbaconv.conv_transpose2d,
             3: numbaconv.conv_transpose3d}


def _cases():
    with warnings.catch_warnings():  # other operators' generators divide by zero on purpose
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    return [c for c in cases if c.model.graph.node[0].op_type in ("Conv", "ConvTranspose")]


CASES = _cases()


def _attributes(node) -> dict:
    out = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if isinstance(out.get("auto_pad"), bytes):
        out["auto_pad"] = out["auto_pad"].decode()
    return out


def _pairs(pads, rank):
    """ONNX pads [x1_begin, x2_begin, ..., x1_end, x2_end] as (begin, end) per axis."""
    return tuple((pads[i], pads[i + rank]) for i in range(rank))


def _same_lower(size, k, s, d):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total - total // 2, total // 2


def run_conv(attrs, x, w, b=None):
    rank = x.ndim - 2
    stride = tuple(attrs.get("strides", (1,) * rank))
    dilation = tuple(attrs.get("dilations", (1,) * rank))
    auto = attrs.get("auto_pad", "NOTSET")
    if auto == "VALID":
        padding = "valid"
    elif auto == "SAME_UPPER":
        padding = "same"
    elif auto == "SAME_LOWER":
        padding = tuple(_same_lower(x.shape[2 + i], w.shape[2 + i], stride[i], dilation[i])
                        for i in range(rank))
    else:
        padding = _pairs(attrs.get("pads", (0,) * (2 * rank)), rank)
    return CONV[rank](x, w, b, stride=stride, padding=padding, dilation=dilation,
                      groups=attrs.get("group", 1))


def run_conv_transpose(attrs, x, w, b=None):
    rank = x.ndim - 2
    stride = tuple(attrs.get("strides", (1,) * rank))
    dilation = tuple(attrs.get("dilations", (1,) * rank))
    op = list(attrs.get("output_padding", (0,) * rank))
    auto = attrs.get("auto_pad", "NOTSET")
    shape = attrs.get("output_shape")
    if shape is None and auto == "SAME_UPPER" and not any(op):
        padding = "same"  # numbaconv's own: output = input * stride, extra crop at the end
    elif shape is None and auto in ("NOTSET", "VALID"):
        padding = _pairs(attrs.get("pads", (0,) * (2 * rank)), rank) if auto == "NOTSET" else 0
    else:  # ONNX's rule: the pads that give output_shape (input * stride for SAME_*)
        shape = shape or [x.shape[2 + i] * stride[i] for i in range(rank)]
        padding = []
        for i in range(rank):
            natural = (x.shape[2 + i] - 1) * stride[i] + (w.shape[2 + i] - 1) * dilation[i] + 1
            total = natural + op[i] - shape[-rank + i]
            if total < 0:  # a larger output: rows added at the end
                op[i] -= total
                total = 0
            upper = auto == "SAME_UPPER"
            padding.append((total // 2, total - total // 2) if upper
                           else (total - total // 2, total // 2))
        padding = tuple(padding)
    return TRANSPOSE[rank](x, w, b, stride=stride, padding=padding, output_padding=tuple(op),
                           dilation=dilation, groups=attrs.get("group", 1))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_onnx_node_case(case):
    node = case.model.graph.node[0]
    attrs = _attributes(node)
    run = run_conv if node.op_type == "Conv" else run_conv_transpose
    for inputs, outputs in case.data_sets:
        got = run(attrs, *inputs)
        np.testing.assert_allclose(got, outputs[0], rtol=1e-5, atol=1e-5)


def test_every_rank_is_covered():
    ranks = {c.data_sets[0][0][0].ndim - 2 for c in CASES}
    assert ranks == {1, 2, 3}, ranks


REFERENCE_CASES = [  # (op, x shape, w shape, attributes): ranks the node suite lacks
    ("Conv", (2, 4, 11), (6, 2, 3), dict(strides=[2], pads=[1, 2], dilations=[2], group=2)),
    ("Conv", (1, 3, 9), (4, 3, 4), dict(auto_pad="SAME_LOWER", strides=[2])),
    ("Conv", (1, 2, 5, 6, 7), (4, 2, 3, 2, 3), dict(strides=[2, 1, 2], pads=[1, 0, 1, 0, 1, 2])),
    ("Conv", (2, 4, 4, 5, 5), (4, 1, 3, 3, 3), dict(auto_pad="SAME_UPPER", group=4)),
    ("ConvTranspose", (1, 2, 5), (2, 3, 3), dict(strides=[2], pads=[0, 1], output_padding=[1])),
    ("ConvTranspose", (1, 2, 3, 3, 4), (2, 2, 2, 3, 2),
     dict(strides=[2, 1, 2], auto_pad="SAME_UPPER")),
]


@pytest.mark.parametrize("op,x_shape,w_shape,attrs", REFERENCE_CASES,
                         ids=[f"{c[0]}-{len(c[1]) - 2}d-{i}" for i, c in
                              enumerate(REFERENCE_CASES)])
def test_onnx_reference_evaluator(op, x_shape, w_shape, attrs):
    """1-d and 3-d cases against onnx's own reference implementation."""
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node(op, ["X", "W"], ["Y"], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, x_shape),
         helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT, w_shape)],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)])
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (want,) = ReferenceEvaluator(helper.make_model(graph)).run(None, {"X": x, "W": w})
    run = run_conv if op == "Conv" else run_conv_transpose
    np.testing.assert_allclose(run(attrs, x, w), want, rtol=1e-4, atol=1e-4)
