"""The sweep: its rows (configurations), one row timed (``bench_one``), and a whole run.

A row is one layer at one batch size, layout, dtype and thread count; a
table is the rows of one (batch, layout, dtype, threads), layers innermost.
:class:`Sweep` is what ``numbaconv bench`` runs: it chooses the rows and
the peers from the arguments, then times table after table (with
``--isolate``, each table's rows in the peers' processes first, then here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Iterable

import numpy as np

from . import isolate
from .checks import _close, _sample_close
from .host import machine_info
from .peers import PEERS, PeerUnsupported, _error_text, _stderr, choose_peers
from .suites import Layer, _rng_arrays
from .timing import Timing, measure, sgemm_gflops

# The columns of every row (``bench_one``), before two per peer: ``{peer}_ms, vs_{peer}``.
FIXED_COLUMNS = ["name", "shape", "batch", "layout", "dtype", "threads", "requested_algorithm",
                 "algorithm", "gflop", "first_call_ms", "median_ms", "best_ms", "gflops",
                 "pct_sgemm", "pct_own_gemm", "im2col_pct", "check"]


def configurations(layers, batches, layouts, dtypes, threads, algorithm, prepack=False):
    """Every row of a sweep, layers innermost (so a plot panel fills up first).

    ``prepack``: numbaconv gets each weight as a ``pack_weight`` result.

    Examples
    --------
    >>> from numbaconv.bench import configurations, load_suite
    >>> rows = list(configurations(load_suite("vgg16"), [1, 8], ["NCHW", "NHWC"], ["float32"],
    ...                            [2], "auto"))
    >>> len(rows), rows[0]["layer"].name, rows[-1]["batch"], rows[-1]["layout"]
    (36, 'vgg16.01', 8, 'NHWC')
    """
    for t in threads:
        for dtype in dtypes:
            for layout in layouts:
                for n in batches:
                    for layer in layers:
                        yield dict(layer=layer, batch=n, layout=layout, dtype=dtype, threads=t,
                                   algorithm=algorithm, prepack=prepack)


def row_key(row: dict) -> tuple:
    """What identifies a row for ``--resume``: (name, batch, layout, dtype, threads, algorithm).

    Examples
    --------
    >>> from numbaconv.bench import row_key
    >>> row_key({"name": "vgg16.01", "batch": "8", "layout": "NHWC", "dtype": "float32",
    ...          "threads": "2", "requested_algorithm": "auto"})
    ('vgg16.01', 8, 'NHWC', 'float32', 2, 'auto')
    """
    return (row["name"], int(row["batch"]), row["layout"], row["dtype"], int(row["threads"]),
            row["requested_algorithm"])


def _parts_alone(plan, x: np.ndarray, repeat: int) -> tuple[float | None, float | None]:
    """Seconds of the plan's GEMMs alone and of its gathers alone (medians).

    The GEMMs run on random operands of the plan's GEMM shape, as many calls
    as the plan makes, each into a preallocated output: what BLAS reaches on
    this layer's own GEMM shape with nothing else in between.  The gathers
    fill the plan's column buffer chunk by chunk, as conv2d does.
    """
    from .. import _execute
    from ..algorithms._gemm import chunks
    from ..algorithms.im2col_gemm import chunk_columns, cols_shape

    if not plan.gemm_calls:
        return None, None
    rng = np.random.default_rng(0)
    a = rng.standard_normal((plan.gemm_m, plan.gemm_k)).astype(x.dtype)
    b = rng.standard_normal((plan.gemm_k, plan.gemm_n)).astype(x.dtype)
    c = np.empty((plan.gemm_m, plan.gemm_n), x.dtype)

    def gemms():
        for _ in range(plan.gemm_calls):
            np.matmul(a, b, out=c)

    gemm = measure(gemms, repeat).median
    if plan.algorithm != "im2col_gemm":
        return gemm, None
    xc = np.ascontiguousarray(x)
    buf = np.empty(math.prod(cols_shape(plan, plan.batch_chunk, plan.row_chunk)), x.dtype)

    def gathers():
        for n0, nb, p0, pb in chunks(plan):
            cols, _ = chunk_columns(plan, buf, nb, pb)
            _execute.gather(plan, xc, cols, n0, p0, nb, row_major=plan.gemm_batched)

    return gemm, measure(gathers, repeat).median


def bench_one(cfg: dict, compare: Iterable[str], repeat: int, sgemm: float,
              isolated: dict[str, dict] | None = None) -> dict:
    """Time one configuration with numbaconv and every peer in ``compare``.

    Returns the row: its identity, the plan's algorithm, ``gflop`` (the work
    of one call), numbaconv's first-call, median and best times in ms, its
    GFLOP/s and % of ``sgemm``; ``pct_own_gemm``, the time of the plan's
    GEMMs alone as a percentage of numbaconv's (the rate reached relative to
    what BLAS gets on this layer's own GEMM shape), and ``im2col_pct``, the
    share of the time its gathers take alone (None where there are none);
    then ``{peer}_ms`` (median) and ``vs_{peer}``
    (peer time / numbaconv time: above 1, numbaconv is faster) per peer, or
    None where the peer cannot run the problem.  ``check`` is ``"ok"`` or
    names the peer whose result differs from numbaconv's, or that failed.

    With ``isolated`` (``numbaconv bench --isolate``), the peers are not run
    here: ``isolated[peer]`` is :meth:`PeerProcess.time`'s answer for this
    configuration, timed in the peer's own process, and the
    result check compares numbaconv's output with the sample it carries.

    Examples
    --------
    >>> from numbaconv.bench import Layer, bench_one
    >>> cfg = dict(layer=Layer("tiny", 3, 8, 8, 4, 3, padding=1), batch=2, layout="NHWC",
    ...            dtype="float64", threads=1, algorithm="auto")
    >>> row = bench_one(cfg, ["numpy"], repeat=1, sgemm=100.0)
    >>> row["algorithm"], row["check"], row["gflop"] == 2 * 2 * 8 * 8 * 4 * 3 * 9 / 1e9
    ('im2col_gemm', 'ok', True)
    """
    from .. import _threads
    from ..conv import explain
    from ..packed import pack_weight

    layer, n, layout, dtype = cfg["layer"], cfg["batch"], cfg["layout"], cfg["dtype"]
    x, w = _rng_arrays(layer, n, layout, dtype)
    kw = layer.conv_kwargs()
    with _threads.threads(cfg["threads"]):
        # Packed outside the timing, as a peer's session set-up is.
        ws = (pack_weight(w, layer.groups, layout=layout)
              if cfg.get("prepack") and layer.rank == 2 else w)
        plan = explain(x, ws, layout=layout, algorithm=cfg["algorithm"], **kw)
        ours = measure(_ours(layer, x, ws, layout, cfg["algorithm"]), repeat)
        flops = plan.flops if layer.rank == 2 else plan.geometry.flops
        row = {
            "name": layer.name, "shape": layer.describe(n), "batch": n, "layout": layout,
            "dtype": np.dtype(dtype).name, "threads": cfg["threads"],
            "requested_algorithm": cfg["algorithm"], "algorithm": plan.algorithm,
            "gflop": flops / 1e9,
            "first_call_ms": ours.first * 1e3, "median_ms": ours.median * 1e3,
            "best_ms": ours.best * 1e3, "gflops": flops / ours.median / 1e9,
            "pct_sgemm": 100 * flops / ours.median / 1e9 / sgemm, "check": "ok",
        }
        gemm, gathers = _parts_alone(plan, x, repeat) if layer.rank == 2 else (None, None)
        row["pct_own_gemm"] = None if gemm is None else 100 * gemm / ours.median
        row["im2col_pct"] = None if gathers is None else 100 * gathers / ours.median
        for peer in compare:
            row[f"{peer}_ms"] = row[f"vs_{peer}"] = None
            if isolated is not None:
                got = isolated[peer]
                if "unsupported" in got:
                    continue
                if "error" in got:
                    row["check"] = f"ERROR in {peer}: {got['error']}".splitlines()[0]
                    continue
                median, same = got["median_ms"] / 1e3, _sample_close(ours.result, got, dtype)
            else:
                try:
                    t = measure(PEERS[peer](layer, x, w, layout), repeat)
                except PeerUnsupported:
                    continue
                except Exception as err:  # a peer's failure is flagged, and the sweep goes on
                    row["check"] = f"ERROR in {peer}: {_error_text(err)}".splitlines()[0]
                    continue
                median, same = t.median, _close(ours.result, t.result, dtype)
            row[f"{peer}_ms"] = median * 1e3
            row[f"vs_{peer}"] = median / ours.median  # > 1: numbaconv is faster
            if not same and row["check"] == "ok":
                row["check"] = f"MISMATCH vs {peer}"
    return row


def _ours(layer, x, w, layout: str, algorithm: str) -> Callable[[], np.ndarray]:
    """numbaconv's call for one row: conv2d_with in 2-d, conv1d/conv3d otherwise."""
    from ..conv import conv2d_with
    from ..convnd import conv_nd

    kw = layer.conv_kwargs()
    if layer.rank == 2:
        return functools.partial(conv2d_with, x, w, layout=layout, algorithm=algorithm, **kw)
    return functools.partial(conv_nd, layer.rank, x, w, layout=layout, **kw)


