"""The machine context: which register tile and cache blocks fit the CPU we run on.

Every kernel and every heuristic of the dispatcher reads its tile sizes and
cache blocks from here, in the manner of BLIS's context: one table of ISA
variants (``VARIANTS``), one detection of the host, and per dtype a
``RegisterTile`` (MR rows x NR columns, NR = ``nv`` vectors of ``vw``
lanes) plus ``CacheBlocks`` derived from the cache sizes.  Adding an ISA is
one new ``Variant`` row below and nothing else.

The host's features are the ones Numba compiles for: ``NUMBA_CPU_FEATURES``
when set, else LLVM's host features (``NUMBA_CPU_NAME`` alone does not
change them, as in Numba's own codegen).  We dispatch on features, never on
CPU names: the name LLVM gives a KVM guest is a guess (``rocketlake`` for a
Sapphire Rapids Xeon).  ``NUMBACONV_ISA`` forces a variant the host can run.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from dataclasses import dataclass

import numpy as np

__all__ = ["VARIANTS", "CacheBlocks", "RegisterTile", "Variant", "blocks", "cache_sizes",
           "describe", "detect", "host_features", "register_tile", "runnable", "set_variant",
           "variant"]


@dataclass(frozen=True)
class Variant:
    """One ISA family's register file and the tile that fits it.

    ``rows`` (MR) and ``vectors`` (vectors per tile row) are chosen so that the
    MR x vectors accumulators, one row of B and a broadcast fit the
    ``registers`` without spilling (``tests/test_machine.py`` checks this, and
    that the AVX-512 tile's code is zmm code).
    """

    name: str
    vector_bits: int  # one register; 0 for the scalar fallback (1 lane)
    registers: int
    rows: int  # MR
    vectors: int  # vectors per tile row: NR = vectors * lanes
    needs: frozenset  # LLVM features the host must have (x86); see ``runnable``
    about: str

    def lanes(self, dtype) -> int:
        return max(1, self.vector_bits // (8 * np.dtype(dtype).itemsize))


VARIANTS = {
    v.name: v
    for v in (
        # 20 of 32 zmm registers accumulate: LLVM schedules all MR broadcasts
        # of a K step before its FMAs, so MR*2 + 2 + MR must fit in 32; 12 rows
        # spilled and ran 0.6x as fast (docs/design/decisions.md).
        Variant("avx512", 512, 32, 10, 2, frozenset({"avx512f", "fma"}),
                "AVX-512F + FMA, 512-bit vectors"),
        # 12 of 16 ymm registers (BLIS haswell: 6 x 16).
        Variant("avx2", 256, 16, 6, 2, frozenset({"avx2", "fma"}), "AVX2 + FMA, 256-bit vectors"),
        # 24 of NEON's 32 q registers; plain 128-bit vectors, which x86's SSE2
        # runs too (there only as a check of this tile's code, not for speed).
        Variant("neon", 128, 32, 6, 4, frozenset(), "128-bit vectors (aarch64 NEON)"),
        # Scalar code any target runs: 16 accumulators of one lane.
        Variant("generic", 0, 32, 4, 4, frozenset(), "scalar fallback"),
    )
}

# Best first, per architecture.  Elsewhere, "neon" is runnable (x86's SSE2
# and other targets run plain 128-bit vector code) only when forced, as a
# check of that tile's code.
_NATIVE = {"x86": ("avx512", "avx2", "generic"), "arm": ("neon", "generic")}


def _parse_features(text: str) -> frozenset:
    return frozenset(f[1:] for f in text.split(",") if f.startswith("+"))


def _apply_features(base: frozenset, text: str) -> frozenset:
    """``base`` with a feature string's ``+f`` entries added and ``-f`` entries removed."""
    have = set(base)
    for entry in text.split(","):
        entry = entry.strip()
        if entry.startswith("+"):
            have.add(entry[1:])
        elif entry.startswith("-"):
            have.discard(entry[1:])
    return frozenset(have)


@functools.cache
def host_features() -> frozenset:
    """The CPU features Numba's compiled code may use (see the module docstring).

    ``NUMBA_CPU_FEATURES`` modifies the features of the CPU Numba compiles
    for: the host's, unless ``NUMBA_CPU_NAME`` names another CPU, whose
    features we cannot know, so then only the listed ones count.
    """
    from numba.core import codegen
    from numba.core import config as numba_config

    host = _parse_features(codegen.get_host_cpu_features() or "")  # honours NUMBA_ENABLE_AVX
    text = numba_config.CPU_FEATURES
    if text is None:
        return host
    named = numba_config.CPU_NAME not in (None, "host")
    return _apply_features(frozenset() if named else host, text)


def _arch() -> str:
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm"
    return "x86" if machine in ("x86_64", "amd64", "i386", "i686", "x86") else "other"


def runnable(features: frozenset | None = None, arch: str | None = None) -> tuple[str, ...]:
    """The variants this host can execute, the best first."""
    features = host_features() if features is None else features
    arch = arch or _arch()
    if arch == "arm":
        return _NATIVE["arm"]
    fits = [n for n in _NATIVE["x86"] if VARIANTS[n].needs <= features] if arch == "x86" else []
    return tuple(dict.fromkeys([*fits[:-1], "neon", "generic"]))


def detect(features: frozenset | None = None, arch: str | None = None) -> str:
    """The best variant for these features and architecture (default: the host's)."""
    arch = arch or _arch()
    if arch == "arm":
        return "neon"
    features = host_features() if features is None else features
    if arch == "x86":
        return next(n for n in _NATIVE["x86"] if VARIANTS[n].needs <= features)
    return "generic"


def _forced() -> str | None:
    name = os.environ.get("NUMBACONV_ISA", "").strip().lower()
    if not name:
        return None
    if name not in VARIANTS:
        raise ValueError(f"NUMBACONV_ISA: expected one of {sorted(VARIANTS)}, got {name!r}")
    if name not in runnable():
        raise ValueError(f"NUMBACONV_ISA: this CPU cannot run {name!r}; it runs "
                         f"{', '.join(runnable())}")
    return name


_current: str | None = None


def variant() -> str:
    """The variant in use: ``NUMBACONV_ISA`` if set, else the best the host runs.

    Examples
    --------
    >>> from numbaconv import machine
    >>> machine.variant() in machine.runnable()
    True
    """
    global _current
    if _current is None:
        _current = _forced() or detect()
    return _current


def set_variant(name: str | None) -> str:
    """Use ``name`` from now on (``None``: back to ``NUMBACONV_ISA`` or detection).

    Returns the variant set before (``None`` if none was chosen yet), so
    that tests can restore it.  Plans and kernels are cached per variant, so
    nothing needs clearing.  This works even when ``NUMBACONV_ISA`` holds a
    bad value, which ``variant()`` refuses.

    Examples
    --------
    >>> from numbaconv import machine
    >>> before = machine.set_variant("generic")
    >>> str(machine.register_tile(machine.variant(), "float32"))
    'generic 4x4 float32 (4 x 1-lane vectors per row)'
    >>> _ = machine.set_variant(before)
    """
    global _current
    before = _current  # (None when not chosen yet: restoring it chooses again)
    if name is not None and name not in runnable():
        raise ValueError(f"isa: this CPU runs {', '.join(runnable())}, got {name!r}")
    _current = name
    return before


@dataclass(frozen=True)
class RegisterTile:
    """The MR x NR register tile of one variant and dtype, as the kernels see it.

    Kernels take it as their first argument; its Numba type carries the
    numbers as compile-time constants (``kernels.registers``), so each
    variant compiles, and is disk-cached, as its own specialisation.
    """

    isa: str
    dtype: str
    mr: int
    nv: int
    vw: int

    @property
    def nr(self) -> int:
        return self.nv * self.vw

    @property
    def lg(self) -> int:  # nr == 1 << lg: panel indices by shifts
        return self.nr.bit_length() - 1

    def __str__(self) -> str:
        return (f"{self.isa} {self.mr}x{self.nr} {self.dtype} "
                f"({self.nv} x {self.vw}-lane vectors per row)")

    def __reduce__(self):
        # The fields only: the kernel factory attaches the Numba type as
        # ``_numba_type_``, which refers back to this tile, and Numba's disk
        # cache pickles the type (with the tile) in its index.
        return (RegisterTile, (self.isa, self.dtype, self.mr, self.nv, self.vw))


@functools.cache
def register_tile(isa: str, dtype) -> RegisterTile:
    """The register tile of variant ``isa`` for ``dtype`` (``float32``/``float64``)."""
    v = VARIANTS[isa]
    dtype = np.dtype(dtype)
    vw = v.lanes(dtype)
    tile = RegisterTile(isa, dtype.name, v.rows, v.vectors, vw)
    assert tile.nr & (tile.nr - 1) == 0, "NR must be a power of two (panel indices by shifts)"
    return tile


# --------------------------------------------------------------------------
# Caches
# --------------------------------------------------------------------------
_DEFAULT_CACHES = (32 << 10, 512 << 10)  # L1d, L2 per core when the OS does not say


def _sysfs_caches() -> tuple[int, int] | None:
    base = "/sys/devices/system/cpu/cpu0/cache"
    sizes = {}
    try:
        for entry in sorted(os.listdir(base)):
            if not entry.startswith("index"):
                continue
            with open(f"{base}/{entry}/level") as f:
                level = int(f.read())
            with open(f"{base}/{entry}/type") as f:
                kind = f.read().strip()
            with open(f"{base}/{entry}/size") as f:
                text = f.read().strip()
            scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            if kind in ("Data", "Unified"):
                sizes.setdefault(level, int(text.rstrip("KM")) * scale)
    except (OSError, ValueError):
        return None
    return (sizes[1], sizes[2]) if 1 in sizes and 2 in sizes else None


def _sysctl_caches() -> tuple[int, int] | None:  # macOS
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", "hw.l1dcachesize", "hw.l2cachesize"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
        l1, l2 = (int(v) for v in out.split()[:2])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return l1, l2


@functools.cache
def cache_sizes() -> tuple[int, int]:
    """(L1 data, L2) bytes per core: sysfs on Linux, sysctl on macOS, else 32 KiB / 512 KiB."""
    found = _sysfs_caches() if sys.platform.startswith("linux") else None
    if found is None and sys.platform == "darwin":
        found = _sysctl_caches()
    if found is None or min(found) <= 0:
        return _DEFAULT_CACHES
    return found


@dataclass(frozen=True)
class CacheBlocks:
    """Cache blocks of one register tile, from the cache sizes.

    ``kc``: K block, so that one packed panel (kc rows of NR) fills half of
    L1 and the A side of a tile the rest, at most ``KC_MAX``; ``l2_share``: bytes a task's
    packed operands or scratch may take (a quarter of L2, leaving room for
    the other operand and the output); ``l2_half``: a larger operand that
    streams through L2 (pointwise_gemm's rows of A).
    """

    kc: int
    l1: int
    l2: int

    @property
    def l2_share(self) -> int:
        return self.l2 // 4

    @property
    def l2_half(self) -> int:
        return self.l2 // 2


# K blocks of more than this many rows ran slower even where half of L1
# held the panel: 1.07-1.13x the time at 384 on the Xeon's 48 KiB L1, both
# tiles, as A's share of L1 grows with kc too (decisions.md).
KC_MAX = 256


@functools.cache
def blocks(tile: RegisterTile) -> CacheBlocks:
    l1, l2 = cache_sizes()
    line = tile.nr * np.dtype(tile.dtype).itemsize  # one panel row
    kc = max(16, min(KC_MAX, (l1 // 2) // line // 16 * 16))
    return CacheBlocks(kc=kc, l1=l1, l2=l2)


def describe() -> str:
    """One line for ``numbaconv info``, ``explain()`` and the bench header."""
    name = variant()
    l1, l2 = cache_sizes()
    t32 = register_tile(name, "float32")
    t64 = register_tile(name, "float64")
    return (f"{name} ({VARIANTS[name].about}): tile {t32.mr}x{t32.nr} float32, "
            f"{t64.mr}x{t64.nr} float64; L1d {l1 >> 10} KiB, L2 {l2 >> 10} KiB; "
            f"runnable here: {', '.join(runnable())}")
