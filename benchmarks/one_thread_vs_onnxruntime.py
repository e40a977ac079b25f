"""numbaconv against ONNX Runtime's NCHWc kernels at one thread, taking turns in one process.

    python benchmarks/one_thread_vs_onnxruntime.py resnet50 1
    python benchmarks/one_thread_vs_onnxruntime.py vgg16 1 3

At one thread neither library has a pool of spinning threads, so the two
can take turns layer by layer in one process, and the drift of a shared
machine hits both alike (``numbaconv bench --isolate`` runs each peer in
a process of its own instead, minutes apart).  Arguments: the suite, the
batch size, the rounds (default 7).  Each round times every layer with
both, best of 5 calls; the figure is the median over rounds.  NCHW,
float32; ONNX Runtime's default session options (its NCHWc rewrite on).
Prints per layer: numbaconv's algorithm, both times in ms, and ONNX
Runtime's time over numbaconv's (below 1: ONNX Runtime is faster).
"""

import statistics
import sys
import time

import numpy as np

import numbaconv
from numbaconv.bench import load_suite
from numbaconv.bench.peers import PEERS


def best_of(call, calls: int = 5) -> float:
    call()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return min(times)


def main(suite: str, n: int, rounds: int) -> None:
    rng = np.random.default_rng(0)
    rows = []
    with numbaconv.threads(1):
        for layer in load_suite(suite):
            xs, ws = layer.shapes(n, "NCHW")
            x = rng.standard_normal(xs, dtype=np.float32)
            w = rng.standard_normal(ws, dtype=np.float32)
            kw = layer.conv_kwargs()
            rows.append((layer.name, numbaconv.explain(x, w, **kw).algorithm,
                         lambda x=x, w=w, kw=kw: numbaconv.conv2d(x, w, **kw),
                         PEERS["onnxruntime"](layer, x, w, "NCHW", threads=1)))
        times = {name: ([], []) for name, *_ in rows}
        for _ in range(rounds):
            for name, _, ours, peer in rows:
                times[name][0].append(best_of(ours))
                times[name][1].append(best_of(peer))
    print(f"# {numbaconv.machine.describe()}; {suite}, batch {n}, NCHW float32, 1 thread")
    total = [0.0, 0.0]
    for name, algorithm, *_ in rows:
        ours, peer = (statistics.median(t) * 1e3 for t in times[name])
        total[0] += ours
        total[1] += peer
        print(f"{name:16s} {algorithm:16s} numbaconv {ours:8.3f}  onnxruntime {peer:8.3f}  "
              f"ratio {peer / ours:5.2f}")
    print(f"total numbaconv {total[0]:.2f} ms, onnxruntime {total[1]:.2f} ms, "
          f"ratio {total[1] / total[0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "resnet50",
         int(sys.argv[2]) if len(sys.argv) > 2 else 1,
         int(sys.argv[3]) if len(sys.argv) > 3 else 7)
