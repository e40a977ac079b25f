"""Suites: the layer shapes a sweep times, built in or read from a JSON file."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import numpy as np

from .. import _args


@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution layer of a suite: square (or cubic) kernel, symmetric padding.

    ``rank`` is the number of spatial axes: 2 (H x W), 1 (W only; ``h`` is
    1) or 3 (``d`` x H x W).  ``kernel``, ``stride``, ``padding`` and
    ``dilation`` apply to every spatial axis.

    Examples
    --------
    >>> from numbaconv.bench import Layer
    >>> stem = Layer("resnet50.01", c=3, h=224, w=224, o=64, kernel=7, stride=2, padding=3)
    >>> stem.shapes(8, "NHWC")
    ((8, 224, 224, 3), (7, 7, 3, 64))
    >>> stem.describe(8)
    'N8 C3 224x224 -> O64 k7 s2 p3'
    >>> stem.label()
    '3→64 7x7/2'
    >>> Layer("r3d", 64, 56, 56, 64, 3, padding=1, d=16, rank=3).shapes(1, "NHWC")
    ((1, 16, 56, 56, 64), (3, 3, 3, 64, 64))
    """

    name: str
    c: int
    h: int
    w: int
    o: int
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    d: int = 1  # depth, for rank 3
    rank: int = 2

    @property
    def sizes(self) -> tuple[int, ...]:
        return (self.d, self.h, self.w)[3 - self.rank:]

    def layout(self, layout: str) -> _args.RankLayout:
        """This layer's rank of the layout family ``layout`` ("NCHW": channels first)."""
        return _args.rank_layout_of(layout, self.rank)

    def shapes(self, n: int, layout: str):
        """(input shape, weight shape) for batch ``n`` in ``layout`` (or its rank's sibling)."""
        lay = self.layout(layout)
        return (lay.x_shape(n, self.c, self.sizes),
                lay.w_shape(self.o, self.c // self.groups, (self.kernel,) * self.rank))

    def conv_kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def describe(self, n: int) -> str:
        """The row's shape column."""
        extra = f" g{self.groups}" if self.groups > 1 else ""
        extra += f" d{self.dilation}" if self.dilation > 1 else ""
        return (f"N{n} C{self.c} {'x'.join(map(str, self.sizes))} -> O{self.o} k{self.kernel} "
                f"s{self.stride} p{self.padding}{extra}")

    def label(self) -> str:
        """A short label for plots: channels, kernel and stride."""
        k = "x".join([str(self.kernel)] * self.rank)
        k += f"/{self.stride}" if self.stride > 1 else ""
        if self.dilation > 1:
            k += f" d{self.dilation}"
        if self.groups == self.c == self.o:
            return f"dw {self.c} {k}"
        groups = f" g{self.groups}" if self.groups > 1 else ""
        return f"{self.c}→{self.o} {k}{groups}"


def _rng_arrays(layer: Layer, n: int, layout: str, dtype):
    """The inputs of one row, seeded: every implementation of the row gets the same."""
    rng = np.random.default_rng(0)
    xs, ws = layer.shapes(n, layout)
    x = rng.standard_normal(xs, dtype=np.float64).astype(dtype)
    fan_in = layer.c // layer.groups * layer.kernel**layer.rank
    w = (rng.standard_normal(ws) / np.sqrt(fan_in)).astype(dtype)
    return x, w


def _resnet50() -> list[Layer]:
    # (C, H=W, O, kernel, stride, pad): the distinct conv shapes of ResNet-50.
    shapes = [(3, 224, 64, 7, 2, 3), (64, 56, 64, 1, 1, 0), (64, 56, 64, 3, 1, 1),
              (64, 56, 256, 1, 1, 0), (256, 56, 64, 1, 1, 0), (128, 56, 128, 3, 2, 1),
              (128, 28, 128, 3, 1, 1), (512, 28, 128, 1, 1, 0), (256, 14, 256, 3, 1, 1),
              (1024, 14, 256, 1, 1, 0), (512, 7, 512, 3, 1, 1), (512, 7, 2048, 1, 1, 0)]
    return [Layer(f"resnet50.{i:02d}", c, hw, hw, o, k, s, p)
            for i, (c, hw, o, k, s, p) in enumerate(shapes, 1)]


def _vgg16() -> list[Layer]:
    # (C, H=W, O): VGG-16's distinct 3x3/1 convolutions at 224x224 input
    # (conv1_1, conv1_2, conv2_1, conv2_2, conv3_1, conv3_2 = conv3_3,
    # conv4_1, conv4_2 = conv4_3, conv5_1 = conv5_2 = conv5_3).
    shapes = [(3, 224, 64), (64, 224, 64), (64, 112, 128), (128, 112, 128), (128, 56, 256),
              (256, 56, 256), (256, 28, 512), (512, 28, 512), (512, 14, 512)]
    return [Layer(f"vgg16.{i:02d}", c, hw, hw, o, 3, 1, 1)
            for i, (c, hw, o) in enumerate(shapes, 1)]


def _mobilenet_v2() -> list[Layer]:
    # MobileNetV2 at 224x224: the stem, then each inverted-residual block's
    # 1x1 expansion, 3x3 depthwise (groups == channels) and 1x1 projection,
    # then the final 1x1; repeated shapes are listed once.
    layers = [(3, 224, 32, 3, 2, 1, 1)]  # (C, H=W, O, kernel, stride, pad, groups)
    c, hw = 32, 112
    # (expansion t, output channels, repeats, first stride), from the paper's table 2.
    for t, out, repeats, first_stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                                          (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                          (6, 320, 1, 1)]:
        for r in range(repeats):
            s, hidden = (first_stride if r == 0 else 1), c * t
            if t != 1:
                layers.append((c, hw, hidden, 1, 1, 0, 1))
            layers.append((hidden, hw, hidden, 3, s, 1, hidden))
            hw = (hw - 1) // s + 1
            layers.append((hidden, hw, out, 1, 1, 0, 1))
            c = out
    layers.append((320, 7, 1280, 1, 1, 0, 1))
    distinct = list(dict.fromkeys(layers))
    return [Layer(f"mobilenet_v2.{i:02d}", c, hw, hw, o, k, s, p, groups=g)
            for i, (c, hw, o, k, s, p, g) in enumerate(distinct, 1)]


def _wav2vec2() -> list[Layer]:
    # wav2vec 2.0's feature extractor on 1 s of 16 kHz audio: 7 conv1d layers,
    # channels 1 -> 512, kernels 10, 3, 3, 3, 3, 2, 2, strides 5, 2, ..., 2.
    layers, c, length = [], 1, 16000
    for i, (k, s) in enumerate([(10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2)], 1):
        layers.append(Layer(f"wav2vec2.{i:02d}", c, 1, length, 512, k, s, rank=1))
        c, length = 512, (length - k) // s + 1
    return layers


def _r3d18() -> list[Layer]:
    # 3-d ResNet-18 (r3d_18) on 16 frames of 112x112: its distinct 3x3x3
    # convolutions, padding 1, after the (3x7x7) stem's 16x56x56 output.
    shapes = [(64, 16, 56, 64, 1), (64, 16, 56, 128, 2), (128, 8, 28, 128, 1),
              (128, 8, 28, 256, 2), (256, 4, 14, 256, 1), (256, 4, 14, 512, 2),
              (512, 2, 7, 512, 1)]  # (C, D, H=W, O, stride)
    return [Layer(f"r3d18.{i:02d}", c, hw, hw, o, 3, s, 1, d=d, rank=3)
            for i, (c, d, hw, o, s) in enumerate(shapes, 1)]


SUITES: dict[str, Callable[[], list[Layer]]] = {
    "resnet50": _resnet50, "vgg16": _vgg16, "mobilenet_v2": _mobilenet_v2,
    "wav2vec2": _wav2vec2, "r3d18": _r3d18,
}

_JSON_INTS = ("C", "H", "W", "O", "kernel", "stride", "padding", "dilation", "groups")


def load_suite(name: str) -> list[Layer]:
    """A built-in suite by name, or a JSON file of layer objects.

    A JSON suite is a list of objects with the keys ``name, C, H, W, O,
    kernel`` and optionally ``stride, padding, dilation, groups`` (integers;
    defaults 1, 0, 1, 1).  Every layer is checked as conv2d would check it.

    Raises
    ------
    ValueError
        An unknown suite, an unreadable or malformed file, or a layer whose
        shapes are impossible; the message starts with ``--suite:``.

    Examples
    --------
    >>> from numbaconv.bench import load_suite
    >>> [len(load_suite(s)) for s in ("resnet50", "vgg16", "mobilenet_v2", "wav2vec2", "r3d18")]
    [12, 9, 30, 7, 7]
    >>> load_suite("mobilenet_v2")[2]
    Layer(name='mobilenet_v2.03', c=32, h=112, w=112, o=16, kernel=1, stride=1, padding=0, \
dilation=1, groups=1, d=1, rank=2)
    >>> load_suite("alexnet")
    Traceback (most recent call last):
    ...
    ValueError: --suite: expected one of ['mobilenet_v2', 'r3d18', 'resnet50', 'vgg16', \
'wav2vec2'] or a JSON file, got 'alexnet'
    """
    from ..conv import explain

    if name in SUITES:
        return SUITES[name]()
    if not os.path.isfile(name):
        raise ValueError(f"--suite: expected one of {sorted(SUITES)} or a JSON file, got "
                         f"{name!r}")
    try:
        with open(name) as f:
            items = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--suite: cannot read {name}: {err}") from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"--suite: {name} must hold a non-empty JSON list of layers")
    need = {"name", "C", "H", "W", "O", "kernel"}
    layers, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not need <= set(item):
            raise ValueError(f"--suite: layer {i} of {name} needs keys {sorted(need)}, got "
                             f"{item!r}")
        where = f"--suite: layer {i} ({item['name']!r}) of {name}"
        unknown = set(item) - {"name", *_JSON_INTS}
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)}")
        if not isinstance(item["name"], str) or not item["name"]:
            raise ValueError(f"{where}: name: expected a non-empty string")
        if item["name"] in seen:
            raise ValueError(f"{where}: the name is used twice (names identify rows)")
        seen.add(item["name"])
        for key in _JSON_INTS:
            if key in item and not _args._is_int(item[key]):
                raise ValueError(f"{where}: {key}: expected an integer, got {item[key]!r}")
        kw = {k.lower() if k in "CHWO" else k: v for k, v in item.items()}
        try:
            layer = Layer(**kw)
            explain(*layer.shapes(1, "NCHW"), **layer.conv_kwargs())
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
        layers.append(layer)
    return layers