def network_pass(configs: list[dict], repeat: int) -> Timing:
    """numbaconv on a table's layers back to back, as a network's forward pass runs them.

    A row repeats one layer; a network alternates them, so each layer
    starts after a different kernel, and where the dispatcher mixes Numba's
    kernels with OpenBLAS's GEMMs, the thread pools take turns: stopping
    OpenBLAS's spinning threads before a Numba kernel and starting them on
    the next GEMM cost ResNet-50 at batch 1 a quarter of its time before
    ``pointwise_gemm`` (docs/performance.md).  Same inputs as
    :func:`bench_one`'s (weights packed beforehand with ``prepack``), so each
    layer's input is not the previous layer's output and starts out of the
    caches; the Timing of whole passes (``measure``).  For ONNX Runtime as one session,
    see ``benchmarks/network_sequence.py``.

    Examples
    --------
    >>> from numbaconv.bench import Layer, network_pass
    >>> cfgs = [dict(layer=Layer(f"tiny{i}", 3, 8, 8, 4, k, padding=k // 2), batch=1,
    ...              layout="NCHW", dtype="float32", threads=1, algorithm="auto")
    ...         for i, k in enumerate((1, 3))]
    >>> [y.shape for y in network_pass(cfgs, repeat=1).result]
    [(1, 4, 8, 8), (1, 4, 8, 8)]
    """
    from .. import _threads
    from ..packed import pack_weight

    calls = []
    with _threads.threads(configs[0]["threads"]):
        for cfg in configs:
            layer, layout = cfg["layer"], cfg["layout"]
            x, w = _rng_arrays(layer, cfg["batch"], layout, cfg["dtype"])
            ws = (pack_weight(w, layer.groups, layout=layout)
              if cfg.get("prepack") and layer.rank == 2 else w)
            calls.append(_ours(layer, x, ws, layout, cfg["algorithm"]))
        return measure(lambda: [call() for call in calls], repeat)



