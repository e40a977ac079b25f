"""The command line: bench, explain, info; exit 0 on success, 2 on bad arguments."""

import csv
import json
import subprocess
import sys

import pytest

from numbaconv.cli import main

TINY = [
    {"name": "tiny.3x3", "C": 3, "H": 10, "W": 9, "O": 4, "kernel": 3, "stride": 1, "padding": 1},
    {"name": "tiny.1x1", "C": 4, "H": 6, "W": 6, "O": 5, "kernel": 1},
    {"name": "tiny.grouped", "C": 4, "H": 8, "W": 8, "O": 4, "kernel": 3, "padding": 2,
     "dilation": 2, "groups": 2},
]


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return str(path)


def _csv_rows(path):
    with open(path) as f:
        lines = [line for line in f if not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_bench_writes_csv_and_json(suite, tmp_path, capsys):
    out_csv, out_json = tmp_path / "r.csv", tmp_path / "r.json"
    rc = main(["bench", "--suite", suite, "--batch", "1", "2", "--layout", "NCHW", "NHWC",
               "--dtype", "float32", "float64", "--compare", "numpy", "--repeat", "1",
               "--csv", str(out_csv), "--json", str(out_json)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "tiny.grouped" in table and "GFLOP/s" in table and "total N=2 NHWC" in table
    rows = _csv_rows(out_csv)
    assert len(rows) == 3 * 2 * 2 * 2
    assert {r["check"] for r in rows} == {"ok"}
    assert {r["algorithm"] for r in rows} == {"im2col_gemm", "gemm_1x1"}
    assert all(float(r["gflops"]) > 0 and float(r["vs_numpy"]) > 0 for r in rows)
    header = out_csv.read_text().splitlines()[:5]
    assert any(line.startswith("# cpu:") for line in header)
    data = json.loads(out_json.read_text())
    assert len(data["rows"]) == len(rows) and data["machine"]["sgemm_gflops"] > 0
    assert "threading_layer" in data["machine"] and "blas" in data["machine"]


def test_resume_skips_rows_already_written(suite, tmp_path, capsys):
    out_csv = tmp_path / "r.csv"
    args = ["bench", "--suite", suite, "--compare", "numpy", "--repeat", "1", "--csv",
            str(out_csv)]
    assert main(args) == 0
    full = out_csv.read_text()
    # Simulate an interrupted sweep: drop the last row.
    out_csv.write_text("".join(full.splitlines(keepends=True)[:-1]))
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming: 2 row(s)" in out
    rows = _csv_rows(out_csv)
    assert [r["name"] for r in rows] == ["tiny.3x3", "tiny.1x1", "tiny.grouped"]
    assert main([*args, "--resume"]) == 0  # nothing left to do
    assert len(_csv_rows(out_csv)) == 3


def test_forced_algorithm(suite, capsys):
    assert main(["bench", "--suite", suite, "--algorithm", "im2col_gemm", "--compare", "numpy",
                 "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("im2col_gemm") >= 3 and "MISMATCH" not in out


def test_missing_peer_is_a_note(suite, capsys, monkeypatch):
    from numbaconv import bench

    monkeypatch.setattr(bench, "available_peers", lambda: ["numpy"])
    assert main(["bench", "--suite", suite, "--compare", "numpy", "torch", "--repeat", "1",
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "torch is not installed" in captured.err and captured.out == ""


@pytest.mark.parametrize("argv, words", [
    (["bench", "--suite", "alexnet"], ["--suite", "alexnet"]),
    (["bench", "--suite", "{bad}"], ["--suite"]),
    (["bench", "--batch", "0"], ["--batch"]),
    (["bench", "--batch", "x"], ["--batch"]),
    (["bench", "--layout", "NCWH"], ["--layout"]),
    (["bench", "--algorithm", "fft"], ["--algorithm", "fft"]),
    (["bench", "--compare", "mxnet"], ["--compare", "mxnet"]),
    (["bench", "--threads", "999"], ["--threads"]),
    (["bench", "--resume"], ["--resume", "--csv"]),
    (["explain", "--input", "1,3,4,4", "--weight", "8,3,7,7"], ["explain", "larger"]),
    (["explain", "--input", "1,3,a", "--weight", "8,3,3,3"], ["--input"]),
    (["explain", "--input", "1,3,8,8", "--weight", "8,3,3,3", "--stride", "1,2,3"], ["stride"]),
    (["explain", "--weight", "8,3,3,3"], ["--input"]),
    (["frobnicate"], ["frobnicate"]),
    ([], []),
])
def test_bad_arguments_exit_2_with_one_line(argv, words, capsys, tmp_path):
    argv = [str(tmp_path / "missing.json") if a == "{bad}" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    if words:
        assert len(err.splitlines()) == 1, err
        for word in words:
            assert word in err, err


@pytest.mark.parametrize("content, words", [
    ("not json", ["cannot read"]),
    ('{"name": "x"}', ["non-empty JSON list"]),
    ('[{"name": "x", "C": 3}]', ["needs keys"]),
    ('[{"name": "x", "C": 3, "H": 4, "W": 4, "O": 8, "kernel": 7}]', ["larger"]),
    ('[{"name": "x", "C": 3, "H": 8, "W": 8, "O": 8, "kernel": 3, "groups": 2}]', ["groups"]),
    ('[{"name": "x", "C": 3, "H": 8, "W": 8, "O": 8, "kernel": 3, "colour": 1}]', ["unknown"]),
])
def test_malformed_shapes_file(content, words, tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text(content)
    assert main(["bench", "--suite", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for word in words:
        assert word in err, err


def test_explain_prints_the_plan(capsys):
    assert main(["explain", "--input", "8,64,56,56", "--weight", "64,64,3,3", "--stride", "1",
                 "--padding", "1", "--layout", "NCHW"]) == 0
    out = capsys.readouterr().out
    assert "im2col_gemm" in out and "64 x 3136 x 576" in out and "workspace" in out
    assert main(["explain", "--input", "8,56,56,64", "--weight", "1,1,64,256", "--layout",
                 "NHWC", "--padding", "same"]) == 0
    assert "gemm_1x1" in capsys.readouterr().out


def test_info_and_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "numbaconv", "info"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for key in ("numba", "numpy", "blas", "threading_layer", "numba_cache_dir", "simd"):
        assert key in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "numbaconv", "bench", "--suite", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
