"""An algorithm against im2col_gemm on ResNet-50's layers: alone, and as a network.

    python benchmarks/algorithm_vs_im2col.py --algorithm packed_gemm --layout NCHW
    python benchmarks/algorithm_vs_im2col.py --algorithm indirect_gemm --layout NHWC

Two measurements, each algorithm in a fresh child process per round (rounds
alternate, so drift on this shared machine hits both), float32:

* ``layer``: each of the 12 layers timed on its own (median of repeats), as
  ``numbaconv bench`` does.  1x1 layers run ``gemm_1x1`` in both columns
  unless ``--also-1x1`` sends them to the algorithm too.
* ``network``: the 12 layers called back to back, like a forward pass.
  This is where thread pools meet: a Numba kernel that follows an OpenBLAS
  call shares the cores with OpenBLAS's worker while it spins down.

The figure is the median over rounds; the ratio is the algorithm's time over
im2col_gemm's.
"""

import argparse
import json
import statistics
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import json, statistics, sys, time
    import numpy as np, numbaconv
    from numbaconv.bench import load_suite
    algorithm, also_1x1, batches = sys.argv[1], sys.argv[2] == "1", json.loads(sys.argv[3])
    layout = sys.argv[4]
    rng = np.random.default_rng(0)

    def median_ms(fn, repeat):
        fn(); fn()
        times = []
        for _ in range(repeat):
            t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3

    result = {}
    for n in batches:
        calls = []
        for layer in load_suite("resnet50"):
            xs, ws = layer.shapes(n, layout)
            x = rng.standard_normal(xs, dtype=np.float32)
            w = rng.standard_normal(ws, dtype=np.float32)
            algo = algorithm if layer.kernel > 1 or also_1x1 else "auto"
            kw = layer.conv_kwargs()
            calls.append((layer.name, lambda x=x, w=w, a=algo, kw=kw:
                          numbaconv.conv2d_with(x, w, algorithm=a, layout=layout, **kw)))
        repeat = 9 if n == 1 else 5
        for name, fn in calls:
            result[f"{name} N{n}"] = median_ms(fn, repeat)
        result[f"network N{n}"] = median_ms(lambda: [fn() for _, fn in calls], repeat)
    print(json.dumps(result))
""")


def child(algorithm: str, also_1x1: bool, batches: list[int], layout: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, algorithm, "1" if also_1x1 else "0",
                          json.dumps(batches), layout], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--algorithm", default="packed_gemm",
                        choices=["packed_gemm", "indirect_gemm"])
    parser.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"])
    parser.add_argument("--also-1x1", action="store_true",
                        help="send the 1x1 layers to the algorithm too (no OpenBLAS call at all)")
    args = parser.parse_args()
    runs = {"im2col_gemm": [], args.algorithm: []}
    for _ in range(args.rounds):
        for algorithm, results in runs.items():
            results.append(child(algorithm, args.also_1x1, args.batch, args.layout))
    print(f"{args.layout:16} {'im2col_gemm ms':>15} {args.algorithm + ' ms':>17} {'ratio':>8}")
    totals = {}
    for key in runs["im2col_gemm"][0]:
        a = statistics.median(r[key] for r in runs["im2col_gemm"])
        b = statistics.median(r[key] for r in runs[args.algorithm])
        n = key.split()[-1]
        if not key.startswith("network"):
            totals.setdefault(n, [0.0, 0.0])
            totals[n][0] += a
            totals[n][1] += b
        print(f"{key:16} {a:15.2f} {b:17.2f} {b / a:7.2f}x")
    for n, (a, b) in totals.items():
        print(f"{'sum of layers ' + n:16} {a:15.2f} {b:17.2f} {b / a:7.2f}x")


if __name__ == "__main__":
    main()
