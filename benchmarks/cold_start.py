"""Cold start: a new process imports numbaconv and runs one 3x3 conv.

    python benchmarks/cold_start.py [ROUNDS]

The issue's target: at most 1 s with a warm on-disk kernel cache; the
figure with an empty cache is reported too.  Each round starts fresh
Python processes, taking turns:

* ``warm``: Numba's usual cache (``NUMBA_CACHE_DIR`` as the caller set
  it, else beside the package), filled by one untimed process first;
* ``empty``: ``NUMBA_CACHE_DIR`` set to a new empty directory, so every
  kernel the call needs is compiled.

Per process it prints the time from the start of the script's first import
to the conv's result (``first result``, measured inside the child) and the
whole process from spawn to exit (``wall``, measured here: interpreter
start-up and teardown included).  The conv is 1 x 64 x 56 x 56 -> 64,
3x3, padding 1, float32, NCHW (ResNet-50's second 3x3 layer).  Note that
with SciPy installed, Numba imports ``scipy.linalg`` on its first cache
load (0.3-0.5 s here); a fresh ``pip install numbaconv`` has no SciPy.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

CHILD = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    import json
    import numpy as np
    import numbaconv
    x = np.ones((1, 64, 56, 56), np.float32)
    w = np.ones((64, 64, 3, 3), np.float32)
    y = numbaconv.conv2d(x, w, padding=1)
    assert y[0, 0, 1, 1] == 64 * 9
    print(json.dumps({"first": time.perf_counter() - t0}))
""")


def one(env: dict) -> tuple[float, float]:
    """(first result, wall) of one child process, in seconds."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, check=True,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    return json.loads(done.stdout.strip().splitlines()[-1])["first"], wall


def main(rounds: int) -> None:
    warm_env = dict(os.environ)
    one(warm_env)  # fill the cache
    times = {"warm": [], "empty": []}
    for _ in range(rounds):
        times["warm"].append(one(warm_env))
        with tempfile.TemporaryDirectory() as cache:
            times["empty"].append(one(dict(os.environ, NUMBA_CACHE_DIR=cache)))
    try:
        import scipy  # noqa: F401
        note = "SciPy is installed (Numba imports it on its first cache load)"
    except ImportError:
        note = "no SciPy"
    print(f"cold start, {rounds} rounds, {note}; medians (min-max) in seconds")
    for kind, pairs in times.items():
        first = [p[0] for p in pairs]
        wall = [p[1] for p in pairs]
        print(f"  {kind:5} cache: first result {statistics.median(first):.2f} "
              f"({min(first):.2f}-{max(first):.2f}), wall {statistics.median(wall):.2f} "
              f"({min(wall):.2f}-{max(wall):.2f})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
