"""How ONNX Runtime's spinning workers slow the conv2d calls that follow.

ONNX Runtime's intra-op workers keep polling for work after ``session.run``
returns.  This times ten conv2d calls after a pause, ten ONNX Runtime runs,
then ten conv2d calls straight after them, in rounds, with the session's
``session.intra_op.allow_spinning`` set to the first argument (1 is ONNX
Runtime's default).  Needs the ``bench`` extra.

    python benchmarks/peer_spin.py 1
    python benchmarks/peer_spin.py 0
"""

import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

import numbaconv
from numbaconv.bench import _onnxruntime_peer, _rng_arrays, load_suite


def main(spin: str, rounds: int = 15) -> None:
    layer = load_suite("resnet50")[2]  # 56x56x64, 3x3: indirect_gemm
    x, w = _rng_arrays(layer, 1, "NCHW", np.float32)
    kw = layer.conv_kwargs()

    def ours():
        numbaconv.conv2d(x, w, **kw)

    options = ort.SessionOptions

    class Spin(options):  # the bench's session, with the one entry changed
        def __init__(self):
            super().__init__()
            self.add_session_config_entry("session.intra_op.allow_spinning", spin)

    ort.SessionOptions = Spin
    try:
        theirs = _onnxruntime_peer(layer, x, w, "NCHW", 2)
    finally:
        ort.SessionOptions = options

    def ten(fn):
        t = time.perf_counter()
        for _ in range(10):
            fn()
        return (time.perf_counter() - t) / 10

    for _ in range(5):
        ours()
        theirs()
    times = {"conv2d after a pause": [], "onnxruntime": [], "conv2d right after it": []}
    for _ in range(rounds):
        time.sleep(0.3)
        for _ in range(3):
            ours()
        times["conv2d after a pause"].append(ten(ours))
        for _ in range(3):
            theirs()
        times["onnxruntime"].append(ten(theirs))
        times["conv2d right after it"].append(ten(ours))
    print(f"allow_spinning={spin}: " + "  ".join(
        f"{k} {statistics.median(v) * 1e3:.2f} ms" for k, v in times.items()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "1")
