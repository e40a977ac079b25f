"""Tunables and the environment variables that set them.

Every default lives in ``_DEFAULTS``; ``reset()`` restores them (tests use it).
Environment variables are read once, at import, so that a value set in the
shell applies to the whole process:

``NUMBACONV_MAX_WORKSPACE``
    Upper bound, in bytes, on the im2col column buffer of one call
    (suffixes ``K``, ``M``, ``G`` are accepted, e.g. ``256M``).
``NUMBACONV_CACHE``
    ``0`` turns off Numba's on-disk cache of compiled kernels.
``NUMBACONV_NUM_THREADS``
    Threads used by the kernels (default: all cores).
``NUMBACONV_BLAS_SPIN``
    ``keep``: never stop OpenBLAS's idle threads before a large Numba kernel
    (read by ``_threads`` at import; see docs/threads.md).
``NUMBACONV_WINOGRAD``
    ``0`` keeps the dispatcher from choosing Winograd (direct arithmetic
    only; ``algorithm="winograd"`` still forces it).
``NUMBACONV_ISA``
    ``avx512``, ``avx2``, ``neon`` or ``generic``: the register tile of the
    GEMM kernels, instead of the best this CPU runs (read by ``machine``;
    see docs/cpus.md).
"""

from __future__ import annotations

import os
import re

__all__ = ["max_workspace_bytes", "gemm_batch_below", "serial_kernel_bytes", "disk_cache",
           "num_threads", "winograd", "reset"]

_DEFAULTS = {
    # 64 MiB keeps the column buffer of any ResNet-sized layer to a few chunks,
    # while a batch of 256 ImageNet images never allocates gigabytes.
    "max_workspace_bytes": 64 * 2**20,
    # NCHW: below this many output pixels per image, one GEMM covers a chunk
    # of images instead of one GEMM per image (thin GEMMs run slowly); 1x1
    # layers below an eighth of it (see algorithms._gemm.gemm_batched).
    "gemm_batch_below": 1024,
    # A gather or scatter (im2col/col2im) whose column buffer, or a depthwise
    # gradient kernel whose operands, take at most this many bytes runs on the
    # calling thread alone.  After every GEMM, OpenBLAS's worker spins on the
    # other core for ~0.1 s; a parallel kernel shares that core with it and
    # lost more than the second thread gave (ResNet-50 at batch 1, layers back
    # to back: 24-27 vs 27-30 ms).  0 turns it off.  See docs/threads.md;
    # evidence in docs/design/decisions.md, "Small kernels run on the calling
    # thread".
    "serial_kernel_bytes": 8 * 2**20,
    "disk_cache": True,
    "num_threads": None,  # None: let Numba decide (all cores)
    # Whether the dispatcher may choose Winograd for 3x3 stride-1 layers: fewer
    # multiplies, a little more rounding error, and a NaN or inf reaches every
    # output of its tile (docs/design/decisions.md, "Winograd").
    "winograd": True,
}

_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}


def _parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)i?B?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ValueError(
            f"NUMBACONV_MAX_WORKSPACE: expected a byte count such as 67108864 or 64M, "
            f"got {text!r}"
        )
    return int(m.group(1)) * _SUFFIX[m.group(2).upper()]


def _switch(name: str) -> bool:
    """An on/off environment variable: 0, false, no and off are off."""
    return os.environ[name].strip().lower() not in ("0", "false", "no", "off")


def _from_env() -> dict:
    values = dict(_DEFAULTS)
    if "NUMBACONV_MAX_WORKSPACE" in os.environ:
        values["max_workspace_bytes"] = _parse_bytes(os.environ["NUMBACONV_MAX_WORKSPACE"])
    if "NUMBACONV_CACHE" in os.environ:
        values["disk_cache"] = _switch("NUMBACONV_CACHE")
    if "NUMBACONV_WINOGRAD" in os.environ:
        values["winograd"] = _switch("NUMBACONV_WINOGRAD")
    text = os.environ.get("NUMBACONV_NUM_THREADS", "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"NUMBACONV_NUM_THREADS: expected a positive integer, got {text!r}")
        values["num_threads"] = int(text)
    return values


def reset() -> None:
    """Restore every tunable to its default (environment variables included)."""
    globals().update(_from_env())


max_workspace_bytes: int
gemm_batch_below: int
serial_kernel_bytes: int
disk_cache: bool
num_threads: int | None
winograd: bool
reset()
