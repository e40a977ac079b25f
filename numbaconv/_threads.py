"""Threading-layer traps, handled in one place.

1. Spinning OpenMP threads.  After a ``prange`` loop, GNU OpenMP's workers
   spin (GOMP_SPINCOUNT, 300,000 by default) and an OpenBLAS GEMM that
   follows competes with them for the cores.  So, unless the user chose a
   policy, numbaconv starts Numba's thread pool on import with
   GOMP_SPINCOUNT=10000 in the environment, then restores the environment:
   libgomp reads it once, when loaded, so a library loaded later with its
   own OpenMP runtime (PyTorch bundles one) keeps its defaults.  Evidence:
   docs/design/decisions.md, "OpenMP spin count: GOMP_SPINCOUNT=10000".

2. NUMBACONV_NUM_THREADS=n sets both pools: Numba's through NUMBA_NUM_THREADS
   (read when Numba is imported, so that every Python thread gets n, not only
   the one that imported numbaconv) and BLAS's through threadpoolctl.

3. The workqueue layer (Numba's fallback when neither TBB nor OpenMP is
   available) aborts the process when two threads launch parallel kernels at
   once.  Under that layer every kernel launch takes ``launch_lock``.

4. Spinning OpenBLAS threads.  After every threaded GEMM, OpenBLAS's idle
   workers poll for ~0.1 s, sharing the cores with a Numba kernel that
   follows.  Small kernels run on the calling thread instead (``config``);
   before a large one, ``quiet_blas`` stops OpenBLAS's idle threads
   (``blas_thread_shutdown_``, which OpenBLAS itself uses around fork()), and
   the next threaded BLAS call starts them again.  NUMBACONV_BLAS_SPIN=keep
   turns it off.  Evidence: docs/design/decisions.md, "Stopping OpenBLAS's
   threads before Numba kernels".

5. fork().  GNU OpenMP cannot run in a child forked after its pool started:
   Numba's omp layer kills such a child at its first parallel launch
   ("Terminating: fork() called from a process already using GNU OpenMP").
   TBB, a dependency where PyPI has it, is the default layer and is
   fork-safe.  Where the layer is omp anyway, a forked child runs serial
   builds of the kernels (``forked_from_openmp``).  Evidence:
   docs/design/decisions.md, "Fork safety: TBB by default, serial kernels
   in OpenMP's children".
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

from ._openblas import openblas_shutdowns

SPINCOUNT = "10000"


def threading_layer() -> str | None:
    """Numba's threading layer, or None before the first parallel launch."""
    import numba

    try:
        return numba.threading_layer()
    except ValueError:
        return None


def _numba_libgomp_loaded() -> bool:
    """Is the system libgomp (the one Numba's OpenMP layer links) already loaded?"""
    try:
        with open("/proc/self/maps") as maps:
            return "/libgomp.so.1" in maps.read()
    except OSError:  # not Linux: nothing we can check
        return False


def _tame_openmp_spin() -> str:
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return "OpenMP wait policy set by the user"
    if _numba_libgomp_loaded():
        return "libgomp was loaded before numbaconv: default OpenMP spinning"
    os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
    try:
        from numba.np.ufunc import parallel

        parallel._launch_threads()  # picks the layer and loads its runtime now
    except Exception as err:  # pragma: no cover - a Numba without this hook
        return f"could not start Numba's threads early ({err}): default OpenMP spinning"
    finally:
        del os.environ["GOMP_SPINCOUNT"]
    layer = threading_layer()
    if layer != "omp":
        return f"no OpenMP in Numba's {layer} layer"
    return f"GOMP_SPINCOUNT={SPINCOUNT} for Numba's OpenMP threads"


def quiet_blas() -> bool:
    """Stop OpenBLAS's idle, spinning threads before a large parallel Numba kernel.

    Returns whether it did.

    They would share the cores with it for up to ~0.1 s after the last GEMM
    (section 4 above); the next threaded BLAS call starts them again
    (~0.1 ms).  Only while no other Python thread exists: one could be inside
    a BLAS call, and stopping OpenBLAS's threads under it could hang.
    """
    if _blas_shutdowns and threading.active_count() == 1:
        for shutdown in _blas_shutdowns:
            shutdown()
        return True
    return False


def _env_threads() -> int | None:
    from . import config

    n = config.num_threads
    if n is not None and "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_NUM_THREADS", str(n))
    return n


env_threads = _env_threads()
spin_policy = _tame_openmp_spin()
_blas_shutdowns, blas_spin = openblas_shutdowns()

_launch_lock = threading.Lock()

# Set in a child forked from a process whose OpenMP pool had started (5.).
forked_from_openmp = False


def _after_fork_in_child() -> None:
    global forked_from_openmp, _launch_lock
    if threading_layer() == "omp":
        forked_from_openmp = True
    # Another thread of the parent may have held it: the child has only the
    # forking thread, and would wait for ever.
    _launch_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


_unlocked = None  # a no-op context, once the layer is known to be thread-safe


def launch_lock():
    """A lock around parallel launches when the layer is not thread-safe.

    Before the first launch the layer is unknown, so the first launches are
    serialised too; afterwards OpenMP and TBB run unlocked.  A process's
    layer never changes once chosen, so a thread-safe one is remembered
    (every kernel launch asks).
    """
    global _unlocked
    if _unlocked is not None:
        return _unlocked
    layer = threading_layer()
    if layer in (None, "workqueue"):
        return _launch_lock
    _unlocked = contextlib.nullcontext()
    return _unlocked


# --------------------------------------------------------------------------
# Thread counts: Numba's and BLAS's, set together
# --------------------------------------------------------------------------
# The kernels never call BLAS from inside a prange loop: gathers (Numba
# threads) and GEMMs (BLAS threads) alternate, so the two pools never run at
# once and n threads means n busy cores, not n x n.
def _check_count(n) -> int:
    import numbers

    import numba

    from ._args import shown

    if not isinstance(n, numbers.Integral) or isinstance(n, bool):
        raise TypeError(f"n: expected an int number of threads, got {shown(n)}")
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"n: expected 1 <= n <= {numba.config.NUMBA_NUM_THREADS} (Numba's pool size), got {n}"
        )
    return int(n)


def get_num_threads() -> int:
    """Threads the kernels use in this thread (Numba's count)."""
    import numba

    return numba.get_num_threads()


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for both the Numba kernels and BLAS, from now on.

    Numba's count is per calling thread; BLAS's (through threadpoolctl) is
    process-wide.
    """
    import numba
    from threadpoolctl import threadpool_limits

    n = _check_count(n)
    numba.set_num_threads(n)
    threadpool_limits(n, user_api="blas")


@contextlib.contextmanager
def threads(n: int):
    """``with numbaconv.threads(n):`` run with n threads, then restore both counts.

    Examples
    --------
    >>> import numbaconv
    >>> before = numbaconv.get_num_threads()
    >>> with numbaconv.threads(1):
    ...     numbaconv.get_num_threads()
    1
    >>> numbaconv.get_num_threads() == before
    True
    """
    import numba
    from threadpoolctl import threadpool_limits

    n = _check_count(n)
    before = numba.get_num_threads()
    with threadpool_limits(n, user_api="blas"):
        numba.set_num_threads(n)
        try:
            yield n
        finally:
            numba.set_num_threads(before)


if env_threads is not None:
    set_num_threads(min(env_threads, __import__("numba").config.NUMBA_NUM_THREADS))
