"""Numba kernels.  Nothing here validates input: the public wrappers do.

``get(kind, layout, dtype)`` is the memoised kernel factory: each distinct
(kind, layout, dtype) is compiled once per process (or loaded from Numba's
on-disk cache), with an explicit signature so that a call can never trigger
a surprise recompilation.
"""

from ._factory import cache_clear, get, kernel_cache_info
from .gemm import panel_width

__all__ = ["cache_clear", "get", "kernel_cache_info", "panel_width"]
