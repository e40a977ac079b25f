"""The ``numbaconv`` command line: ``bench``, ``explain`` and ``info``.

``numbaconv`` (the console script) and ``python -m numbaconv`` are the same.
Exit status: 0 on success, 2 with a one-line message on bad arguments,
1 when a benchmark result did not match its baseline, 130 when a sweep is
interrupted (the rows already written are kept).

Examples
--------
>>> from numbaconv.cli import main
>>> main(["explain", "--input", "1,3,8,8", "--weight", "4,3,3,3"])  # doctest: +ELLIPSIS
conv2d plan: im2col_gemm (NCHW, float32)
...
0
>>> main(["bench", "--suite", "alexnet"])
2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys

_INT_COLUMNS = {"batch", "threads"}
_TEXT_COLUMNS = {"name", "shape", "layout", "dtype", "requested_algorithm", "algorithm", "check",
                 "worker", "cpu"}
PLOT_FORMATS = (".png", ".svg", ".pdf")


class UsageError(Exception):
    """Bad arguments: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors, on one line too
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}"
                                         ) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all three commands.

    Examples
    --------
    >>> from numbaconv.cli import build_parser
    >>> args = build_parser().parse_args(["bench", "--batch", "1", "8", "--layout", "NHWC"])
    >>> args.suite, args.batch, args.layout, args.algorithm
    ('resnet50', [1, 8], ['NHWC'], 'auto')
    """
    import numba

    from .bench import PEERS, SUITES

    algorithms = ", ".join(_algorithm_names())
    asked_only = ", ".join(name for name, peer in PEERS.items() if peer.asked_only)

    parser = _Parser(prog="numbaconv",
                     description="Fast CPU 2-D convolution in Numba: benchmark sweeps, the "
                                 "dispatcher's plans, and a machine report.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    b = sub.add_parser("bench", help="time conv2d over a suite of layer shapes",
                       description="Time conv2d over a suite of layer shapes against the "
                                   "plain-NumPy baseline and installed peers.")
    b.add_argument("--suite", default="resnet50", metavar="SUITE",
                   help=f"{', '.join(SUITES)}, or a JSON file: a list of objects with keys "
                        "name, C, H, W, O, kernel and optionally stride, padding, dilation, "
                        "groups (default: resnet50)")
    b.add_argument("--batch", type=_positive_int, nargs="+", default=[1], metavar="N",
                   help="one or more batch sizes (default: 1)")
    b.add_argument("--layout", nargs="+", default=["NCHW"], choices=["NCHW", "NHWC"],
                   help="NCHW and/or NHWC (default: NCHW)")
    b.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float64"],
                   help="float32 and/or float64 (default: float32)")
    b.add_argument("--threads", type=_positive_int, nargs="+", metavar="T",
                   default=[numba.config.NUMBA_NUM_THREADS],
                   help="one or more thread counts (default: all cores, "
                        f"{numba.config.NUMBA_NUM_THREADS})")
    b.add_argument("--algorithm", default="auto",
                   help=f"auto, or one of {algorithms} to force it on the layers "
                        "it applies to (default: auto)")
    b.add_argument("--compare", nargs="*", default=None, metavar="PEER",
                   help=f"any of {', '.join(PEERS)} (default: numpy plus whichever peers are "
                        f"installed, but {asked_only} only when named: ONNX "
                        "Runtime with its NCHWc rewrite off, i.e. its own im2col + GEMM); a "
                        "peer that is not installed is skipped with a note")
    b.add_argument("--isolate", action="store_true",
                   help="time each peer in a fresh Python process of its own (one per peer "
                        "for the whole run, asked table by table just before numbaconv) instead "
                        "of in this one, where the thread pools of numbaconv and the peers "
                        "slow each other; results are checked on a sample of each output")
    b.add_argument("--prepack", action="store_true",
                   help="time numbaconv with each weight packed beforehand (pack_weight), as "
                        "ONNX Runtime packs its weights when it creates a session; the "
                        "packing is not timed")
    b.add_argument("--network", action="store_true",
                   help="also time each table's layers back to back, as a network's forward "
                        "pass runs them (numbaconv only), against the sum of its rows")
    b.add_argument("--repeat", type=_positive_int, default=5,
                   help="timed calls per row, after one first call and 0.1 s of warm-up calls "
                        "(default: 5)")
    b.add_argument("--csv", metavar="PATH", help="write every row, with a header block")
    b.add_argument("--json", metavar="PATH", help="write the machine and every row")
    b.add_argument("--plot", metavar="PATH.png",
                   help="bar chart of GFLOP/s per layer per implementation (needs matplotlib)")
    b.add_argument("--resume", action="store_true",
                   help="skip rows already in the --csv file and append to it")
    b.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    b.add_argument("--scheduler", metavar="ADDRESS",
                   help="time the rows on this Dask cluster, one per worker at a time "
                        "(needs numbaconv[dask] on every worker)")

    e = sub.add_parser("explain", help="print the dispatcher's plan for one problem",
                       description="Print the plan conv1d, conv2d or conv3d would use for one "
                                   "problem (the rank is the weight's number of dims - 2).")
    e.add_argument("--input", type=_int_list, required=True,
                   help="input shape in the layout's order, e.g. 8,64,56,56 (3-d: 1-d conv, "
                        "5-d: 3-d conv)")
    e.add_argument("--weight", type=_int_list, required=True,
                   help="weight shape (OIW/OIHW/OIDHW channels first, WIO/HWIO/DHWIO "
                        "channels last), e.g. 64,64,3,3")
    e.add_argument("--stride", type=_int_list, default=(1,), help="s, or one per axis")
    e.add_argument("--padding", default="0", help="p, one per axis, same or valid")
    e.add_argument("--dilation", type=_int_list, default=(1,), help="d, or one per axis")
    e.add_argument("--groups", type=_positive_int, default=1)
    e.add_argument("--layout", default="NCHW",
                   choices=["NCHW", "NHWC", "NCW", "NWC", "NCDHW", "NDHWC"],
                   help="NCHW/NHWC also mean channels first/last in 1-d and 3-d")
    e.add_argument("--padding-mode", default="zeros",
                   choices=["zeros", "reflect", "replicate", "circular"])
    e.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    e.add_argument("--algorithm", default="auto", help=f"auto or one of {algorithms}")

    sub.add_parser("info", help="versions, threading layer, BLAS, JIT cache, CPU features",
                   description="Print what a bug report needs: versions, threading layer, "
                               "BLAS library and threads, JIT cache directory, CPU features.")
    return parser


def _algorithm_names() -> list[str]:
    """The algorithm names ``--algorithm`` accepts besides auto, read when asked."""
    from ._plan import algorithm_names

    return algorithm_names()


# --------------------------------------------------------------------------
# explain, info
# --------------------------------------------------------------------------
def _one_or_pair(values: tuple[int, ...], name: str):
    """One value for every axis, or one per axis (the rank checks how many)."""
    if len(values) == 1:
        return values[0]
    if len(values) <= 3:
        return values
    raise UsageError(f"numbaconv explain: --{name}: expected one to three integers, got "
                     f"{','.join(map(str, values))}")


def cmd_explain(args) -> int:
    """``numbaconv explain``: the dispatcher's plan for one problem, as ``print(plan)``."""
    from .conv import explain

    padding = args.padding
    if padding not in ("same", "valid"):
        try:
            padding = _one_or_pair(_int_list(padding), "padding")
        except argparse.ArgumentTypeError as err:
            raise UsageError(f"numbaconv explain: --padding: {err} (or same, valid)") from None
    try:
        plan = explain(args.input, args.weight, stride=_one_or_pair(args.stride, "stride"),
                       padding=padding, dilation=_one_or_pair(args.dilation, "dilation"),
                       groups=args.groups, layout=args.layout, padding_mode=args.padding_mode,
                       dtype=args.dtype, algorithm=args.algorithm)
    except (TypeError, ValueError) as err:
        raise UsageError(f"numbaconv explain: {err}") from None
    print(plan)
    return 0


