"""Numba kernels.  Nothing here validates input: the public wrappers do.

``get(kind, layout, dtype)`` is the memoised kernel factory: each distinct
(kind, layout, dtype, ISA variant) is compiled once per process (or loaded
from Numba's on-disk cache), with an explicit signature so that a call can
never trigger a surprise recompilation.  Where things live:

* ``registers``: the register tile as a Numba type, and the micro-kernels
  (LLVM IR) generated for it;
* ``packing``: weight panels, column tiles and padded inputs for the tile;
* ``indirect_gemm``, ``packed_gemm``, ``pointwise``: the register-tiled
  convolutions; ``im2col``, ``col2im``: the gathers feeding BLAS;
  ``direct``: depthwise kernels.
"""

from ._factory import cache_clear, get, kernel_cache_info

__all__ = ["cache_clear", "get", "kernel_cache_info"]
