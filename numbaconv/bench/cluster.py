"""``numbaconv bench --scheduler ADDRESS``: a sweep's rows timed on a Dask cluster.

Each configuration is one task.  A worker process times one configuration
at a time (a lock: two timings at once would share its cores), against the
sgemm rate measured on that worker, and the row comes back with the
worker's address and CPU, as soon as it is done.  Needs the ``dask`` extra
on the client and on every worker, with the same numbaconv.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

# Columns a row timed on a worker adds: where it ran.
CLUSTER_COLUMNS = ["worker", "cpu"]

_one_at_a_time = threading.Lock()  # per worker process
_worker_host: dict[str, tuple[float, str]] = {}  # sgemm and CPU, once per worker process


class WorkerFailed(RuntimeError):
    """A row failed on a worker (its numbaconv refused the configuration, or ran out of memory)."""


def connect(address: str, timeout: float = 10):
    """A ``distributed.Client`` of the scheduler at ``address``, with a worker.

    ValueError if no scheduler answers, or none of its workers shows up
    within ``timeout`` seconds.
    """
    try:
        import distributed
    except ImportError:
        raise ValueError('--scheduler needs Dask\'s distributed: pip install "numbaconv[dask]"'
                         ) from None
    try:
        client = distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        raise ValueError(f"--scheduler: cannot reach a Dask scheduler at {address!r} "
                         f"({type(err).__name__}: {err})") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as err:
        client.close()
        raise ValueError(f"--scheduler: the Dask scheduler at {address!r} has no workers "
                         f"(none joined within {timeout:g} s)") from err
    return client


def time_on_worker(cfg: dict, peers: list[str], repeat: int) -> dict:
    """One row, timed on the worker that runs this task (``bench_one`` plus where)."""
    from .. import machine
    from .host import machine_info
    from .sweep import bench_one
    from .timing import sgemm_gflops

    try:
        from distributed import get_worker

        where = get_worker().address
    except (ImportError, ValueError):  # not on a worker (a test's local scheduler)
        where = "local"
    with _one_at_a_time:
        if where not in _worker_host:
            info = machine_info()
            _worker_host[where] = (sgemm_gflops(), f"{info['cpu']}, {info['cores']} cores, "
                                                   f"{machine.variant()} kernels")
        sgemm, cpu = _worker_host[where]
        row = bench_one(cfg, peers, repeat, sgemm)
    return row | {"worker": where, "cpu": cpu}


def run(sweep, client, on_row: Callable[[dict], None] | None, progress) -> None:
    """Time ``sweep.configs`` on the cluster; rows stream to ``on_row`` as they finish.

    ``sweep.rows`` ends in the sweep's order.  Interrupted, the rows so far
    are kept and the remaining tasks cancelled.
    """
    import distributed

    futures = [client.submit(time_on_worker, cfg, sweep.peers, sweep.repeat, pure=False)
               for cfg in sweep.configs]
    order = {f.key: i for i, f in enumerate(futures)}
    done: list[tuple[int, dict]] = []
    try:
        for future in distributed.as_completed(futures):
            try:
                row = future.result()
            except Exception as err:  # raised on the worker: say which row
                cfg = sweep.configs[order[future.key]]
                raise WorkerFailed(
                    f"--scheduler: row {cfg['layer'].name} N={cfg['batch']} {cfg['layout']} "
                    f"{cfg['dtype']} {cfg['threads']} thr failed on a worker: "
                    f"{type(err).__name__}: {err}") from None
            done.append((order[future.key], row))
            progress.show(len(done), f"{row['name']} N={row['batch']} on {row['worker']}")
            if on_row is not None:
                on_row(row)
    finally:
        client.cancel([f for f in futures if not f.done()])
        sweep.rows.extend(row for _, row in sorted(done, key=lambda pair: pair[0]))
