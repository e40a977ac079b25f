"""Winograd against direct arithmetic on a suite's 3x3 stride-1 layers.

    python benchmarks/winograd_vs_direct.py vgg16 1 8
    LAY=NHWC python benchmarks/winograd_vs_direct.py resnet50 1 8

Per layer and batch, three ways take turns call by call in one process
(so the drift of this shared machine hits each alike):

* ``direct``: the dispatcher with ``config.winograd = False``;
* ``auto``: the dispatcher as shipped (its pick is printed);
* ``winograd``: Winograd forced, with the F(m x m) the planner picks.

Prints each median in ms and the ratios over ``direct``: below 1, Winograd
(or the dispatcher's pick) is faster.  ``ROUNDS`` sets the calls per way
(default 9 at batch 1, else 5); ``LAY`` the layout (default NCHW);
``DTYPE`` float32 (default) or float64.
"""

import os
import statistics
import sys
import time

import numpy as np

import numbaconv
from numbaconv import config
from numbaconv.bench import load_suite

# Each way: (the algorithm asked for, config.winograd).
WAYS = {"direct": ("auto", False), "auto": ("auto", True), "winograd": ("winograd", True)}


def timed(x, w, kw, algorithm: str, winograd: bool) -> float:
    config.winograd = winograd
    start = time.perf_counter()
    numbaconv.conv2d_with(x, w, algorithm=algorithm, **kw)
    return time.perf_counter() - start


def main(suite: str, batches: list[int], layout: str, dtype: str) -> None:
    rng = np.random.default_rng(0)
    print(f"{suite}, {layout}, {dtype}, machine: {numbaconv.machine.describe()}")
    print(f"{'layer':<14}{'N':>3} {'pick':<14}{'direct':>9}{'auto':>9}{'winograd':>9}"
          f"{'auto/direct':>13}{'wino/direct':>13}")
    for n in batches:
        rounds = int(os.environ.get("ROUNDS", 9 if n == 1 else 5))
        for layer in load_suite(suite):
            if layer.kernel != 3 or layer.stride != 1 or layer.dilation != 1:
                continue
            xs, ws = layer.shapes(n, layout)
            x = rng.standard_normal(xs, dtype=dtype)
            w = rng.standard_normal(ws, dtype=dtype)
            kw = dict(layout=layout, **layer.conv_kwargs())
            pick = numbaconv.explain(x, w, **kw).algorithm
            times = {name: [] for name in WAYS}
            for way in WAYS.values():  # compile and warm the buffers
                timed(x, w, kw, *way)
            for _ in range(rounds):
                for name, way in WAYS.items():
                    times[name].append(timed(x, w, kw, *way))
            config.winograd = True
            ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            print(f"{layer.name:<14}{n:>3} {pick:<14}{ms['direct']:>9.2f}{ms['auto']:>9.2f}"
                  f"{ms['winograd']:>9.2f}{ms['auto'] / ms['direct']:>13.2f}"
                  f"{ms['winograd'] / ms['direct']:>13.2f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "vgg16",
         [int(a) for a in sys.argv[2:]] or [1, 8], os.environ.get("LAY", "NCHW"),
         os.environ.get("DTYPE", "float32"))
