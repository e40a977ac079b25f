"""Depthwise 3x3 layers: conv2d and both gradients, both layouts, float32, batch 8.

Medians of ``measure`` (the bench's timing rule).  For an A/B across two
checkouts, alternate runs of each:

    python benchmarks/depthwise.py
    PYTHONPATH=/path/to/other/checkout python benchmarks/depthwise.py
"""

from __future__ import annotations

import numpy as np

import numbaconv
from numbaconv._args import LAYOUTS
from numbaconv.bench import measure

# (batch, channels, height = width, stride): MobileNetV2-like depthwise layers
LAYERS = [(8, 32, 112, 1), (8, 144, 56, 2), (8, 576, 14, 1)]


def ms(call, repeat: int = 15) -> float:
    return measure(call, repeat).median * 1e3


def one_layer(n: int, c: int, hw: int, stride: int, layout) -> str:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(layout.x_shape(n, c, hw, hw), dtype=np.float32)
    w = rng.standard_normal(layout.w_shape(c, 1, 3, 3), dtype=np.float32)
    kw = dict(stride=stride, padding=1, groups=c, layout=layout.name)
    gy = rng.standard_normal(numbaconv.conv2d(x, w, **kw).shape, dtype=np.float32)
    fwd = ms(lambda: numbaconv.conv2d(x, w, **kw))
    gx = ms(lambda: numbaconv.conv2d_grad_input(x.shape, w, gy, **kw))
    gw = ms(lambda: numbaconv.conv2d_grad_weight(x, w.shape, gy, **kw))
    return (f"depthwise C{c} {hw}x{hw} s{stride} N{n} {layout.name}: "
            f"forward {fwd:.3f}, grad_input {gx:.3f}, grad_weight {gw:.3f} ms")


def main() -> None:
    print(f"# {numbaconv.machine.describe()}")
    for n, c, hw, stride in LAYERS:
        for layout in LAYOUTS.values():
            print(one_layer(n, c, hw, stride, layout), flush=True)


if __name__ == "__main__":
    main()
