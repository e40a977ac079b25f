"""The machine a sweep runs on: the header of every result, and ``numbaconv info``."""

from __future__ import annotations

import datetime
import os
import platform

import numpy as np


def jit_cache_dir() -> str:
    """Where Numba writes (or would write) numbaconv's compiled kernels.

    Numba tries ``NUMBA_CACHE_DIR``, then ``__pycache__`` next to the kernel
    sources, then a per-user directory (``~/.cache/numba``): the first that
    is writable wins.
    """
    from .. import config

    if not config.disk_cache:
        return "off (NUMBACONV_CACHE=0): kernels are compiled in memory"
    try:
        from numba.core import caching

        from ..kernels import im2col

        for cls in caching.CacheImpl._locator_classes:
            locator = cls.from_function(im2col.im2col_nchw, im2col.__file__)
            if locator is not None:
                return locator.get_cache_path()
        return "no writable directory: kernels are compiled in memory"
    except Exception:  # pragma: no cover - Numba's private API moved
        import numba

        return numba.config.CACHE_DIR or "next to the package (or ~/.cache/numba)"


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """The header of every CSV/JSON result, and ``numbaconv info``.

    CPU model, cores and SIMD flags, library versions (numbaconv, NumPy,
    Numba, and each installed peer, read from package metadata without
    importing it), BLAS library and threads, Numba's threading layer,
    thread counts, the JIT cache directory and the date.

    Examples
    --------
    >>> from numbaconv.bench import machine_info
    >>> info = machine_info()
    >>> {"cpu", "cores", "simd", "numba", "blas", "threading_layer"} <= set(info)
    True
    """
    import numba
    import threadpoolctl

    from .. import _threads

    cpu, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("", platform.machine()):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni",
                                         "avx512_bf16", "amx_tile") if f in have]
                    break
    except OSError:
        pass
    blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('threading_layer')}, "
        f"{i.get('num_threads')} threads, {os.path.basename(i.get('filepath', ''))})"
        for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"
    ]
    from .. import __version__, config, machine

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "simd": " ".join(flags),
        "isa": machine.describe(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numbaconv": __version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": _version("llvmlite"),
    }
    for dist in ("torch", "onnxruntime", "onnx", "jax", "jaxlib", "matplotlib"):
        info[dist] = _version(dist) or "not installed"
    info.update({
        "blas": "; ".join(blas) or "unknown",
        "threading_layer": _threads.threading_layer() or "not started",
        "openmp_spin": _threads.spin_policy,
        "blas_spin": _threads.blas_spin,
        "numba_threads": numba.get_num_threads(),
        "jit_cache_dir": jit_cache_dir(),
        "numba_cache_dir": numba.config.CACHE_DIR or "(NUMBA_CACHE_DIR not set)",
        "disk_cache": config.disk_cache,
        "max_workspace_bytes": config.max_workspace_bytes,
    })
    return info
