"""The channel-blocked NCHW depthwise kernel against the plane-by-plane one.

    python benchmarks/depthwise_blocked.py mobilenet_v2 1 8

On a suite's depthwise layers with one output per channel, NCHW, float32,
the two kernels of ``direct_depthwise`` take turns call by call in one
process (so the drift of this shared machine hits each alike): ``plane``,
the plan with no tile (``kernels.direct.depthwise_nchw``), and
``blocked``, the plan as the dispatcher makes it
(``depthwise_blocked_nchw``).  Both run as conv2d runs them.  Prints the
medians in ms, ``blocked/plane`` and the blocked kernel's GFLOP/s.
``ROUNDS`` sets the calls per kernel (default 21 at batch 1, else 7).
"""

import dataclasses
import os
import statistics
import sys
import time

import numpy as np

import numbaconv
from numbaconv.algorithms import REGISTRY
from numbaconv.bench import load_suite


def main(suite: str, batches: list[int]) -> None:
    rng = np.random.default_rng(0)
    run = REGISTRY["direct_depthwise"].run
    print(f"{suite}, NCHW, float32, {numbaconv.get_num_threads()} threads, machine: "
          f"{numbaconv.machine.describe()}")
    for n in batches:
        rounds = int(os.environ.get("ROUNDS", 21 if n == 1 else 7))
        totals = {"plane": 0.0, "blocked": 0.0}
        for layer in load_suite(suite):
            if layer.rank != 2 or layer.groups != layer.c or layer.o != layer.c:
                continue
            xs, ws = layer.shapes(n, "NCHW")
            x = rng.standard_normal(xs, dtype=np.float32)
            w = rng.standard_normal(ws, dtype=np.float32)
            b = rng.standard_normal(layer.o, dtype=np.float32)
            plan = numbaconv.explain(x, w, b, **layer.conv_kwargs())
            if plan.tile is None:
                continue
            g = plan.geometry
            out = np.empty((g.n, g.o, g.p, g.q), np.float32)
            plans = {"plane": dataclasses.replace(plan, tile=None), "blocked": plan}
            times = {k: [] for k in plans}
            for p in plans.values():  # compile and warm
                run(p, x, w, b, out)
            for _ in range(rounds):
                for k, p in plans.items():
                    start = time.perf_counter()
                    run(p, x, w, b, out)
                    times[k].append(time.perf_counter() - start)
            ms = {k: statistics.median(t) * 1e3 for k, t in times.items()}
            for k in ms:
                totals[k] += ms[k]
            print(f"{layer.name:<16}{layer.describe(n):<38} plane {ms['plane']:7.3f} blocked "
                  f"{ms['blocked']:7.3f}  blocked/plane {ms['blocked'] / ms['plane']:.2f}  "
                  f"{g.flops / ms['blocked'] / 1e6:5.1f} GFLOP/s  band {plan.tile.band}",
                  flush=True)
        print(f"{'total':<16}N{n:<37} plane {totals['plane']:7.3f} blocked "
              f"{totals['blocked']:7.3f}  blocked/plane {totals['blocked'] / totals['plane']:.2f}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v2",
         [int(a) for a in sys.argv[2:]] or [1, 8])