def cmd_info(args) -> int:
    """``numbaconv info``: the machine report people paste into bug reports."""
    from .bench import available_peers, machine_info

    info = machine_info()
    info["peers installed"] = ", ".join(available_peers())
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0


# --------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------
def _parse_cell(column: str, text: str):
    if column in _TEXT_COLUMNS:
        return text
    if text == "":
        return None
    return int(text) if column in _INT_COLUMNS else float(text)


def _read_rows(path: str, columns: list[str], flags: dict[str, bool]) -> list[dict]:
    """The rows of an earlier run's CSV, typed, for --resume.

    ``flags``: the run-wide switches (``isolate``, ``prepack``) that the file
    must have been written with too.
    """
    try:
        with open(path, newline="") as f:
            lines = list(f)
        for flag, now in flags.items():
            # Files written before a switch existed have no such line: it was off.
            was = f"# {flag}: True\n" in lines
            if was != now:
                option = "scheduler" if flag == "on_cluster" else flag
                raise UsageError(f"numbaconv bench: --resume: {path} was written "
                                 f"{'with' if was else 'without'} --{option}; use the same "
                                 f"--{option} so that its rows are comparable")
        lines = [line for line in lines if not line.startswith("#")]
        reader = csv.DictReader(lines)
        if reader.fieldnames and list(reader.fieldnames) != columns:
            raise UsageError(f"numbaconv bench: --resume: {path} has columns "
                             f"{','.join(reader.fieldnames)}, this run would write "
                             f"{','.join(columns)}; use the same --compare")
        return [{k: _parse_cell(k, v or "") for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as err:
        raise UsageError(f"numbaconv bench: --resume: cannot read {path}: {err}") from None


def _cell(value) -> str:
    return "-" if value is None else value


class _Table:
    """The stdout table; column widths fit the names and shapes of the sweep."""

    def __init__(self, peers: list[str], name_width: int, shape_width: int):
        self.peers, self.nw, self.sw = peers, max(name_width, 4), max(shape_width, 5)

    def header(self) -> str:
        cells = [f"{'name':<{self.nw}}", f"{'shape':<{self.sw}}", f"{'lay':<4}",
                 f"{'dtype':<7}", f"{'thr':>3}", f"{'algorithm':<16}", f"{'ms':>9}",
                 f"{'first ms':>9}", f"{'GFLOP/s':>7}", f"{'%sgemm':>6}", f"{'%gemm':>6}",
                 f"{'%i2c':>5}"]
        for peer in self.peers:
            cells += [f"{peer[:6] + ' ms':>9}", f"{'vs':>7}"]
        cells.append("check")
        return " ".join(cells)

    def row(self, row: dict) -> str:
        cells = [f"{row['name']:<{self.nw}}", f"{row['shape']:<{self.sw}}",
                 f"{row['layout']:<4}", f"{row['dtype']:<7}", f"{row['threads']:>3}",
                 f"{row['algorithm']:<16}", f"{row['median_ms']:>9.3f}",
                 f"{row['first_call_ms']:>9.1f}", f"{row['gflops']:>7.1f}",
                 f"{row['pct_sgemm']:>6.1f}", _opt(row.get("pct_own_gemm"), 6),
                 _opt(row.get("im2col_pct"), 5)]
        for peer in self.peers:
            ms, ratio = row.get(f"{peer}_ms"), row.get(f"vs_{peer}")
            cells += [f"{ms:>9.3f}" if ms is not None else f"{'n/a':>9}",
                      f"{ratio:>6.2f}x" if ratio is not None else f"{'':>7}"]
        cells.append(row["check"])
        return " ".join(cells)


def _opt(value, width: int) -> str:
    return f"{value:>{width}.1f}" if value is not None else f"{'-':>{width}}"


class _Progress:
    """A progress bar on stderr, only when stderr is a terminal (never in a pipe or a log)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.width = total, 0
        self.enabled = enabled and total > 0 and sys.stderr.isatty()

    def show(self, done: int, label: str) -> None:
        if self.enabled:
            filled = int(30 * done / self.total)
            text = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} {label}"
            text = text[: shutil.get_terminal_size().columns - 1]  # a wrapped line stays
            self.width = max(self.width, len(text))
            sys.stderr.write(f"\r{text:<{self.width}}")
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def _check_output_path(path: str | None, option: str) -> None:
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(folder):
        raise UsageError(f"numbaconv bench: {option}: cannot write {path}: "
                         + ("it is a directory" if os.path.isdir(path)
                            else f"no directory {folder}"))


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def _check_bench_args(args) -> str | None:
    """The checks argparse cannot make; returns the plot's path, or None without matplotlib."""
    algorithms = _algorithm_names()
    if args.algorithm != "auto" and args.algorithm not in algorithms:
        raise UsageError(f"numbaconv bench: --algorithm: expected auto or one of "
                         f"{', '.join(algorithms)}, got {args.algorithm!r}")
    import numba

    if max(args.threads) > numba.config.NUMBA_NUM_THREADS:
        raise UsageError(f"numbaconv bench: --threads: at most "
                         f"{numba.config.NUMBA_NUM_THREADS} on this machine, got "
                         f"{max(args.threads)}")
    if args.resume and not args.csv:
        raise UsageError("numbaconv bench: --resume needs --csv PATH")
    for option in ("isolate", "network"):
        if args.scheduler and getattr(args, option):
            raise UsageError(f"numbaconv bench: --{option} does not combine with --scheduler "
                             "(the peers are timed in the worker's process)")
    for path, option in ((args.csv, "--csv"), (args.json, "--json"), (args.plot, "--plot")):
        _check_output_path(path, option)
    if args.plot and os.path.splitext(args.plot)[1].lower() not in PLOT_FORMATS:
        raise UsageError(f"numbaconv bench: --plot: expected a file name ending in "
                         f"{', '.join(PLOT_FORMATS)}, got {args.plot!r}")
    if args.plot and not _have_matplotlib():
        _note(f"note: --plot {args.plot}: matplotlib is not installed (pip install "
              f"'numbaconv[plot]'); going on without the plot")
        return None
    return args.plot


def _plan_sweep(args):
    """The run's :class:`numbaconv.bench.Sweep` and plot path, after the arguments are checked.

    With ``--resume``, the sweep holds the CSV file's rows and leaves them out.
    """
    from . import bench

    try:
        layers = bench.load_suite(args.suite)
    except ValueError as err:
        raise UsageError(f"numbaconv bench: {err}") from None
    plot_path = _check_bench_args(args)
    try:
        sweep = bench.Sweep.plan(layers, batches=args.batch, layouts=args.layout,
                                 dtypes=args.dtype, threads=args.threads,
                                 algorithm=args.algorithm, prepack=args.prepack,
                                 compare=args.compare, repeat=args.repeat,
                                 isolate=args.isolate, network=args.network, note=_note)
    except ValueError as err:
        raise UsageError(f"numbaconv bench: {err}") from None
    if args.scheduler:
        from .bench import cluster

        try:
            sweep.client = cluster.connect(args.scheduler)
        except ValueError as err:
            raise UsageError(f"numbaconv bench: {err}") from None
    try:
        if args.resume and os.path.exists(args.csv):
            sweep.resume(_read_rows(args.csv, sweep.columns,
                                    {"isolate": args.isolate, "prepack": args.prepack,
                                     "on_cluster": bool(args.scheduler)}))
    except UsageError:
        if sweep.client is not None:
            sweep.client.close()
        raise
    return sweep, plot_path


def _print_header(say, machine: dict, sweep, args) -> None:
    say(f"# {machine['cpu']}, {machine['cores']} cores ({machine['simd']}); numba "
        f"{machine['numba']} ({machine['threading_layer']}); BLAS sgemm {sweep.sgemm:.1f} "
        "GFLOP/s")
    say(f"# kernels: {machine['isa']}")
    peers = sweep.peers
    if args.isolate and peers:
        say(f"# peers isolated: {', '.join(peers)} each timed in a Python process of its own")
    elif peers and sweep.client is not None:
        say(f"# peers timed in each worker's process: {', '.join(peers)}")
    elif peers:  # measured: numbaconv ran 2x slower for tens of ms after ONNX Runtime's calls
        say(f"# peers timed in this process: {', '.join(peers)}; a thread pool that spins after "
            "its calls slows the next library's, use --isolate for fair ratios")
    if args.prepack:
        say("# numbaconv's weights packed beforehand (pack_weight), not timed")
    if sweep.client is not None:
        workers = sweep.client.scheduler_info().get("workers", {})
        say(f"# rows timed on the Dask cluster at {args.scheduler} ({len(workers)} workers), "
            "one per worker at a time, each row's %sgemm against its worker's sgemm; the "
            "cpu column says where (the sgemm above is this machine's)")
    if sweep.done:
        say(f"# resuming: {len(sweep.done)} row(s) already in {args.csv}, {len(sweep.configs)} "
            "to run")


def _open_csv(args, machine: dict, columns: list[str]):
    """The --csv file (appended to with --resume) and its writer; (None, None) without."""
    if not args.csv:
        return None, None
    appending = args.resume and os.path.exists(args.csv) and os.path.getsize(args.csv) > 0
    csv_file = open(args.csv, "a" if appending else "w", newline="")
    if not appending:
        for key, value in machine.items():
            csv_file.write(f"# {key}: {value}\n")
    writer = csv.DictWriter(csv_file, fieldnames=columns, extrasaction="ignore")
    if not appending:
        writer.writeheader()
        csv_file.flush()
    return csv_file, writer


def cmd_bench(args) -> int:
    """``numbaconv bench``: time a sweep, print the table, write CSV/JSON/plot."""
    from . import bench
    from .bench.cluster import WorkerFailed

    sweep, plot_path = _plan_sweep(args)
    machine = sweep.measure_machine(" ".join(["numbaconv", *args.argv]))
    say = (lambda *a: None) if args.quiet else print
    _print_header(say, machine, sweep, args)
    table = _Table(sweep.peers, max(len(layer.name) for layer in sweep.layers),
                   max(len(layer.describe(n)) for layer in sweep.layers for n in args.batch))
    say(table.header())
    csv_file, writer = _open_csv(args, machine, sweep.columns)
    progress = _Progress(len(sweep.configs), enabled=not args.quiet)

    def on_row(row: dict) -> None:
        if writer:
            writer.writerow({k: (float(f"{v:.6g}") if isinstance(v, float) else v)
                             for k, v in row.items()})
            csv_file.flush()  # an interrupted sweep keeps every finished row
        progress.clear()
        say(table.row(row))

    status = 0
    try:
        sweep.run(on_row, progress)
    except KeyboardInterrupt:
        progress.clear()
        print(f"\ninterrupted: {len(sweep.rows)} row(s) of this run kept", file=sys.stderr)
        status = 130
    except WorkerFailed as err:
        progress.clear()
        print(f"error: {err}; {len(sweep.rows)} row(s) of this run kept", file=sys.stderr)
        status = 1
    finally:
        if csv_file:
            csv_file.close()
        if sweep.client is not None:
            sweep.client.close()
    everything = sweep.earlier + sweep.rows
    if everything and not args.quiet:
        _print_totals(everything, sweep.peers)
        _print_networks(sweep.networks)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "columns": sweep.columns, "rows": everything}
                      | ({"networks": sweep.networks} if args.network else {}), f, indent=1)
    if plot_path and everything:
        bench.plot(everything, plot_path, sweep.sgemm, sweep.layers,
                   title=f"numbaconv bench --suite {os.path.basename(args.suite)}: "
                         f"{machine['cpu']}, {machine['cores']} cores")
        say(f"# plot: {plot_path}")
    if any(r["check"] != "ok" for r in sweep.rows):
        print("error: some results did not match the baseline (see the check column)",
              file=sys.stderr)
        status = status or 1
    return status


