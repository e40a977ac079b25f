"""OpenBLAS's idle threads, found through threadpoolctl (see ``_threads``, trap 4).

No Numba here: the peer processes of ``numbaconv bench --isolate`` use it
too, to stop a NumPy peer's spinning BLAS threads before numbaconv is timed.
"""

from __future__ import annotations

import os


def openblas_shutdowns() -> tuple[list, str]:
    """``blas_thread_shutdown_`` of every loaded pthreads OpenBLAS, and a status line."""
    if os.environ.get("NUMBACONV_BLAS_SPIN", "").strip().lower() == "keep":
        return [], "OpenBLAS threads left alone (NUMBACONV_BLAS_SPIN=keep)"
    import ctypes

    from threadpoolctl import ThreadpoolController

    found, names = [], []
    for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers:
        if getattr(lib, "threading_layer", "pthreads") != "pthreads":
            continue  # an OpenMP build has no spinning server of its own
        try:
            found.append(ctypes.CDLL(lib.filepath).blas_thread_shutdown_)
        except (OSError, AttributeError):
            continue
        names.append(os.path.basename(lib.filepath))
    if not found:
        return [], "no pthreads OpenBLAS with blas_thread_shutdown_: its threads keep spinning"
    return found, ("idle OpenBLAS threads are stopped before large Numba kernels "
                   f"({', '.join(names)})")