def table_key(row: dict) -> tuple:
    """What one table covers: batch, layout, dtype and thread count (of a row or a config)."""
    return row["batch"], row["layout"], row["dtype"], row["threads"]


def applicable(configs: list[dict], algorithm: str,
               note: Callable[[str], None] = _stderr) -> list[dict]:
    """The configurations a forced algorithm can run; a note names the layers left out.

    Raises
    ------
    ValueError
        The algorithm applies to none of them; the message starts with ``--algorithm``.
    """
    from ..conv import explain

    if algorithm == "auto":
        return configs
    keep, skipped, reason = [], [], ""
    for cfg in configs:
        layer = cfg["layer"]
        if layer.rank != 2:  # conv1d and conv3d take no algorithm: theirs is the lowering's
            skipped.append(layer.name)
            reason = f"{layer.name} is a {layer.rank}-d layer"
            continue
        try:
            explain(*layer.shapes(cfg["batch"], cfg["layout"]), layout=cfg["layout"],
                    dtype=cfg["dtype"], algorithm=algorithm, **layer.conv_kwargs())
            keep.append(cfg)
        except ValueError as err:
            skipped.append(layer.name)
            reason = str(err)
    if not keep:
        raise ValueError(f"--algorithm {algorithm}: applies to no layer of the suite ({reason})")
    if skipped:
        names = list(dict.fromkeys(skipped))
        note(f"note: --algorithm {algorithm} does not apply to {len(names)} layer(s) "
             f"({', '.join(names)}); skipping them")
    return keep


