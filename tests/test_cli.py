"""The command line: bench, explain, info; exit 0 on success, 2 on bad arguments."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from checks import bench_csv, write_suite

import numbaconv
from numbaconv.bench import load_suite
from numbaconv.cli import main

TINY = [
    {"name": "tiny.3x3", "C": 3, "H": 10, "W": 9, "O": 4, "kernel": 3, "stride": 1, "padding": 1},
    {"name": "tiny.1x1", "C": 4, "H": 6, "W": 6, "O": 5, "kernel": 1},
    {"name": "tiny.grouped", "C": 4, "H": 8, "W": 8, "O": 4, "kernel": 3, "padding": 2,
     "dilation": 2, "groups": 2},
]


@pytest.fixture
def suite(tmp_path):
    return write_suite(tmp_path, TINY)


def _csv_rows(path):
    return bench_csv(path)[1]


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
    # The dispatcher's own choice per row (the 1x1 layer's depends on the register tile).
    layers = {layer.name: layer for layer in load_suite(suite)}
    for r in rows:
        layer = layers[r["name"]]
        assert r["algorithm"] == numbaconv.explain(
            *layer.shapes(int(r["batch"]), r["layout"]), layout=r["layout"], dtype=r["dtype"],
            **layer.conv_kwargs()).algorithm, r["name"]
    assert "im2col_gemm" in {r["algorithm"] for r in rows}
    assert all(float(r["gflops"]) > 0 and float(r["vs_numpy"]) > 0 for r in rows)
    header = out_csv.read_text().splitlines()[:5]
    assert any(line.startswith("# cpu:") for line in header)
    data = json.loads(out_json.read_text())
    assert len(data["rows"]) == len(rows) and data["machine"]["sgemm_gflops"] > 0
    assert "threading_layer" in data["machine"] and "blas" in data["machine"]


def test_bench_network_times_each_table_back_to_back(suite, tmp_path, capsys):
    out_json = tmp_path / "r.json"
    assert main(["bench", "--suite", suite, "--batch", "1", "2", "--layout", "NHWC",
                 "--compare", "--repeat", "1", "--network", "--prepack",
                 "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "network N=1 NHWC float32" in out and "network N=2 NHWC float32" in out
    assert "3 layers back to back" in out and "x the sum of their rows" in out
    nets = json.loads(out_json.read_text())["networks"]
    assert [(n["batch"], n["layers"], n["prepack"]) for n in nets] == [(1, 3, True), (2, 3, True)]
    assert all(n["median_ms"] > 0 and n["rows_ms"] > 0 for n in nets)


def test_bench_network_after_resume_covers_the_whole_table(suite, tmp_path, capsys):
    out_csv, out_json = tmp_path / "r.csv", tmp_path / "r.json"
    args = ["bench", "--suite", suite, "--batch", "1", "2", "--layout", "NCHW", "--compare",
            "--repeat", "1", "--csv", str(out_csv)]
    assert main(args) == 0
    full = out_csv.read_text()
    out_csv.write_text("".join(full.splitlines(keepends=True)[:-2]))  # N=2 partly done
    capsys.readouterr()
    assert main([*args, "--resume", "--network", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "network N=1 NCHW" in out and "network N=2 NCHW" in out  # N=1 was resumed whole
    rows = _csv_rows(out_csv)
    nets = json.loads(out_json.read_text())["networks"]
    assert sorted(n["batch"] for n in nets) == [1, 2] and {n["layers"] for n in nets} == {3}
    for n in nets:
        table = [float(r["median_ms"]) for r in rows if int(r["batch"]) == n["batch"]]
        assert n["rows_ms"] == pytest.approx(sum(table), rel=1e-4)
    assert main([*args[:-2], "--json", str(out_json)]) == 0  # without --network: no key
    assert "networks" not in json.loads(out_json.read_text())


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
    from numbaconv.bench import peers

    monkeypatch.setattr(peers, "available_peers", lambda: ["numpy"])
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
    (["explain", "--input", "1,3,8,8", "--weight", "8,3,3,3", "--padding", "1,a"],
     ["--padding"]),
    (["explain", "--input", "1,3,8,8", "--weight", "8,3,3,3", "--algorithm", "fft"],
     ["algorithm", "fft"]),
    (["explain", "--input", "1,3,8,8", "--weight", "8,3,3,3", "--groups", "2"], ["groups"]),
    (["bench", "--threads", "0"], ["--threads"]),
    (["bench", "--repeat", "0"], ["--repeat"]),
    (["bench", "--dtype", "float16"], ["--dtype"]),
    (["bench", "--plot", "r.jpeg"], ["--plot", ".png"]),
    (["bench", "--csv", "{nodir}"], ["--csv", "no directory"]),
    (["bench", "--json", "{nodir}"], ["--json"]),
    (["bench", "--plot", "{dir}"], ["--plot", "directory"]),
    (["frobnicate"], ["frobnicate"]),
    ([], ["command"]),
])
def test_bad_arguments_exit_2_with_one_line(argv, words, capsys, tmp_path):
    subs = {"{bad}": str(tmp_path / "missing.json"), "{nodir}": str(tmp_path / "no" / "r.csv"),
            "{dir}": str(tmp_path)}
    argv = [subs.get(a, a) for a in argv]
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
    ('[{"name": "x", "C": "3", "H": 8, "W": 8, "O": 8, "kernel": 3}]', ["C", "integer"]),
    ('[{"name": "x", "C": 3, "H": 8, "W": 8, "O": 8, "kernel": 3, "padding": 1.5}]',
     ["padding", "integer"]),
    ('[{"name": "x", "C": 3, "H": 8, "W": 8, "O": 8, "kernel": 3, "stride": 0}]', ["stride"]),
    ('[{"name": "x", "C": 3, "H": -8, "W": 8, "O": 8, "kernel": 3}]', ["layer 0"]),
    ('[{"name": "x", "C": 3, "H": 8, "W": 8, "O": 8, "kernel": 3},'
     ' {"name": "x", "C": 3, "H": 8, "W": 8, "O": 8, "kernel": 1}]', ["layer 1", "twice"]),
    ('[{"name": "", "C": 3, "H": 8, "W": 8, "O": 8, "kernel": 3}]', ["name"]),
    ('[[1, 2]]', ["needs keys"]),
    ('\u00ff\u00fe', ["cannot read"]),
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
    assert main(["explain", "--input", "1,128,14,14", "--weight", "128,128,3,3", "--stride",
                 "1", "--padding", "1", "--layout", "NCHW"]) == 0
    out = capsys.readouterr().out
    assert "im2col_gemm" in out and "128 x 196 x 1152" in out and "workspace" in out
    assert main(["explain", "--input", "8,56,56,64", "--weight", "1,1,64,256", "--layout",
                 "NHWC", "--padding", "same"]) == 0
    assert "gemm_1x1" in capsys.readouterr().out
    assert main(["explain", "--input", "1,56,56,64", "--weight", "1,1,64,256", "--layout",
                 "NHWC"]) == 0
    assert "pointwise_gemm" in capsys.readouterr().out


def test_explain_takes_1d_and_3d_shapes(capsys):
    assert main(["explain", "--input", "8,512,3199", "--weight", "512,512,3", "--stride",
                 "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("conv1d plan:") and "W=1599" in out and "unit height" in out
    assert main(["explain", "--input", "1,16,28,28,64", "--weight", "3,3,3,64,128",
                 "--stride", "2,2,2", "--padding", "1", "--layout", "NDHWC"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("conv3d plan:") and "D=8 H=14 W=14" in out and "C*KD = 192" in out
    assert main(["explain", "--input", "1,3,8,8,8", "--weight", "4,3,3,3,3", "--stride",
                 "1,2"]) == 2
    assert "stride" in capsys.readouterr().err


def test_info_and_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "numbaconv", "info"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for key in ("numba", "numpy", "blas", "threading_layer", "numba_cache_dir", "simd"):
        assert key in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "numbaconv", "bench", "--suite", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------
# Suites, peers, --algorithm, progress, interruption, plots
# --------------------------------------------------------------------------
def test_builtin_suites():
    from numbaconv import bench

    suites = {name: bench.load_suite(name) for name in ("resnet50", "vgg16", "mobilenet_v2")}
    assert [len(s) for s in suites.values()] == [12, 9, 30]
    for layers in suites.values():
        assert len({layer.name for layer in layers}) == len(layers)
        assert len(set(dataclass_key(layer) for layer in layers)) == len(layers)  # distinct
    mobilenet = suites["mobilenet_v2"]
    depthwise = [la for la in mobilenet if la.groups > 1]
    assert depthwise and all(la.groups == la.c == la.o and la.kernel == 3 for la in depthwise)
    assert sum(la.kernel == 1 for la in mobilenet) == 19  # pointwise expand/project + head
    assert all(la.kernel == 3 and la.padding == 1 for la in suites["vgg16"])


def dataclass_key(layer):
    return (layer.c, layer.h, layer.w, layer.o, layer.kernel, layer.stride, layer.padding,
            layer.groups)


def test_algorithm_names_are_read_at_run_time(suite, capsys, monkeypatch):
    from numbaconv import algorithms

    monkeypatch.setitem(algorithms.REGISTRY, "winograd", algorithms.REGISTRY["im2col_gemm"])
    assert main(["bench", "--suite", suite, "--algorithm", "fft"]) == 2
    assert "winograd" in capsys.readouterr().err


def test_forced_algorithm_skips_layers_it_does_not_fit(suite, tmp_path, capsys):
    out_csv = tmp_path / "r.csv"
    assert main(["bench", "--suite", suite, "--algorithm", "gemm_1x1", "--compare", "numpy",
                 "--repeat", "1", "--csv", str(out_csv)]) == 0
    err = capsys.readouterr().err
    assert "does not apply to 2 layer(s)" in err and "tiny.3x3" in err
    rows = _csv_rows(out_csv)
    assert [(r["name"], r["algorithm"], r["check"]) for r in rows] == [
        ("tiny.1x1", "gemm_1x1", "ok")]


def _fake_peer(monkeypatch, setup):
    from numbaconv import bench

    monkeypatch.setitem(bench.PEERS, "fake", bench.Peer("fake", setup, ("numpy",)))


def test_unsupported_peer_rows_are_na(suite, tmp_path, capsys, monkeypatch):
    from numbaconv import bench

    def setup(layer, x, w, layout):
        if x.dtype == np.float64:
            raise bench.PeerUnsupported("no float64")
        return bench.PEERS["numpy"](layer, x, w, layout)

    _fake_peer(monkeypatch, setup)
    out_csv, out_json = tmp_path / "r.csv", tmp_path / "r.json"
    assert main(["bench", "--suite", suite, "--compare", "fake", "--dtype", "float32",
                 "float64", "--repeat", "1", "--csv", str(out_csv), "--json",
                 str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "n/a" in out and "fake n/a" in out  # the float64 table rows and total
    rows = _csv_rows(out_csv)
    assert [r["fake_ms"] == "" for r in rows] == [False] * 3 + [True] * 3
    assert {r["check"] for r in rows} == {"ok"}
    assert json.loads(out_json.read_text())["rows"][-1]["fake_ms"] is None


def test_wrong_or_failing_peer_is_flagged(suite, capsys, monkeypatch):
    from numbaconv import bench

    def setup(layer, x, w, layout):
        if layer.kernel == 1:
            raise RuntimeError("boom\nsecond line")
        good = bench.PEERS["numpy"](layer, x, w, layout)
        return lambda: good() + 1

    _fake_peer(monkeypatch, setup)
    assert main(["bench", "--suite", suite, "--compare", "fake", "--repeat", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("MISMATCH vs fake") == 2
    assert "ERROR in fake: RuntimeError: boom" in captured.out
    assert "did not match" in captured.err


def test_interrupted_sweep_keeps_rows(suite, tmp_path, capsys, monkeypatch):
    from numbaconv import bench

    calls = []

    def setup(layer, x, w, layout):
        calls.append(layer.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return bench.PEERS["numpy"](layer, x, w, layout)

    _fake_peer(monkeypatch, setup)
    out_csv = tmp_path / "r.csv"
    args = ["bench", "--suite", suite, "--compare", "fake", "--repeat", "1", "--csv",
            str(out_csv)]
    assert main(args) == 130
    assert "interrupted: 1 row(s)" in capsys.readouterr().err
    assert [r["name"] for r in _csv_rows(out_csv)] == ["tiny.3x3"]
    assert main([*args, "--resume", "--json", str(tmp_path / "r.json")]) == 0
    assert [r["name"] for r in _csv_rows(out_csv)] == ["tiny.3x3", "tiny.1x1", "tiny.grouped"]
    # the JSON of a resumed run holds the whole sweep, the earlier rows too
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["tiny.3x3", "tiny.1x1", "tiny.grouped"]
    assert isinstance(rows[0]["median_ms"], float) and rows[0]["batch"] == 1


def test_resume_with_other_columns_is_refused(suite, tmp_path, capsys):
    out_csv = tmp_path / "r.csv"
    out_csv.write_text("# cpu: x\nname,shape\nfoo,bar\n")
    assert main(["bench", "--suite", suite, "--compare", "numpy", "--csv", str(out_csv),
                 "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "same --compare" in err


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_only_on_a_terminal(suite, capsys, monkeypatch, tty):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    assert main(["bench", "--suite", suite, "--compare", "--repeat", "1"]) == 0
    captured = capsys.readouterr()
    assert ("[" in captured.err and "] 2/3 tiny.grouped" in captured.err) == tty
    assert captured.err == "" or tty
    assert "\r" not in captured.out and captured.out.count("tiny.") == 3


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_two_layouts(suite, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "r.png"
    assert main(["bench", "--suite", suite, "--layout", "NCHW", "NHWC", "--batch", "1", "2",
                 "--compare", "numpy", "--repeat", "1", "--plot", str(png)]) == 0
    assert f"plot: {png}" in capsys.readouterr().out
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > height / 2 and width >= 800  # two panels side by side, two panel rows


def test_plot_panels_and_values(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from numbaconv import bench

    saved = {}
    real_savefig = Figure.savefig

    def spy(fig, path, *a, **kw):
        saved["fig"] = fig
        return real_savefig(fig, path, *a, **kw)

    rows = [dict(name=f"s.{i}", batch=1, layout=lay, dtype="float32", threads=2, gflop=1.0,
                 median_ms=10.0 * (i + 1), torch_ms=20.0, jax_ms=None, check="ok")
            for lay in ("NCHW", "NHWC") for i in range(3)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", spy)
        bench.plot(rows, str(tmp_path / "p.svg"), sgemm=150.0)
    fig = saved["fig"]
    axes = fig.axes
    assert len(axes) == 2 and [ax.get_title().split(",")[0] for ax in axes] == ["NCHW", "NHWC"]
    assert axes[0].get_ylabel().startswith("GFLOP/s")
    heights = [p.get_height() for p in axes[0].patches]
    assert heights[:3] == pytest.approx([100.0, 50.0, 100 / 3])  # numbaconv: gflop / median
    assert heights[3:6] == pytest.approx([50.0] * 3)  # torch
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["0", "1", "2"]
    assert any(line.get_ydata()[0] == 150.0 for line in axes[0].get_lines())  # sgemm line
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:3] == ["numbaconv", "torch", "jax"] and "sgemm" in legend[-1]
    assert (tmp_path / "p.svg").read_text().lstrip().startswith("<?xml")


def test_plot_without_matplotlib_is_a_note(suite, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    png, out_csv = tmp_path / "r.png", tmp_path / "r.csv"
    assert main(["bench", "--suite", suite, "--compare", "numpy", "--repeat", "1", "--plot",
                 str(png), "--csv", str(out_csv), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "matplotlib is not installed" in err
    assert not png.exists() and len(_csv_rows(out_csv)) == 3


def test_info_lists_what_a_bug_report_needs(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(None, 1) for line in out.splitlines() if line.strip())
    for key in ("numbaconv", "numpy", "numba", "blas", "threading_layer", "numba_threads",
                "jit_cache_dir", "simd", "cpu", "torch", "onnxruntime", "jax"):
        assert key in lines, key
    assert "threads" in lines["blas"]
    cache = lines["jit_cache_dir"].strip()
    assert os.path.isdir(cache) or "memory" in cache


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--suite", "--batch", "--layout", "--dtype", "--threads", "--algorithm",
                   "--compare", "--isolate", "--prepack", "--repeat", "--csv", "--json", "--plot",
                   "--quiet",
                   "--resume"):
        assert option in out


def test_a_bad_numbaconv_isa_is_one_line_and_status_2():
    env = {**os.environ, "NUMBACONV_ISA": "bogus"}
    proc = subprocess.run([sys.executable, "-m", "numbaconv", "info"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "NUMBACONV_ISA" in proc.stderr
    assert "'bogus'" in proc.stderr and "Traceback" not in proc.stderr
