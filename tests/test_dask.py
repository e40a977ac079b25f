"""numbaconv.dask on a real cluster: two worker processes, started and closed here.

Every result is checked against the in-memory numbaconv.conv2d of the same
data (and that, elsewhere, against the float64 reference).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive import to_hwio, to_nhwc
from strategies import DTYPES, LAYOUTS, arrays_for, conv_problems

import numbaconv

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
ndask = pytest.importorskip("numbaconv.dask")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=50)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@st.composite
def chunkings(draw, size):
    """Chunk sizes along an axis of ``size``: ragged, some smaller than any halo, some empty."""
    if size == 0:
        return (0,)
    sizes, left = [], size
    while left:
        if len(sizes) < 2 and draw(st.integers(0, 5)) == 0:
            sizes.append(0)  # dask allows them; its pad(mode="edge") does not
        sizes.append(draw(st.integers(1, left)))
        left -= sizes[-1]
    return tuple(sizes)


def _in_layout(x, w, layout):
    return (x, w) if layout == "NCHW" else (to_nhwc(x), to_hwio(w))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prob=conv_problems(max_size=12), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), with_bias=st.booleans(), seed=st.integers(0, 2**16),
       data=st.data())
def test_any_chunking_matches_the_in_memory_call(client, prob, dtype, layout, with_bias,
                                                 seed, data):
    x, w, b = arrays_for(prob, dtype, with_bias, seed)
    x, w = _in_layout(x, w, layout)
    chunks = tuple(data.draw(chunkings(size)) for size in x.shape)
    kw = dict(stride=prob["stride_arg"], padding=prob["padding"], dilation=prob["dil_arg"],
              groups=prob["groups"], layout=layout, padding_mode=prob["mode"])
    expected = numbaconv.conv2d(x, w, b, **kw)
    y = ndask.conv2d(da.from_array(x, chunks=chunks), w, b, **kw)
    assert y.shape == expected.shape and y.dtype == expected.dtype
    got = client.compute(y).result()
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(expected).max(initial=1))


def test_blocks_follow_the_input_chunks_and_the_stride():
    x = da.zeros((3, 2, 20, 17), chunks=(2, 2, (7, 6, 7), (9, 8)))
    y = ndask.conv2d(x, np.ones((4, 2, 3, 3)), stride=2, padding=1)
    # output p's block is the chunk that padded row 2p starts in: (7, 6, 7) + 1 row of pad
    assert y.chunks == ((2, 1), (4,), (4, 3, 3), (5, 4))
    same = ndask.conv2d(x, np.ones((4, 2, 3, 3)), padding="same")
    assert same.chunks[2:] == ((8, 6, 6), (10, 7))
    assert y.compute().shape == numbaconv.conv2d(np.zeros(x.shape), np.ones((4, 2, 3, 3)),
                                                 stride=2, padding=1).shape


def test_unbatched_and_empty_batches():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((3, 10, 10)), rng.standard_normal((2, 3, 3, 3))
    y = ndask.conv2d(da.from_array(x, chunks=(3, 4, 4)), w, padding="same")
    np.testing.assert_allclose(y.compute(), numbaconv.conv2d(x, w, padding="same"), atol=1e-12)
    empty = ndask.conv2d(da.zeros((0, 3, 10, 10)), w)
    assert empty.shape == (0, 2, 8, 8) and empty.compute().shape == (0, 2, 8, 8)


def test_the_weight_is_one_node_of_the_graph():
    w = np.random.default_rng(0).standard_normal((64, 64, 3, 3))  # 295 KB
    x = da.zeros((8, 64, 64, 64), chunks=(1, 64, 16, 16))
    y = ndask.conv2d(x, w, np.ones(64), padding=1)
    graph = dict(y.__dask_graph__())
    holding = [k for k, v in graph.items() if _holds(v, w)]
    assert len(holding) == 1, holding
    assert sum(1 for k in graph if "numbaconv-conv2d" in str(k)) == 8 * 4 * 4


def _holds(task, w) -> bool:
    """Whether a graph entry embeds the array ``w`` (legacy tuples or dask's task objects)."""
    if isinstance(task, np.ndarray):
        return task.shape == w.shape and np.array_equal(task, w)
    if isinstance(task, tuple | list):
        return any(_holds(t, w) for t in task)
    value = getattr(task, "value", None)
    if value is not None and value is not task:
        return _holds(value, w)
    args = getattr(task, "args", None)
    return isinstance(args, tuple) and any(_holds(a, w) for a in args)


def test_local_schedulers_use_the_callers_thread_count(monkeypatch):
    # Numba's count is per thread: a pool thread of dask's would see its default.
    seen, call = [], ndask._conv2d
    monkeypatch.setattr(ndask, "_conv2d",
                        lambda *a, **k: seen.append(numbaconv.get_num_threads()) or call(*a, **k))
    with numbaconv.threads(1):
        y = ndask.conv2d(da.ones((4, 2, 8, 8), chunks=(1, 2, 8, 8)), np.ones((1, 2, 3, 3)))
    y.compute(scheduler="threads")
    assert seen == [1] * 4


def test_each_worker_uses_its_own_thread_count(client):
    as_tasks = [client.submit(ndask._worker_threads, pure=False) for _ in range(4)]
    assert client.gather(as_tasks) == [1] * 4
    assert ndask._worker_threads() == numbaconv.get_num_threads()  # not on a worker


def test_a_killed_worker_is_recovered_and_the_result_right(client):
    rng = da.random.default_rng(42)
    x = rng.standard_normal((24, 64, 128, 128), chunks=(2, 64, 64, 64), dtype=np.float32)
    w = np.random.default_rng(1).standard_normal((64, 64, 3, 3)).astype(np.float32)
    x = client.persist(x)
    distributed.wait(x)
    expected = numbaconv.conv2d(x.compute(), w, padding=1)
    future = client.compute(ndask.conv2d(x, w, padding=1))
    pids = client.run(os.getpid)
    deadline = time.monotonic() + 60
    victim = None
    while victim is None and time.monotonic() < deadline:
        for addr, keys in client.processing().items():
            if any("numbaconv-conv2d" in str(k) for k in keys):
                victim = addr
        time.sleep(0.01)
    assert victim is not None and not future.done()
    os.kill(pids[victim], signal.SIGKILL)
    got = future.result(timeout=300)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    client.wait_for_workers(2, timeout=120)  # the nanny restarted it
    assert pids[victim] not in client.run(os.getpid).values()


def test_channel_chunks_are_joined_with_a_warning_when_large(monkeypatch):
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 6, 9, 9)), rng.standard_normal((4, 6, 3, 3))
    y = ndask.conv2d(da.from_array(x, chunks=(1, 2, 9, 9)), w)  # small: no warning
    np.testing.assert_allclose(y.compute(), numbaconv.conv2d(x, w), atol=1e-12)
    monkeypatch.setattr(numbaconv._args, "physical_memory", lambda: 8 * 2**10)
    with pytest.warns(RuntimeWarning, match="chunked over its 6 channels"):
        ndask.conv2d(da.from_array(x, chunks=(1, 2, 9, 9)), w)


