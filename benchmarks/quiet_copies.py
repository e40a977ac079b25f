"""im2col and col2im with OpenBLAS's spinning threads stopped first, against sharing the cores.

    python benchmarks/quiet_copies.py NHWC 8 01,06,11
    python benchmarks/quiet_copies.py NCHW 1 01,06,09,11

For the named ResNet-50 layers (by number), at the given layout and batch,
times the forward call, ``conv2d_grad_input``, ``conv2d_grad_weight`` and a
whole step (forward and ``conv2d_backward``) two ways, taking turns in one
process: ``spin`` leaves OpenBLAS's threads spinning when a gather or
col2im follows a GEMM (``QUIET_COPY_BYTES`` set past any size); ``quiet``
is numbaconv as shipped, which stops them before copies of at least
``QUIET_COPY_BYTES``.  Float32, medians over 5 rounds of the median of 3
calls; prints quiet's time over spin's (below 1: stopping them is faster).
"""

import statistics
import sys
import time

import numpy as np

import numbaconv
from numbaconv import _execute
from numbaconv.bench import load_suite

SHIPPED = _execute.QUIET_COPY_BYTES


def calls(layout: str, n: int, numbers: list[str]):
    rng = np.random.default_rng(0)
    for layer in load_suite("resnet50"):
        if layer.name.split(".")[1] not in numbers:
            continue
        xs, ws = layer.shapes(n, layout)
        x = rng.standard_normal(xs, dtype=np.float32)
        w = rng.standard_normal(ws, dtype=np.float32)
        kw = dict(layer.conv_kwargs(), layout=layout)
        g = rng.standard_normal(numbaconv.conv2d(x, w, **kw).shape, dtype=np.float32)
        yield f"{layer.name} forward", lambda x=x, w=w, kw=kw: numbaconv.conv2d(x, w, **kw)
        yield f"{layer.name} grad_input", (
            lambda x=x, w=w, g=g, kw=kw: numbaconv.conv2d_grad_input(x.shape, w, g, **kw))
        yield f"{layer.name} grad_weight", (
            lambda x=x, w=w, g=g, kw=kw: numbaconv.conv2d_grad_weight(x, w.shape, g, **kw))
        yield f"{layer.name} step", lambda x=x, w=w, g=g, kw=kw: (
            numbaconv.conv2d(x, w, **kw), numbaconv.conv2d_backward(g, x, w, **kw))


def main(layout: str, n: int, numbers: list[str]) -> None:
    rows = list(calls(layout, n, numbers))
    ways = {"spin": 1 << 62, "quiet": SHIPPED}
    times = {name: {way: [] for way in ways} for name, _ in rows}
    for _ in range(5):
        for name, call in rows:
            for way, bound in ways.items():
                _execute.QUIET_COPY_BYTES = bound
                call()
                one = []
                for _ in range(3):
                    t = time.perf_counter()
                    call()
                    one.append(time.perf_counter() - t)
                times[name][way].append(statistics.median(one))
    _execute.QUIET_COPY_BYTES = SHIPPED
    print(f"# {numbaconv.machine.describe()}; {layout}, batch {n}, float32")
    for name, _ in rows:
        spin, quiet = (statistics.median(times[name][w]) * 1e3 for w in ways)
        print(f"{name:26s} spin {spin:8.2f} ms  quiet {quiet:8.2f} ms  "
              f"quiet/spin {quiet / spin:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","))
