"""ResNet-50's 12 layer shapes back to back, like a network's forward pass.

Per-layer benchmarks repeat one layer; a network alternates layers, so
each one starts after a different kernel (and, for BLAS layers, with
OpenBLAS's threads still spinning).  This times that sequence.

    LAY=NCHW python benchmarks/network_sequence.py auto 1 8
    LAY=NHWC python benchmarks/network_sequence.py auto,packed 1 8

A rule (first argument) is ``auto`` (the dispatcher), ``packed`` (the
dispatcher, with every weight packed once beforehand by ``pack_weight``, as
for inference), ``im2col`` (im2col_gemm on every layer that is not 1x1) or
``indirect`` (indirect_gemm on every layer).  Several rules, comma-separated,
take turns pass by pass in the one process, so that the drift of this
shared machine hits each alike; the last line gives each rule's median over
the first's.  The other arguments are batch sizes; ``PASSES`` sets the
passes per rule (default 11 at batch 1, else 5).  Prints the median pass
and each layer's median, in ms.  To compare two commits, run it
alternately in fresh processes with ``PYTHONPATH`` set to each checkout.
"""

import os
import statistics
import sys
import time

import numpy as np

import numbaconv
from numbaconv.bench import load_suite


def algorithm(rule: str, layer) -> str:
    if rule == "indirect":
        return "indirect_gemm"
    if rule == "im2col" and layer.kernel > 1:
        return "im2col_gemm"
    return "auto"


def main(rules: list[str], batches: list[int], layout: str) -> None:
    rng = np.random.default_rng(0)
    for n in batches:
        data = []
        for layer in load_suite("resnet50"):
            xs, ws = layer.shapes(n, layout)
            w = rng.random(ws, np.float32)
            packed = numbaconv.pack_weight(w, layer.groups, layout=layout)
            data.append((layer, rng.random(xs, np.float32), w, packed))
        per = {rule: [[] for _ in data] for rule in rules}
        passes = {rule: [] for rule in rules}

        def forward(rule, data=data, per=per, passes=passes):
            t0 = time.perf_counter()
            for i, (layer, x, w, packed) in enumerate(data):
                t = time.perf_counter()
                numbaconv.conv2d_with(x, packed if rule == "packed" else w,
                                      algorithm=algorithm(rule, layer), layout=layout,
                                      **layer.conv_kwargs())
                per[rule][i].append(time.perf_counter() - t)
            passes[rule].append(time.perf_counter() - t0)

        for rule in rules:  # warm-up
            forward(rule)
            forward(rule)
            passes[rule].clear()
            for p in per[rule]:
                p.clear()
        for _ in range(int(os.environ.get("PASSES", 11 if n == 1 else 5))):
            for rule in rules:
                forward(rule)
        medians = {rule: statistics.median(passes[rule]) for rule in rules}
        for rule in rules:
            layers = " ".join(f"{statistics.median(p) * 1e3:.2f}" for p in per[rule])
            print(f"{rule} {layout} N {n} {medians[rule] * 1e3:.1f} ms   {layers}", flush=True)
        if len(rules) > 1:
            ratios = ", ".join(f"{r} {medians[r] / medians[rules[0]]:.3f}" for r in rules[1:])
            print(f"  over {rules[0]}: {ratios}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1].split(","), [int(a) for a in sys.argv[2:]] or [1, 8],
         os.environ.get("LAY", "NCHW"))
