"""Whether a peer's output agrees with numbaconv's: whole arrays, or a sample of one.

In this process the two outputs are compared whole (``_close``); a peer
timed in a process of its own (``--isolate``) sends a seeded sample of its
output instead (``_sample``), compared with the same tolerance
(``_sample_close``).
"""

from __future__ import annotations

import numpy as np


def _tolerance(dtype) -> float:
    """Relative to the output's largest magnitude (or 1, if that is smaller)."""
    return 2e-4 if np.dtype(dtype) == np.float32 else 1e-9


def _close(a, b, dtype) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and float(np.abs(a - b).max(initial=0)) <= _tolerance(dtype) * max(
        1.0, float(np.abs(b).max(initial=0)))


_SAMPLE_SIZE = 512


def _sample(y: np.ndarray) -> dict:
    """What the parent needs to check an isolated peer's output without the array.

    The whole output would be hundreds of MB of JSON at large batches, and
    the parent cannot recompute it without importing the peer into its own
    process (the thing --isolate avoids).  So the worker sends the shape, the
    largest magnitude and the values at ``_SAMPLE_SIZE`` seeded positions;
    the parent applies ``_close``'s element-wise test to those.  A wrong
    layout or a wrong tap shows up at almost every position, so a sample
    catches it; a checksum would not catch a transposed output.
    """
    y = np.asarray(y)
    flat = y.reshape(-1).astype(np.float64)
    where = np.random.default_rng(1).integers(0, max(flat.size, 1), _SAMPLE_SIZE)
    return {"shape": list(y.shape), "absmax": float(np.abs(flat).max(initial=0)),
            "sample": flat[where].tolist() if flat.size else []}


def _sample_close(ours: np.ndarray, theirs: dict, dtype) -> bool:
    """``_close`` on the sampled positions, with the tolerance of the whole output."""
    mine = _sample(ours)
    if mine["shape"] != theirs["shape"]:
        return False
    diff = np.abs(np.subtract(mine["sample"], theirs["sample"])).max(initial=0)
    return float(diff) <= _tolerance(dtype) * max(1.0, theirs["absmax"])
