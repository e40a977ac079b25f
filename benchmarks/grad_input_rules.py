"""grad_input of stride-1 layers: the backward rules against im2col_gemm's GEMM and col2im.

    python benchmarks/grad_input_rules.py resnet50 1 8
    LAY=NHWC python benchmarks/grad_input_rules.py vgg16 1

For each 2-d, stride-1, ungrouped layer of a suite with a kernel larger than
1x1, two ways
take turns call by call in one process (so the drift of this shared
machine hits each alike):

* ``im2col``: ``im2col_gemm``'s grad_input, ``W^T @ grad_out`` then col2im;
* ``rules``: what the backward rules pick (printed): a forward convolution
  of grad_out by ``winograd`` or ``indirect_gemm`` (``algorithms._adjoint``)
  where they take it, else ``im2col_gemm`` again.

Prints the medians in ms and rules/im2col (below 1: the rules are faster).
``ROUNDS`` sets the calls per way (default 9 at batch 1, else 5); ``LAY``
the layout (default NCHW); ``DTYPE`` float32 (default) or float64.

``KIND=train`` times a whole training step of a ``Conv2d`` layer instead
(forward, then backward with grad_weight and grad_bias), with the backward
rules as shipped against the same rules without ``indirect_gemm``'s.
"""

import os
import statistics
import sys
import time

import numpy as np

import numbaconv
from numbaconv import _args, _plan
from numbaconv._plan import backward_plan, get_plan
from numbaconv.algorithms import REGISTRY
from numbaconv.bench import load_suite


def two_ways(g, layout, dtype, rng):
    """(the rules' pick, {way: call}) for grad_input of 2-d geometry ``g``."""
    w = rng.standard_normal(layout.w_shape(g.o, g.cg, g.kh, g.kw)).astype(dtype)
    gout = rng.standard_normal(layout.x_shape(g.n, g.o, g.p, g.q)).astype(dtype)
    rules = backward_plan(g, layout, dtype)
    im2col = get_plan(g, layout, dtype, "im2col_gemm")
    return rules.algorithm, {
        "im2col": lambda: REGISTRY["im2col_gemm"].grad_input(im2col, w, gout),
        "rules": lambda: REGISTRY[rules.algorithm].grad_input(rules, w, gout),
    }


def train_ways(layer, n, layout_name, dtype, rng):
    """(the rules' pick, {way: call}) for one forward + backward of a Conv2d layer."""
    conv = numbaconv.Conv2d(layer.c, layer.o, layer.kernel, padding=layer.padding,
                            layout=layout_name, dtype=dtype, rng=rng)
    x = rng.standard_normal(layer.shapes(n, layout_name)[0]).astype(dtype)
    gy = np.ones_like(conv(x))
    shipped = _plan.BACKWARD_RULES
    without = tuple(r for r in shipped if r.algorithm != "indirect_gemm")

    def step(rules):
        def call():
            _plan.BACKWARD_RULES = rules
            try:
                conv(x)
                conv.backward(gy)
            finally:
                _plan.BACKWARD_RULES = shipped
        return call

    g = _args.conv_geometry(x.shape, conv.weight.shape, _args.layout_of(layout_name), 1,
                            layer.padding, 1, 1, "zeros")
    pick = backward_plan(g, _args.layout_of(layout_name), np.dtype(dtype)).algorithm
    return pick, {"im2col": step(without), "rules": step(shipped)}


def main(suite: str, batches: list[int], layout_name: str, dtype, kind: str) -> None:
    rng = np.random.default_rng(0)
    print(f"{suite}, {kind}, {layout_name}, {np.dtype(dtype).name}, machine: "
          f"{numbaconv.machine.describe()}")
    print(f"{'layer':<14}{'N':>3} {'pick':<14}{'im2col':>9}{'rules':>9}{'rules/im2col':>14}")
    for n in batches:
        rounds = int(os.environ.get("ROUNDS", 9 if n == 1 else 5))
        for layer in load_suite(suite):
            if layer.rank != 2 or layer.stride != 1 or layer.kernel == 1 or layer.groups > 1:
                continue
            lay = _args.layout_of(layout_name)
            if kind == "train":
                pick, ways = train_ways(layer, n, layout_name, dtype, rng)
            else:
                x_shape, w_shape = layer.shapes(n, layout_name)
                g = _args.conv_geometry(x_shape, w_shape, lay, 1, layer.padding,
                                        layer.dilation, 1, "zeros")
                pick, ways = two_ways(g, lay, np.dtype(dtype), rng)
            times = {name: [] for name in ways}
            for call in ways.values():
                call()  # compile and warm
            for _ in range(rounds):
                for name, call in ways.items():
                    start = time.perf_counter()
                    call()
                    times[name].append(time.perf_counter() - start)
            med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            print(f"{layer.name:<14}{n:>3} {pick:<14}{med['im2col']:>9.2f}{med['rules']:>9.2f}"
                  f"{med['rules'] / med['im2col']:>14.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], [int(v) for v in sys.argv[2:]] or [1, 8], os.environ.get("LAY", "NCHW"),
         os.environ.get("DTYPE", "float32"), os.environ.get("KIND", "grad_input"))
