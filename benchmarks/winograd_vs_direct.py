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
``DTYPE`` float32 (default) or float64; ``KIND=grad_input`` times
``conv2d_grad_input`` instead, direct against the backward rules (whose
pick is printed).
"""

import os
import statistics
import sys
import time

import numpy as np

import numbaconv
from numbaconv import _args, config
from numbaconv._plan import backward_plan
from numbaconv.bench import load_suite

# Each way: (the algorithm asked for, config.winograd).
WAYS = {"direct": ("auto", False), "auto": ("auto", True), "winograd": ("winograd", True)}


def timed(call, winograd: bool) -> float:
    config.winograd = winograd
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def calls(kind: str, x, w, kw: dict, g) -> dict:
    """Each way's call: the forward (three ways) or grad_input (direct and auto)."""
    if kind == "grad_input":
        gout = np.ones(_args.layout_of(kw["layout"]).x_shape(g.n, g.o, g.p, g.q), x.dtype)
        return {name: (lambda: numbaconv.conv2d_grad_input(x.shape, w, gout, **kw), on)
                for name, (_, on) in WAYS.items() if name != "winograd"}
    return {name: (lambda a=algorithm: numbaconv.conv2d_with(x, w, algorithm=a, **kw), on)
            for name, (algorithm, on) in WAYS.items()}


def main(suite: str, batches: list[int], layout: str, dtype: str, kind: str) -> None:
    rng = np.random.default_rng(0)
    print(f"{suite}, {kind}, {layout}, {dtype}, machine: {numbaconv.machine.describe()}")
    names = [n for n in WAYS if kind != "grad_input" or n != "winograd"]
    print(f"{'layer':<14}{'N':>3} {'pick':<14}" + "".join(f"{n:>9}" for n in names)
          + "".join(f"{n + '/direct':>14}" for n in names[1:]))
    for n in batches:
        rounds = int(os.environ.get("ROUNDS", 9 if n == 1 else 5))
        for layer in load_suite(suite):
            if layer.kernel != 3 or layer.stride != 1 or layer.dilation != 1:
                continue
            xs, ws = layer.shapes(n, layout)
            x = rng.standard_normal(xs, dtype=dtype)
            w = rng.standard_normal(ws, dtype=dtype)
            kw = dict(layout=layout, **layer.conv_kwargs())
            g = numbaconv.explain(x, w, **kw).geometry
            plan = backward_plan(g, _args.layout_of(layout), np.dtype(dtype)) if (
                kind == "grad_input") else numbaconv.explain(x, w, **kw)
            ways = calls(kind, x, w, kw, g)
            times = {name: [] for name in ways}
            for call, on in ways.values():  # compile and warm the buffers
                timed(call, on)
            for _ in range(rounds):
                for name, (call, on) in ways.items():
                    times[name].append(timed(call, on))
            config.winograd = True
            ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            print(f"{layer.name:<14}{n:>3} {plan.algorithm:<14}"
                  + "".join(f"{ms[k]:>9.2f}" for k in names)
                  + "".join(f"{ms[k] / ms['direct']:>14.2f}" for k in names[1:]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "vgg16",
         [int(a) for a in sys.argv[2:]] or [1, 8], os.environ.get("LAY", "NCHW"),
         os.environ.get("DTYPE", "float32"), os.environ.get("KIND", "forward"))
