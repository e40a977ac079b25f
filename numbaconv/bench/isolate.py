"""Peers in processes of their own (``numbaconv bench --isolate``): the worker protocol.

In the process that runs numbaconv, Numba's OpenMP pool and OpenBLAS's are
alive, and a peer with thread pools of its own runs below its standalone
speed there.  :class:`PeerProcess` times a peer in a Python process of its
own instead, one row per request, over JSON lines on stdin and stdout.

The worker loads ``numbaconv.bench`` without running
``numbaconv/__init__.py`` (see ``_WORKER_BOOT``), so that no Numba thread
pool exists in the process where the peer is timed: no module of this
package imports Numba at module level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import subprocess
import sys
import tempfile

import numpy as np

from .checks import _sample
from .peers import PEERS, PeerUnsupported, _error_text
from .suites import Layer, _rng_arrays
from .timing import measure

# Run by ``python -c``.  A bare ``numbaconv`` package object whose __path__ is
# the package directory (``_PACKAGE_DIR``, the first argument) lets
# ``numbaconv.bench`` (and ``numbaconv._args``) import without
# ``numbaconv/__init__.py``, which starts Numba's OpenMP pool.
_WORKER_BOOT = """\
import sys, types
package = types.ModuleType("numbaconv")
package.__path__ = [sys.argv[1]]
sys.modules["numbaconv"] = package
from numbaconv.bench.isolate import _peer_worker
_peer_worker()
"""
_PACKAGE_DIR = os.path.dirname(os.path.dirname(__file__))  # numbaconv/, not numbaconv/bench/


def _peer_worker() -> None:
    """The isolated process: time one peer (``sys.argv[2]``), one row per request.

    First imports the peer's modules and says ``{"ready": true}``; then reads
    one JSON line per row from stdin, ``{"repeat", "config": {layer, batch,
    layout, dtype, threads}}``, and answers each with one JSON line:
    ``{"numba_imported": bool, ...}`` plus the result (see
    :class:`PeerProcess`), until stdin closes.  The inputs are
    ``_rng_arrays``'s, as in the parent; BLAS threads (for a peer with
    ``blas_threads``: the ``numpy`` one) are limited to the row's count as
    ``numbaconv.threads`` does there; the other peers set their own.  Before
    answering, the peer's callable (an ONNX Runtime session and its thread
    pool, say) and the row's arrays are dropped and OpenBLAS's idle threads
    (a NumPy peer's, spinning for ~0.1 s after each GEMM) are stopped, so
    that nothing of the peer's competes with numbaconv, which the parent
    times next.
    """
    import gc
    import importlib

    from threadpoolctl import threadpool_limits

    from .._openblas import openblas_shutdowns

    # The answers get a descriptor of their own; file descriptor 1 becomes
    # stderr, so whatever the peer prints, from Python or from native code,
    # cannot end up in an answer.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        answer.write(json.dumps(obj) + "\n")
        answer.flush()

    peer = PEERS[sys.argv[2]]
    for module in peer.modules:
        importlib.import_module(module)
    # Looked up once, with the peer's libraries loaded: a scan of every
    # loaded library per row would be work between the peer and numbaconv.
    shutdowns = openblas_shutdowns()[0]
    send({"ready": True})
    for line in sys.stdin:
        job = json.loads(line)
        cfg = job["config"]
        layer, layout, threads = Layer(**cfg["layer"]), cfg["layout"], cfg["threads"]
        x, w = _rng_arrays(layer, cfg["batch"], layout, cfg["dtype"])
        # Only the NumPy baseline runs on BLAS's threads; around PyTorch the limit
        # (MKL's threads set and restored each row) made it 2-3x slower here.
        limit = (threadpool_limits(threads, user_api="blas") if peer.blas_threads
                 else contextlib.nullcontext())
        try:
            with limit:
                fn = peer(layer, x, w, layout, threads=threads)
                t = measure(fn, job["repeat"])
            result = {"first_ms": t.first * 1e3, "median_ms": t.median * 1e3,
                      "best_ms": t.best * 1e3, **_sample(t.result)}
        except PeerUnsupported as err:
            result = {"unsupported": str(err)}
        except Exception as err:  # reported for this row; the others go on
            result = {"error": _error_text(err)}
        fn = t = x = w = None
        gc.collect()
        for shutdown in shutdowns:  # this process has no other thread in BLAS
            shutdown()
        send({"numba_imported": "numba" in sys.modules, **result})


# A peer's process that has not answered in this long is stopped, and its
# rows from then on are errors: a hung peer must not hang the sweep.  Long
# enough for the slowest row (NumPy's baseline on a large layer at a large
# batch, 1 + warm-up + --repeat calls) and for importing a peer.
PEER_TIMEOUT_S = 600.0


class PeerProcess:
    """One peer, timed row by row in a Python process of its own (``bench --isolate``).

    In the process that runs numbaconv, Numba's OpenMP pool and OpenBLAS's
    are alive, and a peer with pools of its own runs below its standalone
    speed there (PyTorch NCHW, ResNet-50 at batch 1: about twice its
    standalone time); the other way round, ONNX Runtime's spinning workers
    slowed numbaconv's next calls twofold.  This starts ``sys.executable``
    once for the whole sweep and waits until it has imported the peer, so
    start-up and the import are paid once, before any timing; that process
    never imports Numba or starts numbaconv's pools.  It times one row at a
    time, when asked, so that the sweep can time a table's rows with the
    peers and then with numbaconv, seconds apart: the drift of a shared
    machine then hits both sides of a ratio alike.

    :meth:`time` returns ``first_ms``, ``median_ms``, ``best_ms`` and a
    sample of the output (``shape``, ``absmax``, ``sample``) for
    :func:`bench_one` to check; or ``{"unsupported": reason}`` (the row
    shows n/a); or ``{"error": message}``, for that row or, once the process
    has failed (crashed, could not import the peer, answered nonsense, gave
    no answer within ``timeout`` seconds (default ``PEER_TIMEOUT_S``) and was
    stopped, ...), for every row from then on.

    Examples
    --------
    >>> from numbaconv.bench import Layer, PeerProcess
    >>> cfg = dict(layer=Layer("tiny", 3, 8, 8, 4, 3, padding=1), batch=1, layout="NCHW",
    ...            dtype="float32", threads=1, algorithm="auto")
    >>> with PeerProcess("numpy") as numpy_peer:
    ...     numpy_peer.time(cfg, repeat=1)["shape"]
    [1, 4, 8, 8]
    """

    def __init__(self, peer: str, timeout: float | None = None):
        self.peer = peer
        self.timeout = PEER_TIMEOUT_S if timeout is None else timeout
        self._failed = None
        self._proc = None
        self._stderr = tempfile.TemporaryFile()  # a pipe left unread could fill up
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_BOOT, _PACKAGE_DIR, peer],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        except OSError as err:
            self._failed = {"error": f"isolated process failed to start: {err}"}
            return
        self._answer("ready")

    def time(self, cfg: dict, repeat: int) -> dict:
        if self._failed is None:
            job = {"repeat": repeat,
                   "config": dict(layer=dataclasses.asdict(cfg["layer"]), batch=cfg["batch"],
                                  layout=str(cfg["layout"]), dtype=np.dtype(cfg["dtype"]).name,
                                  threads=cfg["threads"])}
            try:
                self._proc.stdin.write(json.dumps(job) + "\n")
                self._proc.stdin.flush()
            except OSError:
                self._fail("")
            result = self._answer("numba_imported")
            if result is not None and result.pop("numba_imported"):  # a bug here
                self._fail("", "the isolated process imported numba")
            elif result is not None:
                return result
        return dict(self._failed)

    def _answer(self, key: str) -> dict | None:
        """The next answer, which must be a JSON object with ``key``; else fail.

        Waited for with ``select``, not a reader thread: a second Python
        thread in this process would keep ``quiet_blas`` from stopping
        OpenBLAS's spinning threads before numbaconv's kernels.  The worker
        writes one line per request, so nothing is left buffered between
        answers.  (Windows cannot select on a pipe: there it waits.)
        """
        if self._failed is not None:
            return None
        ready = os.name == "nt" or select.select([self._proc.stdout], [], [], self.timeout)[0]
        if not ready:
            self._fail("", f"isolated process gave no answer in {self.timeout:g} s; stopped")
            return None
        line = self._proc.stdout.readline()
        try:
            answer = json.loads(line)
            if isinstance(answer, dict) and key in answer:
                return answer
        except ValueError:
            pass
        self._fail(line)
        return None

    def _fail(self, line: str, why: str | None = None) -> None:
        """Stop the process (it has died, or cannot be trusted) and say why, once."""
        if self._failed is not None:
            return
        if line or why:  # it is alive but answered something else: no point in waiting
            self._proc.kill()
            self._proc.wait()
            why = why or f"isolated process sent {line.strip()[:200]!r}"
        else:  # end of its output: it is exiting, or has
            try:
                code = self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                code = self._proc.wait()
            how = f"status {code}" if code >= 0 else f"signal {-code}"
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace")
            why = f"isolated process failed ({how}): " + \
                (text.strip().splitlines() or ["no message"])[-1]
        self._failed = {"error": why}

    def close(self) -> None:
        """Close its stdin and let it exit; an idle worker does so at once."""
        try:
            if self._proc is not None:
                try:
                    self._proc.stdin.close()
                    self._proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                finally:  # still busy (an interrupted row) or stuck
                    if self._proc.poll() is None:
                        self._proc.kill()
                        self._proc.wait()
                    self._proc.stdout.close()
        finally:
            self._stderr.close()

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def time_peer_isolated(peer: str, configs: list[dict], repeat: int) -> list[dict]:
    """Time ``peer`` on every configuration, in order, in one :class:`PeerProcess`.

    Examples
    --------
    >>> from numbaconv.bench import Layer, time_peer_isolated
    >>> cfg = dict(layer=Layer("tiny", 3, 8, 8, 4, 3, padding=1), batch=1, layout="NCHW",
    ...            dtype="float32", threads=1, algorithm="auto")
    >>> [r["shape"] for r in time_peer_isolated("numpy", [cfg], repeat=1)]
    [[1, 4, 8, 8]]
    """
    with PeerProcess(peer) as process:
        return [process.time(cfg, repeat) for cfg in configs]


def isolated_times(group: list[dict], processes: dict[str, PeerProcess],
                   repeat: int) -> list[dict | None]:
    """Each row's times from every peer's process, the group's rows back to back.

    None per row when the peers run in this process (``processes`` empty).
    """
    from .. import _threads

    if not processes:
        return [None] * len(group)
    # This process's OpenBLAS threads spin for ~0.1 s after its last GEMM:
    # stopped, so that they do not share the peers' cores.
    _threads.quiet_blas()
    timed = {p: [process.time(cfg, repeat) for cfg in group] for p, process in processes.items()}
    return [{p: times[j] for p, times in timed.items()} for j in range(len(group))]