@pytest.mark.parametrize("call, exc, words", [
    (lambda: ndask.conv2d(np.ones((1, 2, 5, 5)), np.ones((1, 2, 3, 3))), TypeError,
     ["x:", "dask.array.Array", "ndarray"]),
    (lambda: ndask.conv2d(da.ones((2, 5, 5)).reshape(1, 2, 5, 5)[:, :, :, :], np.ones((1, 3, 3,
                                                                                      3))),
     ValueError, ["weight:", "2 input channels"]),
    (lambda: ndask.conv2d(da.ones((1, 2, 5, 5)), np.ones((1, 2, 3, 3)), stride=0), ValueError,
     ["stride"]),
    (lambda: ndask.conv2d(da.ones((1, 2, 5, 5), dtype=int), np.ones((1, 2, 3, 3))), TypeError,
     ["x:", "dtype"]),
    (lambda: ndask.conv2d(da.ones((2, 5, 5, 5, 1)), np.ones((1, 2, 3, 3))), ValueError,
     ["x:", "3-d or 4-d"]),
    (lambda: ndask.conv2d(da.ones((1, 2, 5, 5)), numbaconv.pack_weight(np.ones((1, 2, 3, 3)))),
     TypeError, ["weight:", "PackedWeight"]),
    (lambda: ndask.conv2d(da.ones((1, 2, 5, 5)), np.ones((1, 2, 3, 3)), np.ones(3)), ValueError,
     ["bias:"]),
])
def test_bad_input_gets_a_clear_error(call, exc, words):
    from checks import assert_clear_error

    assert_clear_error(call, exc, words)


