"""Ctrl-C (a real SIGINT) during calls and during a bench sweep.

An interrupted call must leave the process usable: thread counts, BLAS
limits, plan caches and workspaces as they were, the next call right.  An
interrupted sweep must leave a CSV of whole rows that ``--resume`` finishes.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

from checks import bench_csv, write_suite

CALLS = textwrap.dedent("""
    import signal, sys, time, numpy as np, numba, threadpoolctl, numbaconv
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 32, 64, 64)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    wt = rng.standard_normal((32, 16, 2, 2)).astype(np.float32)
    def work():
        y = numbaconv.conv2d(x, w, padding=1)
        g = numbaconv.conv2d_backward(y, x, w, padding=1)
        with numbaconv.threads(1):
            t = numbaconv.conv_transpose2d(x, wt, stride=2)
        return y, g[0], t
    expected = work()
    blas = lambda: [i["num_threads"] for i in threadpoolctl.threadpool_info()
                    if i["user_api"] == "blas"]
    before = (numba.get_num_threads(), blas())
    print("ready", flush=True)
    interrupted = 0
    deadline = time.time() + 60
    done = False
    while not done:
        try:
            while interrupted < int(sys.argv[1]) and time.time() < deadline:
                try:
                    work()
                except KeyboardInterrupt:
                    interrupted += 1
            done = True
        except KeyboardInterrupt:  # one delivered between calls, at the loop's back-edge
            interrupted += 1
    after = work()
    same = all(np.array_equal(a, b) for a, b in zip(after, expected))
    print(interrupted, same, (numba.get_num_threads(), blas()) == before, flush=True)
""")


def test_ctrl_c_during_calls_leaves_the_process_usable():
    proc = subprocess.Popen([sys.executable, "-c", CALLS, "5"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    for i in range(5):  # at different points of forward, backward and transpose
        time.sleep(0.05 + 0.037 * i)
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert out.split() == ["5", "True", "True"], (out, err[-2000:])


def test_ctrl_c_during_a_sweep_keeps_whole_rows_and_resume_finishes(tmp_path):
    layers = [dict(name=f"big.{i}", C=64, H=56, W=56, O=64, kernel=3, padding=1)
              for i in range(6)]
    suite, out_csv = write_suite(tmp_path, layers), tmp_path / "r.csv"
    args = [sys.executable, "-m", "numbaconv", "bench", "--suite", suite, "--compare",
            "--repeat", "20", "--csv", str(out_csv)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # interrupt after the first row
        if out_csv.exists() and len(bench_csv(out_csv)[1]) >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    header, rows = bench_csv(out_csv)
    assert 1 <= len(rows) < len(layers)
    columns = rows[0].keys()
    assert all(None not in row and all(row[c] != "" for c in ("name", "median_ms"))
               for row in rows), rows
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**os.environ})
    assert done.returncode == 0, done.stderr[-2000:]
    _, rows = bench_csv(out_csv)
    assert [r["name"] for r in rows] == [layer["name"] for layer in layers]
    assert all(r.keys() == columns for r in rows)