class _NoProgress:
    def show(self, done: int, label: str) -> None:
        pass

    def clear(self) -> None:
        pass


@dataclasses.dataclass
class Sweep:
    """One ``numbaconv bench`` run: the rows and peers it times, then what it timed.

    Made by :meth:`plan`; :meth:`resume` drops the rows an earlier run
    already has; :meth:`measure_machine` writes the header and measures the
    sgemm rate the rows are set against; :meth:`run` times the rows into
    ``rows`` (and, with ``network``, each table's pass into ``networks``).

    Examples
    --------
    >>> from numbaconv.bench import Layer, Sweep
    >>> sweep = Sweep.plan([Layer("tiny", 3, 8, 8, 4, 3, padding=1)], batches=[1, 2],
    ...                    layouts=["NCHW"], dtypes=["float32"], threads=[1], compare=["numpy"],
    ...                    repeat=1)
    >>> sweep.sgemm = 100.0  # else measure_machine() or run() measures it
    >>> sweep.run()
    >>> [(r["batch"], r["check"]) for r in sweep.rows], sweep.columns[-2:]
    ([(1, 'ok'), (2, 'ok')], ['numpy_ms', 'vs_numpy'])
    """

    configs: list[dict]  # the rows to time, in order
    peers: list[str]
    layers: list[Layer]  # the suite's layers that the rows cover
    repeat: int = 5
    isolate: bool = False  # each peer in a process of its own
    network: bool = False  # also each table's layers back to back
    prepack: bool = False  # numbaconv's weights packed beforehand (the configs say so too)
    # Each table's configurations, the resumed ones too: what --network times.
    tables: dict[tuple, list[dict]] = dataclasses.field(default_factory=dict)
    earlier: list[dict] = dataclasses.field(default_factory=list)  # an earlier run's rows
    done: set[tuple] = dataclasses.field(default_factory=set)  # their row_keys
    client: object = None  # a distributed.Client: the rows are timed on its cluster
    sgemm: float | None = None  # BLAS's float32 GEMM rate, GFLOP/s
    rows: list[dict] = dataclasses.field(default_factory=list)  # this run's rows
    networks: list[dict] = dataclasses.field(default_factory=list)

    @classmethod
    def plan(cls, layers: list[Layer], *, batches, layouts, dtypes, threads,
             algorithm: str = "auto", prepack: bool = False, compare: list[str] | None = None,
             repeat: int = 5, isolate: bool = False, network: bool = False,
             note: Callable[[str], None] = _stderr) -> Sweep:
        """The peers (:func:`choose_peers`) and the rows (:func:`configurations`) of a run.

        A forced ``algorithm`` keeps only the rows it applies to (:func:`applicable`).
        Notes (a named peer not installed, layers skipped) go to ``note``.

        Raises
        ------
        ValueError
            An unknown peer, or an algorithm that applies to no layer; the
            message starts with the option's name.
        """
        peers = choose_peers(compare, note)
        configs = applicable(list(configurations(layers, batches, layouts, dtypes, threads,
                                                 algorithm, prepack)), algorithm, note)
        tables: dict[tuple, list[dict]] = {}
        for cfg in configs:
            tables.setdefault(table_key(cfg), []).append(cfg)
        return cls(configs, peers, list(dict.fromkeys(c["layer"] for c in configs)),
                   repeat=repeat, isolate=isolate, network=network, prepack=prepack,
                   tables=tables)

    @property
    def columns(self) -> list[str]:
        """The columns of its rows: ``FIXED_COLUMNS``, two per peer, and where on a cluster."""
        from .cluster import CLUSTER_COLUMNS

        return (FIXED_COLUMNS + [c for p in self.peers for c in (f"{p}_ms", f"vs_{p}")]
                + (CLUSTER_COLUMNS if self.client is not None else []))

    def resume(self, earlier: list[dict]) -> None:
        """Keep an earlier run's rows (``--resume``) and drop their configurations."""
        self.earlier = list(earlier)
        self.done = {row_key(r) for r in earlier}
        self.configs = [c for c in self.configs
                        if (c["layer"].name, c["batch"], c["layout"], c["dtype"], c["threads"],
                            c["algorithm"]) not in self.done]

    def measure_machine(self, command: str) -> dict:
        """:func:`machine_info`, with the sgemm rate (measured now), the switches, ``command``."""
        machine = machine_info()
        self.sgemm = sgemm_gflops()
        machine["sgemm_gflops"] = round(self.sgemm, 1)
        machine["isolate"] = self.isolate  # peers each timed in a process of their own
        machine["prepack"] = self.prepack  # numbaconv's weights packed before timing
        machine["on_cluster"] = self.client is not None  # rows timed on Dask workers
        machine["command"] = command
        return machine

    def run(self, on_row: Callable[[dict], None] | None = None, progress=None) -> None:
        """Time every row, table by table, into ``rows`` (and ``networks``).

        ``on_row(row)`` is called after each row; ``progress`` (with
        ``show(done, label)`` and ``clear()``) is told what is being timed.
        Interrupted (KeyboardInterrupt), the rows timed so far stay in
        ``rows`` and the peers' processes are stopped.
        """
        progress = progress or _NoProgress()
        if self.client is not None:  # each row on a worker, against that worker's sgemm
            from . import cluster

            cluster.run(self, self.client, on_row, progress)
            return
        if self.sgemm is None:
            self.sgemm = sgemm_gflops()
        with contextlib.ExitStack() as workers:
            # One process per peer for the whole sweep.  Group by group (one batch,
            # layout, dtype and thread count: a table's total), the peers time the
            # group's rows, then this process does: the machine's drift between the
            # two is seconds, not the whole sweep.  Within a group each library
            # runs its rows back to back, as in a network: PyTorch timed with a
            # pause before every row took 2x its time (its threads asleep).
            processes = {peer: workers.enter_context(isolate.PeerProcess(peer))
                         for peer in (self.peers if self.isolate and self.configs else ())}
            for _, group in itertools.groupby(self.configs, key=table_key):
                group = list(group)
                if processes:
                    progress.show(len(self.rows),
                                  f"peers: N={group[0]['batch']} {group[0]['layout']}")
                for cfg, theirs in zip(group, isolate.isolated_times(group, processes,
                                                                     self.repeat), strict=True):
                    progress.show(len(self.rows),
                                  f"{cfg['layer'].name} N={cfg['batch']} {cfg['layout']}")
                    row = bench_one(cfg, self.peers, self.repeat, self.sgemm, isolated=theirs)
                    self.rows.append(row)
                    if on_row is not None:
                        on_row(row)
                if self.network:
                    self._network(self.tables.pop(table_key(group[0])), progress)
            for key in list(self.tables) if self.network else ():  # tables resumed whole
                self._network(self.tables.pop(key), progress)

    def _network(self, configs: list[dict], progress) -> None:
        """``--network``: one table's layers back to back (:func:`network_pass`).

        ``configs``: all the table's layers, resumed ones too; the pass is set
        against the sum of the table's rows so far, earlier runs' included.
        """
        first = configs[0]
        progress.show(len(self.rows), f"network N={first['batch']} {first['layout']}")
        t = network_pass(configs, self.repeat)
        progress.clear()
        key = table_key(first)
        self.networks.append({
            "batch": first["batch"], "layout": first["layout"],
            "dtype": first["dtype"], "threads": first["threads"],
            "requested_algorithm": first["algorithm"], "prepack": bool(first.get("prepack")),
            "layers": len(configs), "median_ms": t.median * 1e3, "best_ms": t.best * 1e3,
            "rows_ms": sum(r["median_ms"] for r in self.earlier + self.rows
                           if table_key(r) == key)})
