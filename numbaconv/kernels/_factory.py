"""The memoised kernel factory: (kind, layout, dtype) -> compiled Numba kernel."""

from __future__ import annotations

import functools
import warnings

import numba
import numpy as np
from numba import types

from .. import _threads, config
from . import col2im, direct, gemm, im2col, pointwise

# Python functions that the factory compiles; the key is (kind, layout).
_PYFUNCS = {
    ("im2col", "NCHW"): im2col.im2col_nchw,
    ("im2col", "NHWC"): im2col.im2col_nhwc,
    ("col2im", "NCHW"): col2im.col2im_nchw,
    ("col2im", "NHWC"): col2im.col2im_nhwc,
    ("packed_gemm", "NCHW"): gemm.conv_nchw,
    ("indirect_gemm", "ANY"): gemm.conv_indirect,  # the layout is data: see its ``dims``
    ("pad", "NCHW"): gemm.pad_nchw,
    ("pad", "NHWC"): gemm.pad_nhwc,
    ("pack_panels", "ANY"): gemm.pack_panels,
    ("pointwise_gemm", "ANY"): pointwise.gemm_pointwise,  # the layout is data (its ``dims``)
    ("depthwise", "NCHW"): direct.depthwise_nchw,
    ("depthwise", "NHWC"): direct.depthwise_nhwc,
    ("depthwise_grad_input", "NCHW"): direct.depthwise_grad_input_nchw,
    ("depthwise_grad_input", "NHWC"): direct.depthwise_grad_input_nhwc,
    ("depthwise_grad_weight", "NCHW"): direct.depthwise_grad_weight_nchw,
    ("depthwise_grad_weight", "NHWC"): direct.depthwise_grad_weight_nhwc,
}

# Argument kinds of each kernel, in order (see the kernels' docstrings):
# "x" activations (4-d), "c1"/"c2" flat or 2-d column buffers, "i" int64
# scalars, "t1"/"t2" int64 index tables.  Inputs are typed read-only so that a
# caller's read-only array is accepted without a copy.
_ARGS = {
    ("im2col", "NCHW"): ("x_in", "i", "i", "i", "i", "c1_out", "i", "i", "t2", "t2", "t2", "t2",
                         "i", "i"),
    ("im2col", "NHWC"): ("x_in", "i", "i", "i", "i", "c2_out", "t2", "t2", "t2"),
    ("col2im", "NCHW"): ("c1_in", "i", "i", "i", "i", "i", "i", "x_out", "t2", "t2", "t2", "i"),
    ("col2im", "NHWC"): ("c2_in", "i", "i", "i", "i", "x_out", "t2", "t2"),
    ("packed_gemm", "NCHW"): ("x_in", "c2_in", "c1_in", "i", "x_out", "t2", "t2", "t2", "t2",
                              "i", "i", "i", "i", "i", "i"),
    ("indirect_gemm", "ANY"): ("c1_in", "c1_in", "c1_in", "c1_in", "i", "c1_out", "t1", "t1",
                               "i", "i", "i"),
    ("pad", "NCHW"): ("x_in", "x_out", "t1", "t1", "i", "i"),
    ("pad", "NHWC"): ("x_in", "x_out", "t1", "t1"),
    ("pack_panels", "ANY"): ("c1_in", "i", "i", "x_out"),
    ("pointwise_gemm", "ANY"): ("c1_in", "c1_in", "c1_in", "i", "c1_out", "t1", "i", "i", "i"),
    ("depthwise", "NCHW"): ("x_in", "x_in", "c1_in", "i", "x_out", "t1", "t1", "i", "i", "i",
                            "i", "i"),
    ("depthwise", "NHWC"): ("x_in", "x_in", "c1_in", "i", "x_out", "t2", "t2"),
    ("depthwise_grad_input", "NCHW"): ("x_in", "x_in", "x_out", "t2", "t2", "t2", "i"),
    ("depthwise_grad_input", "NHWC"): ("x_in", "x_in", "x_out", "t2", "t2", "i"),
    ("depthwise_grad_weight", "NCHW"): ("x_in", "x_in", "x_out", "t2", "t2", "t2", "i"),
    ("depthwise_grad_weight", "NHWC"): ("x_in", "x_in", "x_out", "t2", "t2", "i"),
}


def _signature(kind: str, layout: str, dtype: np.dtype):
    f = numba.from_dtype(np.dtype(dtype))
    make = {
        "x_in": types.Array(f, 4, "C", readonly=True),
        "x_out": types.Array(f, 4, "C"),
        "c1_in": types.Array(f, 1, "C", readonly=True),
        "c2_in": types.Array(f, 2, "C", readonly=True),
        "c1_out": types.Array(f, 1, "C"),
        "c2_out": types.Array(f, 2, "C"),
        "i": types.int64,
        "t1": types.Array(types.int64, 1, "C", readonly=True),
        "t2": types.Array(types.int64, 2, "C", readonly=True),
    }
    return types.void(*(make[a] for a in _ARGS[kind, layout]))


# Kernels kept out of Numba's disk cache.  Loaded from the cache, the NHWC
# gather ran 5-8x slower than the same kernel compiled in the process
# (measured here: 3x3 at 56x56, 5 vs 40 GB/s, also single-threaded, so it is
# the cached machine code; Numba issue #8085, "cache=True slow for parallel
# target", is open).  Every other kernel loads at full speed (checked the
# same way).  Compiling it costs ~2 s on the first NHWC call of a process.
NO_DISK_CACHE = {("im2col", "NHWC")}

_disk_cache_failed = False


def _compile(pyfunc, sig, cacheable: bool = True):
    """njit with the disk cache when allowed and possible.

    Numba raises at decoration time when no cache directory is writable (a
    read-only install with a read-only home); then we compile in memory
    instead of failing the user's call.
    """
    global _disk_cache_failed
    use_cache = cacheable and config.disk_cache and not _disk_cache_failed
    try:
        return numba.njit(sig, parallel=True, cache=use_cache, nogil=True)(pyfunc)
    except RuntimeError as err:
        if not use_cache or "cannot cache" not in str(err):
            raise
        _disk_cache_failed = True
        warnings.warn(
            f"numbaconv: no writable directory for Numba's kernel cache ({err}); kernels "
            "are compiled in memory. Set NUMBA_CACHE_DIR to a writable path, or "
            "NUMBACONV_CACHE=0 to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return numba.njit(sig, parallel=True, cache=False, nogil=True)(pyfunc)


class Kernel:
    """A compiled kernel; calling it launches it under the threading-layer guard."""

    __slots__ = ("dispatcher", "name")

    def __init__(self, name: str, dispatcher):
        self.name = name
        self.dispatcher = dispatcher

    def __call__(self, *args) -> None:
        with _threads.launch_lock():
            self.dispatcher(*args)

    def __repr__(self) -> str:
        return f"<numbaconv kernel {self.name}>"


@functools.cache
def get(kind: str, layout: str, dtype: str) -> Kernel:
    """The compiled kernel for (kind, layout, dtype); compiled on first use."""
    sig = _signature(kind, layout, np.dtype(dtype))
    return Kernel(f"{kind}_{layout.lower()}[{dtype}]",
                  _compile(_PYFUNCS[kind, layout], sig, (kind, layout) not in NO_DISK_CACHE))


def kernel_cache_info():
    return get.cache_info()


def cache_clear() -> None:
    get.cache_clear()
