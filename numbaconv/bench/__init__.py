"""Benchmark sweeps: suites of layer shapes, peers to compare with, timing, plots.

``numbaconv bench`` (``cli.py``) parses the arguments and prints; this
package does the rest, one job per module:

- ``suites``: :class:`Layer`, the built-in suites and JSON ones (:func:`load_suite`);
- ``peers``: the plain-NumPy baseline and the other libraries, one
  :class:`Peer` record each in one registry, ``PEERS``;
- ``timing``: :func:`measure` (the timing rule) and :func:`sgemm_gflops`;
- ``host``: :func:`machine_info`, the header of every result;
- ``checks``: whether a peer's output agrees with numbaconv's;
- ``isolate``: a peer timed in a Python process of its own (:class:`PeerProcess`);
- ``sweep``: the rows of a run, one row timed (:func:`bench_one`), a whole
  run (:class:`Sweep`);
- ``plots``: the bar chart (:func:`plot`).

Timing rule: each implementation is timed in its own block (first call,
0.1 s of warm-up calls, then ``repeat`` timed calls), because thread pools left
spinning by one library slow the next; the median is the figure.  Even so,
a peer timed in this process shares it with Numba's OpenMP pool and
OpenBLAS's: ``PeerProcess`` times a peer in a Python process of its own
instead (``numbaconv bench --isolate``).

No module of this package imports Numba (``_threads``, ``conv``) at module
level, only inside the functions that time numbaconv: the isolated worker
loads the package without running ``numbaconv/__init__.py`` (see
``isolate._WORKER_BOOT``), so that no Numba thread pool exists in the
process where the peer is timed.  Module-level state that tests patch
(``isolate.PEER_TIMEOUT_S``, ``isolate._WORKER_BOOT``, ``sweep.bench_one``)
is read from its own module, not from this one.
"""

# The private names are re-exported (``as``) for benchmarks/ and tests/.
from .checks import _sample as _sample
from .checks import _sample_close as _sample_close
from .host import jit_cache_dir, machine_info
from .isolate import PEER_TIMEOUT_S, PeerProcess, time_peer_isolated
from .peers import (
    PEERS,
    Peer,
    PeerUnsupported,
    available_peers,
    choose_peers,
    numpy_conv2d,
)
from .peers import (
    _onnxruntime_peer as _onnxruntime_peer,
)
from .plots import plot
from .suites import SUITES, Layer, load_suite
from .suites import _rng_arrays as _rng_arrays
from .sweep import (
    FIXED_COLUMNS,
    Sweep,
    applicable,
    bench_one,
    configurations,
    network_pass,
    row_key,
    table_key,
)
from .timing import Timing, measure, sgemm_gflops

__all__ = [
    "FIXED_COLUMNS", "PEERS", "PEER_TIMEOUT_S", "SUITES", "Layer", "Peer", "PeerProcess",
    "PeerUnsupported", "Sweep", "Timing",
    "applicable", "available_peers", "bench_one", "choose_peers", "configurations",
    "jit_cache_dir", "load_suite", "machine_info", "measure", "network_pass", "numpy_conv2d",
    "plot", "row_key", "sgemm_gflops", "table_key", "time_peer_isolated",
]
