"""The fused activation against the same activation as a pass of its own.

    python benchmarks/fused_activation.py mobilenet_v2 1 8
    LAY=NHWC ACT=relu6 python benchmarks/fused_activation.py resnet50 1

Per layer and batch, four ways take turns call by call in one process (so
the drift of this shared machine hits each alike):

* ``plain``: ``conv2d`` with no activation;
* ``fused``: ``conv2d(..., activation=ACT)``;
* ``apart``: ``conv2d`` then the activation in place with NumPy, as a user
  without ``activation=`` would write it;
* ``torch``, with ``TORCH=1``: ``torch.nn.functional.conv2d`` then the
  activation in place (``relu_``, ``hardtanh_``, ``silu(inplace=True)``).
  Its OpenMP threads spin after each call and slow the next way's, so
  read the first three columns from a run without it.

Prints each median in ms, ``fused/plain`` and ``apart/plain`` (the
activation's cost each way) and ``fused/torch``.  Also the suite's totals.
``ROUNDS`` sets the calls per way (default 15 at batch 1, else 7);
``LAY`` the layout (default NCHW); ``ACT`` relu (default), relu6 or silu.
"""

import os
import statistics
import sys
import time

import numpy as np

import numbaconv
from numbaconv import _activation
from numbaconv.bench import load_suite


def torch_call(x, w, kw: dict, act: str):
    """torch's conv2d and in-place activation on the same arrays, or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(numbaconv.get_num_threads())
    channels_last = kw["layout"] == "NHWC"
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2) if channels_last else x)
    wt = torch.from_numpy(w.transpose(3, 2, 0, 1) if channels_last else w)
    if channels_last:  # torch's channels_last: NCHW shapes over NHWC memory
        xt, wt = (t.contiguous(memory_format=torch.channels_last) for t in (xt, wt))
    args = dict(stride=kw["stride"], padding=kw["padding"], dilation=kw["dilation"],
                groups=kw["groups"])
    inplace = {"relu": torch.relu_, "relu6": lambda y: torch.nn.functional.hardtanh_(y, 0, 6),
               "silu": lambda y: torch.nn.functional.silu(y, inplace=True)}[act]

    def call():
        with torch.no_grad():
            inplace(torch.nn.functional.conv2d(xt, wt, **args))

    return call


def ways(x, w, kw: dict, act: str) -> dict:
    code = _activation.activation_code(act)

    def apart():
        _activation.apply(numbaconv.conv2d(x, w, **kw), code)

    found = {"plain": lambda: numbaconv.conv2d(x, w, **kw),
             "fused": lambda: numbaconv.conv2d(x, w, activation=act, **kw),
             "apart": apart}
    peer = torch_call(x, w, kw, act) if os.environ.get("TORCH") == "1" else None
    if peer is not None:
        found["torch"] = peer
    return found


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main(suite: str, batches: list[int], layout: str, act: str) -> None:
    rng = np.random.default_rng(0)
    print(f"{suite}, {layout}, activation={act}, float32, "
          f"{numbaconv.get_num_threads()} threads, machine: {numbaconv.machine.describe()}")
    for n in batches:
        rounds = int(os.environ.get("ROUNDS", 15 if n == 1 else 7))
        totals: dict = {}
        header = None
        for layer in load_suite(suite):
            if layer.rank != 2:
                continue
            xs, ws = layer.shapes(n, layout)
            x = rng.standard_normal(xs, dtype=np.float32)
            w = rng.standard_normal(ws, dtype=np.float32)
            kw = dict(layout=layout, **layer.conv_kwargs())
            calls = ways(x, w, kw, act)
            if header is None:
                header = list(calls)
                print(f"{'layer':<16}{'N':>3} {'algorithm':<17}"
                      + "".join(f"{k:>9}" for k in header)
                      + f"{'fused/plain':>13}{'apart/plain':>13}"
                      + (f"{'fused/torch':>13}" if "torch" in calls else ""))
            for call in calls.values():  # compile and warm the buffers
                call()
            times = {k: [] for k in calls}
            for _ in range(rounds):
                for k, call in calls.items():
                    times[k].append(timed(call))
            ms = {k: statistics.median(t) * 1e3 for k, t in times.items()}
            for k, v in ms.items():
                totals[k] = totals.get(k, 0.0) + v
            algorithm = numbaconv.explain(x, w, **kw).algorithm
            print(f"{layer.name:<16}{n:>3} {algorithm:<17}"
                  + "".join(f"{ms[k]:>9.3f}" for k in header) + _ratios(ms), flush=True)
        print(f"{'total':<16}{n:>3} {'':<17}" + "".join(f"{totals[k]:>9.2f}" for k in header)
              + _ratios(totals), flush=True)


def _ratios(ms: dict) -> str:
    text = f"{ms['fused'] / ms['plain']:>13.3f}{ms['apart'] / ms['plain']:>13.3f}"
    return text + (f"{ms['fused'] / ms['torch']:>13.3f}" if "torch" in ms else "")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v2",
         [int(a) for a in sys.argv[2:]] or [1], os.environ.get("LAY", "NCHW"),
         os.environ.get("ACT", "relu"))
