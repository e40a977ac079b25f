"""Timing: one first call, warm-up calls, then the timed calls; and BLAS's sgemm rate.

Each implementation is timed in its own block, because thread pools left
spinning by one library slow the next; the median is the figure.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass
class Timing:
    """Seconds: the first call (with compilation), then median and best of the timed calls."""

    first: float
    median: float
    best: float
    result: object = dataclasses.field(repr=False, default=None)


WARMUP_S = 0.1  # measure's warm-up: calls until this long has passed (at least one)
WARMUP_CALLS = 50  # ... or this many calls


def measure(fn: Callable, repeat: int) -> Timing:
    """Time ``fn()``: one first call, warm-up calls, then ``repeat`` timed calls.

    The warm-up runs for ``WARMUP_S`` (at most ``WARMUP_CALLS`` calls, at
    least one), not one call: on this shared 2-core VM, a process that had
    been waiting (numbaconv's, while ``--isolate``'s peers timed a table)
    ran its next calls up to 2x slower for tens of ms, its Numba workers
    going to sleep and waking at every launch; the first row of each
    table took 3.3-5.9 ms against 2.4-2.8 ms (ResNet-50's stem, batch 1).

    Examples
    --------
    >>> from numbaconv.bench import measure
    >>> t = measure(lambda: sum(range(1000)), repeat=3)
    >>> t.result, t.best <= t.median
    (499500, True)
    """
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    # Warm-up: caches, page faults, thread pools spinning up (see above).
    t0 = time.perf_counter()
    for _ in range(WARMUP_CALLS):
        fn()
        if time.perf_counter() - t0 >= WARMUP_S:
            break
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(first, statistics.median(times), min(times), result)


def sgemm_gflops(size: int = 1536, repeat: int = 5) -> float:
    """The BLAS float32 GEMM rate on a square problem, best of ``repeat``, in GFLOP/s.

    Examples
    --------
    >>> from numbaconv.bench import sgemm_gflops
    >>> sgemm_gflops(size=64, repeat=1) > 0
    True
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    t = measure(lambda: a @ b, repeat)
    return 2 * size**3 / t.best / 1e9
