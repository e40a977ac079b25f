"""ResNet-50's 12 layer shapes back to back, like a network's forward pass.

Per-layer benchmarks repeat one layer; a network alternates layers, so
each one starts after a different kernel (and, for BLAS layers, with
OpenBLAS's threads still spinning).  This times that sequence.

    LAY=NCHW python benchmarks/network_sequence.py auto 1 8
    LAY=NHWC python benchmarks/network_sequence.py im2col 8

The rule (first argument) is ``auto`` (the dispatcher), ``im2col``
(im2col_gemm on every layer that is not 1x1) or ``indirect`` (indirect_gemm
on every layer).  The other arguments are batch sizes.  Prints the median
pass and each layer's median, in ms.  To compare two commits, run it
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


def main(rule: str, batches: list[int], layout: str) -> None:
    rng = np.random.default_rng(0)
    for n in batches:
        data = []
        for layer in load_suite("resnet50"):
            xs, ws = layer.shapes(n, layout)
            data.append((layer, rng.random(xs, np.float32), rng.random(ws, np.float32)))
        per = [[] for _ in data]

        def forward(data=data, per=per):
            for i, (layer, x, w) in enumerate(data):
                t = time.perf_counter()
                numbaconv.conv2d_with(x, w, algorithm=algorithm(rule, layer), layout=layout,
                                      **layer.conv_kwargs())
                per[i].append(time.perf_counter() - t)

        forward()
        forward()
        for p in per:
            p.clear()
        passes = []
        for _ in range(11 if n == 1 else 5):
            t = time.perf_counter()
            forward()
            passes.append(time.perf_counter() - t)
        layers = " ".join(f"{statistics.median(p) * 1e3:.2f}" for p in per)
        print(f"{rule} {layout} N {n} {statistics.median(passes) * 1e3:.1f} ms   {layers}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1], [int(a) for a in sys.argv[2:]] or [1, 8], os.environ.get("LAY", "NCHW"))