def _print_networks(networks: list[dict]) -> None:
    for net in networks:
        n = net["layers"]
        print(f"network N={net['batch']} {net['layout']} {net['dtype']} {net['threads']} thr: "
              f"numbaconv {net['median_ms']:.2f} ms for the {n} layer{'s' * (n != 1)} back "
              f"to back, {net['median_ms'] / net['rows_ms']:.2f}x the sum of their rows")


def _print_totals(rows: list[dict], peers: list[str]) -> None:
    from .bench import table_key

    groups: dict = {}
    for r in rows:
        groups.setdefault(table_key(r), []).append(r)
    for (n, layout, dtype, t), rs in groups.items():
        ours = sum(r["median_ms"] for r in rs)
        work = sum(r["gflop"] for r in rs)
        text = (f"total N={n} {layout} {dtype} {t} thr: numbaconv {ours:.2f} ms "
                f"({work / ours * 1e3:.1f} GFLOP/s)")
        for p in peers:
            times = [r.get(f"{p}_ms") for r in rs]
            if None in times:
                text += f", {p} n/a"
                continue
            theirs = sum(times)
            text += f", {p} {theirs:.2f} ms (numbaconv is {theirs / ours:.2f}x)"
        print(text)


def main(argv=None) -> int:
    """Run one command; returns the exit status (0, 1, 2 or 130).

    Bad arguments print one line to stderr and return 2, never a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError("numbaconv: expected a command: bench, explain or info "
                             "(numbaconv --help says more)")
        args.argv = argv
        from . import machine

        try:
            machine.variant()  # a bad NUMBACONV_ISA is a usage error, not a traceback
        except ValueError as err:
            raise UsageError(f"numbaconv: {err}") from None
        return {"bench": cmd_bench, "explain": cmd_explain, "info": cmd_info}[args.command](args)
    except UsageError as err:
        print(str(err).splitlines()[0], file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