def test_unknown_chunk_sizes_are_refused():
    x = da.ones((4, 2, 5, 5), chunks=2)
    x = x[x[:, 0, 0, 0] > 0]  # a boolean index: chunk sizes unknown
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        ndask.conv2d(x, np.ones((1, 2, 3, 3)))


def test_bench_sweep_on_the_cluster_streams_rows_with_their_worker(client, tmp_path):
    from checks import bench_csv, write_suite

    suite = write_suite(tmp_path, [
        {"name": "tiny.3x3", "C": 3, "H": 10, "W": 9, "O": 4, "kernel": 3, "padding": 1},
        {"name": "tiny.1x1", "C": 4, "H": 6, "W": 6, "O": 5, "kernel": 1}])
    csv_path, json_path = tmp_path / "rows.csv", tmp_path / "rows.json"
    address = client.scheduler.address
    args = ["bench", "--suite", suite, "--batch", "1", "2", "--layout", "NCHW", "NHWC",
            "--compare", "numpy", "--repeat", "1", "--scheduler", address, "--csv",
            str(csv_path), "--json", str(json_path), "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "numbaconv", *args], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, rows = bench_csv(csv_path)
    assert "# on_cluster: True" in header
    assert len(rows) == 8 and all(r["check"] == "ok" for r in rows)
    workers = set(client.scheduler_info()["workers"])
    assert {r["worker"] for r in rows} <= workers
    assert all("kernels" in r["cpu"] and "cores" in r["cpu"] for r in rows)
    saved = json.loads(json_path.read_text())
    # the JSON keeps the sweep's order (layers innermost), whatever order they finished in
    assert [(r["name"], r["batch"]) for r in saved["rows"][:4]] == [
        ("tiny.3x3", 1), ("tiny.1x1", 1), ("tiny.3x3", 2), ("tiny.1x1", 2)]
    # resumed on the cluster: nothing left to time
    again = subprocess.run([sys.executable, "-m", "numbaconv", *args, "--resume"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(bench_csv(csv_path)[1]) == 8


@pytest.mark.parametrize("extra, words", [
    (["--scheduler", "tcp://127.0.0.1:1"], ["--scheduler", "cannot reach"]),
    (["--scheduler", "tcp://127.0.0.1:1", "--isolate"], ["--isolate", "--scheduler"]),
])
def test_bench_scheduler_errors(extra, words, capsys):
    from numbaconv.cli import main

    assert main(["bench", "--suite", "resnet50", "--repeat", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_a_row_that_fails_on_a_worker_names_the_row(client):
    from numbaconv.bench import Layer, Sweep, cluster

    sweep = Sweep.plan([Layer("tiny", 3, 8, 8, 4, 3, padding=1)], batches=[1, 2],
                       layouts=["NCHW"], dtypes=["float32"], threads=[1], compare=[], repeat=1)
    sweep.configs[1]["threads"] = 10**6  # more than any worker's Numba pool
    with pytest.raises(cluster.WorkerFailed, match=r"row tiny N=2 NCHW float32 1000000 thr"):
        cluster.run(sweep, client, None, _NoProgress())
    assert [r["batch"] for r in sweep.rows] in ([1], [])  # what finished is kept


class _NoProgress:
    def show(self, done, label):
        pass

    def clear(self):
        pass


def test_resume_of_a_cluster_csv_names_the_scheduler_option(tmp_path, capsys):
    from numbaconv.cli import main

    path = tmp_path / "rows.csv"
    path.write_text("# on_cluster: True\nname\n")
    assert main(["bench", "--suite", "resnet50", "--csv", str(path), "--resume"]) == 2
    assert "written with --scheduler; use the same --scheduler" in capsys.readouterr().err
