"""``numbaconv bench --isolate``: each peer timed in a Python process of its own."""

import dataclasses
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from checks import bench_csv, write_suite

from numbaconv import bench
from numbaconv.bench import isolate, sweep
from numbaconv.cli import main

TINY = [
    {"name": "tiny.3x3", "C": 3, "H": 10, "W": 9, "O": 4, "kernel": 3, "padding": 1},
    {"name": "tiny.1x1", "C": 4, "H": 6, "W": 6, "O": 5, "kernel": 1},
]


@pytest.fixture
def suite(tmp_path):
    return write_suite(tmp_path, TINY)




def test_isolate_fills_the_peer_columns_and_says_so(suite, tmp_path, capsys):
    out_csv, out_json = tmp_path / "r.csv", tmp_path / "r.json"
    assert main(["bench", "--suite", suite, "--isolate", "--compare", "numpy", "--layout",
                 "NHWC", "--dtype", "float64", "--repeat", "1", "--csv", str(out_csv),
                 "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "peers isolated: numpy" in out and "numpy ms" in out
    assert "use --isolate" not in out
    header, rows = bench_csv(out_csv)
    assert "# isolate: True" in header
    assert len(rows) == 2 and {r["check"] for r in rows} == {"ok"}
    assert all(float(r["numpy_ms"]) > 0 and float(r["vs_numpy"]) > 0 for r in rows)
    assert json.loads(out_json.read_text())["machine"]["isolate"] is True


def test_in_process_runs_record_isolate_false(suite, tmp_path, capsys):
    out_csv = tmp_path / "r.csv"
    assert main(["bench", "--suite", suite, "--compare", "numpy", "--repeat", "1", "--csv",
                 str(out_csv)]) == 0
    assert "# isolate: False" in bench_csv(out_csv)[0]
    assert "peers timed in this process: numpy" in capsys.readouterr().out  # and a hint


def _job(layout="NCHW", dtype="float32"):
    layer = bench.Layer("w", 3, 7, 6, 4, 3, stride=2, padding=1)
    return layer, {"repeat": 1, "config": {
        "layer": {"name": "w", "c": 3, "h": 7, "w": 6, "o": 4, "kernel": 3, "stride": 2,
                  "padding": 1, "dilation": 1, "groups": 1},
        "batch": 2, "layout": layout, "dtype": dtype, "threads": 1}}


def test_worker_never_imports_numba():
    """The worker loads numbaconv.bench without numbaconv/__init__.py (which starts Numba)."""
    layer, job = _job()
    proc = subprocess.run(
        [sys.executable, "-c", isolate._WORKER_BOOT, isolate._PACKAGE_DIR, "numpy"],
        input=json.dumps(job) + "\n" + json.dumps(_job("NHWC")[1]) + "\n",
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ready, first, second = map(json.loads, proc.stdout.splitlines())  # then one per row
    assert ready == {"ready": True}
    assert first["numba_imported"] is False and second["numba_imported"] is False
    assert first["shape"] == [2, 4, 4, 3] and first["median_ms"] > 0
    assert second["shape"] == [2, 4, 3, 4]
    # Same seeds as in this process, so the sample matches numbaconv's output.
    x, w = bench._rng_arrays(layer, 2, "NCHW", "float32")
    ours = bench.numpy_conv2d(x, w, **layer.conv_kwargs())
    assert bench._sample_close(ours, first, "float32")


def test_groups_are_timed_in_turn(suite, tmp_path, monkeypatch):
    """Each table's rows: the peer's first, then numbaconv's; not the whole sweep first."""
    events = []
    real_time, real_bench_one = bench.PeerProcess.time, bench.bench_one

    def peer_time(self, cfg, repeat):
        events.append(("peer", cfg["layer"].name))
        return real_time(self, cfg, repeat)

    def bench_one(cfg, *args, **kwargs):
        events.append(("numbaconv", cfg["layer"].name))
        return real_bench_one(cfg, *args, **kwargs)

    monkeypatch.setattr(bench.PeerProcess, "time", peer_time)
    monkeypatch.setattr(sweep, "bench_one", bench_one)
    assert main(["bench", "--suite", suite, "--isolate", "--compare", "numpy", "--repeat", "1",
                 "--batch", "1", "2", "--quiet"]) == 0
    names = ["tiny.3x3", "tiny.1x1"]  # one table per batch size
    assert events == [*(("peer", n) for n in names), *(("numbaconv", n) for n in names)] * 2


def test_a_worker_that_imports_numba_is_an_error(monkeypatch):
    monkeypatch.setattr(isolate, "_WORKER_BOOT", "import numba\n" + isolate._WORKER_BOOT)
    cfg = dict(layer=bench.Layer("t", 2, 5, 5, 3, 3), batch=1, layout="NCHW",
               dtype="float32", threads=1, algorithm="auto")
    (result,) = bench.time_peer_isolated("numpy", [cfg], repeat=1)
    assert "imported numba" in result["error"]


def test_sample_check():
    y = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert bench._sample_close(y, bench._sample(y + 1e-6), "float32")
    assert not bench._sample_close(y, bench._sample(y.transpose(0, 1, 3, 2)), "float32")
    assert not bench._sample_close(y, bench._sample(y.reshape(2, 8, 8, 3)), "float32")
    assert not bench._sample_close(y, bench._sample(y + 0.01), "float32")


def test_a_failed_worker_is_reported_and_the_run_goes_on(suite, tmp_path, capsys, monkeypatch):
    # A peer only the parent knows: the worker process fails with a KeyError.
    monkeypatch.setitem(bench.PEERS, "fake", dataclasses.replace(bench.PEERS["numpy"], name="fake"))
    out_csv = tmp_path / "r.csv"
    assert main(["bench", "--suite", suite, "--isolate", "--compare", "numpy", "fake",
                 "--repeat", "1", "--csv", str(out_csv)]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("ERROR in fake: isolated process failed (status 1)") == 2
    assert "KeyError" in captured.out and "did not match" in captured.err
    rows = bench_csv(out_csv)[1]
    assert [r["name"] for r in rows] == ["tiny.3x3", "tiny.1x1"]
    assert all(float(r["numpy_ms"]) > 0 and r["fake_ms"] == "" for r in rows)


def test_resume_needs_the_same_isolate(suite, tmp_path, capsys):
    out_csv = tmp_path / "r.csv"
    args = ["bench", "--suite", suite, "--compare", "numpy", "--repeat", "1", "--csv",
            str(out_csv), "--quiet"]
    assert main([*args, "--isolate"]) == 0
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "with --isolate" in err
    assert main([*args, "--resume", "--isolate"]) == 0


def _with_numpy_peer_patched(monkeypatch, body):
    """Run the worker with ``bench.PEERS['numpy']`` wrapped by ``body`` (source of a setup)."""
    patch = ("import dataclasses\nimport numbaconv.bench as b\n_real = b.PEERS['numpy']\n"
             "_rows = []\n" + body + "b.PEERS['numpy'] = dataclasses.replace(_real, setup=setup)\n")
    monkeypatch.setattr(isolate, "_WORKER_BOOT",
                        isolate._WORKER_BOOT.replace("_peer_worker()\n",
                                                     patch + "_peer_worker()\n"))


def _tiny_rows(n):
    return [dict(layer=bench.Layer("t", 2, 5, 5, 3, 3), batch=b, layout="NCHW",
                 dtype="float32", threads=1, algorithm="auto") for b in range(1, n + 1)]


def test_a_peer_printing_from_native_code_does_not_break_the_answers(monkeypatch):
    _with_numpy_peer_patched(monkeypatch, (
        "import os\n"
        "def setup(*args, **kwargs):\n"
        "    os.write(1, b'native noise\\n')\n"
        "    print('python noise')\n"
        "    return _real(*args, **kwargs)\n"))
    results = bench.time_peer_isolated("numpy", _tiny_rows(2), repeat=1)
    assert [r["shape"] for r in results] == [[1, 3, 3, 3], [2, 3, 3, 3]]


def test_a_worker_dying_mid_sweep_fails_the_rows_from_there_on(monkeypatch):
    _with_numpy_peer_patched(monkeypatch, (
        "import os, sys\n"
        "def setup(*args, **kwargs):\n"
        "    _rows.append(1)\n"
        "    if len(_rows) == 2:\n"
        "        print('about to die', file=sys.stderr)\n"
        "        os._exit(3)\n"
        "    return _real(*args, **kwargs)\n"))
    first, second, third = bench.time_peer_isolated("numpy", _tiny_rows(3), repeat=1)
    assert first["shape"] == [1, 3, 3, 3]
    assert second == third == {"error": "isolated process failed (status 3): about to die"}


def test_a_worker_that_hangs_is_stopped_and_the_rows_from_there_on_fail(monkeypatch):
    monkeypatch.setattr(isolate, "PEER_TIMEOUT_S", 3.0)
    _with_numpy_peer_patched(monkeypatch, (
        "import time\n"
        "def setup(*args, **kwargs):\n"
        "    _rows.append(1)\n"
        "    if len(_rows) == 2:\n"
        "        time.sleep(600)\n"
        "    return _real(*args, **kwargs)\n"))
    t0 = time.perf_counter()
    first, second, third = bench.time_peer_isolated("numpy", _tiny_rows(3), repeat=1)
    assert time.perf_counter() - t0 < 60  # not the worker's 600 s
    assert first["shape"] == [1, 3, 3, 3]
    assert second == third == {"error": "isolated process gave no answer in 3 s; stopped"}
