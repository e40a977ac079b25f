"""The memoised kernel factory: (kind, layout, dtype, ISA variant) -> compiled Numba kernel.

Kernels register themselves with their signature (``_registry.kernel``);
importing the kernel modules below fills the registry.
"""

from __future__ import annotations

import functools
import types as pytypes
import warnings

import numba
import numpy as np
from numba import types
from numba.core.dispatcher import Dispatcher

from .. import _threads, config, machine
from . import (  # noqa: F401
    col2im,
    direct,
    fold,
    im2col,
    indirect_gemm,
    packed_gemm,
    packing,
    pointwise,
    winograd,
)
from ._registry import KERNELS
from .registers import numba_type


def _signature(kind: str, layout: str, dtype: np.dtype, isa: str | None):
    f = numba.from_dtype(np.dtype(dtype))
    make = {
        "tile": numba_type(machine.register_tile(isa, dtype)) if isa else None,
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
    return types.void(*(make[a] for a in KERNELS[kind, layout].args))


_disk_cache_failed = False


def _compile(pyfunc, sig, cacheable: bool = True, parallel: bool = True):
    """njit with the disk cache when allowed and possible.

    Numba raises at decoration time when no cache directory is writable (a
    read-only install with a read-only home); then we compile in memory
    instead of failing the user's call.  A cache file that cannot be read
    (truncated by a crash or a full disk) would fail every later call: its
    index is dropped and the kernel compiled afresh, which rewrites it.
    """
    global _disk_cache_failed
    use_cache = cacheable and config.disk_cache and not _disk_cache_failed
    try:
        dispatcher = numba.njit(parallel=parallel, cache=use_cache, nogil=True)(pyfunc)
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
        dispatcher = numba.njit(parallel=parallel, cache=False, nogil=True)(pyfunc)
    if not isinstance(dispatcher, Dispatcher):  # NUMBA_DISABLE_JIT: the Python function
        return dispatcher
    try:
        dispatcher.compile(sig)
    except Exception as err:
        cache = getattr(dispatcher, "_cache", None)
        if not use_cache or cache is None:
            raise
        _recover(dispatcher, cache, sig, pyfunc.__qualname__, err)
    dispatcher.disable_compile()  # as njit(sig) does: this signature only
    return dispatcher


def _recover(dispatcher, cache, sig, name: str, err: Exception) -> None:
    """After ``dispatcher.compile(sig)`` raised with the disk cache on: save, load or compile?

    Numba loads from the cache, else compiles and then saves.  A compiled
    overload means only the save failed (a full disk): warn and keep it.  A
    load that fails again means a damaged file: drop the index and compile.
    Otherwise the compile itself failed, and that error is the user's.
    """
    if dispatcher.overloads:  # one signature per dispatcher: this one
        warnings.warn(f"numbaconv: the compiled kernel {name} could not be written to the "
                      f"disk cache ({type(err).__name__}: {err}); it is used from memory.",
                      RuntimeWarning, stacklevel=4)
        return
    try:
        cache.load_overload(sig, dispatcher.targetctx)
    except Exception:
        cache.flush()  # an empty index: the next load misses and saves anew
        dispatcher.compile(sig)
        warnings.warn(f"numbaconv: the disk cache of kernel {name} could not be read "
                      f"({type(err).__name__}: {err}); it was compiled again and the cache "
                      "rewritten.", RuntimeWarning, stacklevel=4)
        return
    raise err


def _serial_twin(pyfunc):
    """The same function under another name, for its serial build.

    Numba's disk-cache index keys entries by signature and bytecode, not by
    ``parallel``: under one name the serial build would load, or overwrite,
    the parallel one.  The name picks the cache file.
    """
    twin = pytypes.FunctionType(pyfunc.__code__, pyfunc.__globals__, pyfunc.__name__,
                                pyfunc.__defaults__, pyfunc.__closure__)
    twin.__qualname__ = pyfunc.__qualname__ + "__serial"
    twin.__module__ = pyfunc.__module__
    return twin


class Kernel:
    """A compiled kernel; calling it launches it under the threading-layer guard.

    A kernel that takes the register tile gets it here, first: callers pass
    only the arrays and numbers.  In a child forked from a process whose
    OpenMP pool had started, where a parallel launch would kill the process,
    it runs a serial build instead, compiled on first use (``_threads``, 5.).
    """

    __slots__ = ("_serial", "dispatcher", "name", "sig", "spec", "tile")

    def __init__(self, name: str, dispatcher, tile=None, spec=None, sig=None):
        self.name = name
        self.dispatcher = dispatcher
        self.tile = tile
        self.spec = spec
        self.sig = sig
        self._serial = None

    def __call__(self, *args) -> None:
        dispatcher = self.serial() if _threads.forked_from_openmp else self.dispatcher
        with _threads.launch_lock():
            if self.tile is None:
                dispatcher(*args)
            else:
                dispatcher(self.tile, *args)

    def serial(self):
        """The kernel compiled without ``parallel``: its prange loops run on this thread."""
        if self._serial is None:
            self._serial = _compile(_serial_twin(self.spec.pyfunc), self.sig,
                                    self.spec.disk_cache, parallel=False)
        return self._serial

    def __repr__(self) -> str:
        return f"<numbaconv kernel {self.name}>"


def get(kind: str, layout: str, dtype: str, isa: str | None = None) -> Kernel:
    """The compiled kernel for (kind, layout, dtype); compiled on first use.

    Kernels that take the register tile are compiled per ISA variant:
    ``isa`` (a plan's), or the variant in use (``machine.variant()``).
    """
    if KERNELS[kind, layout].takes_tile:
        return _get(kind, layout, dtype, isa or machine.variant())
    return _get(kind, layout, dtype, None)


@functools.cache
def _get(kind: str, layout: str, dtype: str, isa: str | None) -> Kernel:
    spec = KERNELS[kind, layout]
    sig = _signature(kind, layout, np.dtype(dtype), isa)
    tile = machine.register_tile(isa, dtype) if isa else None
    if tile is not None:
        # Numba's dispatcher types an argument with ``_numba_type_`` on its fast
        # path: 0.4 us a launch instead of 2.8 us through typeof's registry.
        object.__setattr__(tile, "_numba_type_", sig.args[0])
    return Kernel(f"{kind}_{layout.lower()}[{dtype}{', ' + isa if isa else ''}]",
                  _compile(spec.pyfunc, sig, spec.disk_cache), tile, spec, sig)


def kernel_cache_info():
    return _get.cache_info()


def cache_clear() -> None:
    _get.cache_clear()
