"""The ``numbaconv`` command line: ``bench``, ``explain`` and ``info``.

Exit status: 0 on success, 2 with a one-line message on bad arguments,
130 when a sweep is interrupted (the rows already written are kept).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

FIXED_COLUMNS = ["name", "shape", "batch", "layout", "dtype", "threads", "requested_algorithm",
                 "algorithm", "first_call_ms", "median_ms", "best_ms", "gflops", "pct_sgemm",
                 "check"]


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
    import numba

    from .bench import SUITES

    parser = _Parser(prog="numbaconv", description="Fast CPU convolution in Numba: tools.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    b = sub.add_parser("bench", help="time conv2d over a suite of layer shapes")
    b.add_argument("--suite", default="resnet50",
                   help=f"{', '.join(sorted(SUITES))}, or a JSON file of layers")
    b.add_argument("--batch", type=_positive_int, nargs="+", default=[1])
    b.add_argument("--layout", nargs="+", default=["NCHW"], choices=["NCHW", "NHWC"])
    b.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "float64"])
    b.add_argument("--threads", type=_positive_int, nargs="+",
                   default=[numba.config.NUMBA_NUM_THREADS])
    b.add_argument("--algorithm", default="auto",
                   help="auto, or an algorithm name to force (see numbaconv explain)")
    b.add_argument("--compare", nargs="*", default=None,
                   help="peers: numpy, torch (default: numpy plus whichever are installed)")
    b.add_argument("--repeat", type=_positive_int, default=5, help="timed calls per row")
    b.add_argument("--csv", metavar="PATH")
    b.add_argument("--json", metavar="PATH")
    b.add_argument("--resume", action="store_true",
                   help="skip rows already in the --csv file and append to it")
    b.add_argument("--quiet", action="store_true", help="no table, no progress")

    e = sub.add_parser("explain", help="print the dispatcher's plan for one problem")
    e.add_argument("--input", type=_int_list, required=True, help="e.g. 8,64,56,56")
    e.add_argument("--weight", type=_int_list, required=True, help="e.g. 64,64,3,3")
    e.add_argument("--stride", type=_int_list, default=(1,))
    e.add_argument("--padding", default="0", help="int, h,w, same or valid")
    e.add_argument("--dilation", type=_int_list, default=(1,))
    e.add_argument("--groups", type=_positive_int, default=1)
    e.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"])
    e.add_argument("--padding-mode", default="zeros",
                   choices=["zeros", "reflect", "replicate", "circular"])
    e.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    e.add_argument("--algorithm", default="auto")

    sub.add_parser("info", help="versions, threading layer, BLAS, JIT cache, CPU features")
    return parser


# --------------------------------------------------------------------------
def _one_or_pair(values: tuple[int, ...], name: str):
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values
    raise UsageError(f"numbaconv explain: --{name}: expected one or two integers, got {values}")


def cmd_explain(args) -> int:
    from .conv import explain

    padding = args.padding
    if padding not in ("same", "valid"):
        padding = _one_or_pair(_int_list(padding), "padding")
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
    from .bench import available_peers, machine_info

    info = machine_info()
    info["peers installed"] = ", ".join(available_peers())
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0


# --------------------------------------------------------------------------
def _read_done(path: str, columns: list[str]) -> set:
    from .bench import row_key

    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    reader = csv.DictReader(lines)
    if reader.fieldnames and list(reader.fieldnames) != columns:
        raise UsageError(f"numbaconv bench: --resume: {path} has columns {reader.fieldnames}, "
                         f"this run would write {columns}; use the same --compare")
    return {row_key(row) for row in reader}


def _format_table_row(row: dict, peers: list[str]) -> str:
    cells = [f"{row['name']:<14}", f"{row['shape']:<34}", f"{row['layout']:<4}",
             f"{row['dtype']:<7}", f"{row['threads']:>3}", f"{row['algorithm']:<11}",
             f"{row['median_ms']:>9.3f}", f"{row['gflops']:>7.1f}", f"{row['pct_sgemm']:>6.1f}"]
    for peer in peers:
        cells += [f"{row[f'{peer}_ms']:>9.3f}", f"{row[f'vs_{peer}']:>6.2f}x"]
    cells.append(row["check"])
    return " ".join(cells)


def _table_header(peers: list[str]) -> str:
    cells = [f"{'name':<14}", f"{'shape':<34}", f"{'lay':<4}", f"{'dtype':<7}", f"{'thr':>3}",
             f"{'algorithm':<11}", f"{'ms':>9}", f"{'GFLOP/s':>7}", f"{'%sgemm':>6}"]
    for peer in peers:
        cells += [f"{peer + ' ms':>9}", f"{'vs':>7}"]
    cells.append("check")
    return " ".join(cells)


def _progress(done: int, total: int, label: str) -> None:
    if sys.stderr.isatty():
        filled = int(30 * done / max(total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {label:<20}")
        sys.stderr.flush()


def cmd_bench(args) -> int:
    from . import bench
    from ._plan import ALGORITHMS

    try:
        layers = bench.load_suite(args.suite)
    except ValueError as err:
        raise UsageError(f"numbaconv bench: {err}") from None
    if args.algorithm != "auto" and args.algorithm not in ALGORITHMS:
        raise UsageError(f"numbaconv bench: --algorithm: expected auto or one of "
                         f"{list(ALGORITHMS)}, got {args.algorithm!r}")
    import numba

    if max(args.threads) > numba.config.NUMBA_NUM_THREADS:
        raise UsageError(f"numbaconv bench: --threads: at most "
                         f"{numba.config.NUMBA_NUM_THREADS} on this machine, got "
                         f"{max(args.threads)}")
    if args.resume and not args.csv:
        raise UsageError("numbaconv bench: --resume needs --csv PATH")
    installed = bench.available_peers()
    if args.compare is None:
        peers = installed
    else:
        peers = []
        for peer in args.compare:
            if peer not in bench.PEERS:
                raise UsageError(f"numbaconv bench: --compare: unknown peer {peer!r}; known: "
                                 f"{sorted(bench.PEERS)}")
            if peer not in installed:
                print(f"note: {peer} is not installed; skipping it", file=sys.stderr)
            elif peer not in peers:
                peers.append(peer)
    columns = FIXED_COLUMNS + [c for p in peers for c in (f"{p}_ms", f"vs_{p}")]

    done = set()
    if args.resume and os.path.exists(args.csv):
        done = _read_done(args.csv, columns)
    configs = [c for c in bench.configurations(layers, args.batch, args.layout, args.dtype,
                                               args.threads, args.algorithm)
               if (c["layer"].name, c["batch"], c["layout"], c["dtype"], c["threads"],
                   c["algorithm"]) not in done]

    machine = bench.machine_info()
    sgemm = bench.sgemm_gflops()
    machine["sgemm_gflops"] = round(sgemm, 1)
    say = (lambda *a: None) if args.quiet else print
    say(f"# {machine['cpu']}, {machine['cores']} cores ({machine['simd']}); numba "
        f"{machine['numba']}; OpenBLAS sgemm {sgemm:.1f} GFLOP/s")
    if done:
        say(f"# resuming: {len(done)} row(s) already in {args.csv}")
    say(_table_header(peers))

    csv_file = writer = None
    if args.csv:
        appending = args.resume and os.path.exists(args.csv) and os.path.getsize(args.csv) > 0
        csv_file = open(args.csv, "a" if appending else "w", newline="")
        if not appending:
            for key, value in machine.items():
                csv_file.write(f"# {key}: {value}\n")
        writer = csv.DictWriter(csv_file, fieldnames=columns, extrasaction="ignore")
        if not appending:
            writer.writeheader()
    rows, status = [], 0
    try:
        for i, cfg in enumerate(configs):
            _progress(i, len(configs), cfg["layer"].name) if not args.quiet else None
            row = bench.bench_one(cfg, peers, args.repeat, sgemm)
            rows.append(row)
            if writer:
                writer.writerow({k: (round(v, 4) if isinstance(v, float) else v)
                                 for k, v in row.items()})
                csv_file.flush()  # an interrupted sweep keeps every finished row
            if not args.quiet and sys.stderr.isatty():
                sys.stderr.write("\r" + " " * 60 + "\r")
            say(_format_table_row(row, peers))
    except KeyboardInterrupt:
        print(f"\ninterrupted: {len(rows)} row(s) kept", file=sys.stderr)
        status = 130
    finally:
        if csv_file:
            csv_file.close()
    if rows and not args.quiet:
        _print_totals(rows, peers)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=1)
    if any(r["check"] != "ok" for r in rows):
        print("error: some results did not match the baseline (see the check column)",
              file=sys.stderr)
        status = status or 1
    return status


def _print_totals(rows: list[dict], peers: list[str]) -> None:
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["batch"], r["layout"], r["dtype"], r["threads"]), []).append(r)
    for (n, layout, dtype, t), rs in groups.items():
        ours = sum(r["median_ms"] for r in rs)
        flops = sum(r["gflops"] * r["median_ms"] for r in rs) / 1e3  # GFLOP
        text = (f"total N={n} {layout} {dtype} {t} thr: numbaconv {ours:.2f} ms "
                f"({flops / ours * 1e3:.1f} GFLOP/s)")
        for p in peers:
            theirs = sum(r[f"{p}_ms"] for r in rs)
            text += f", {p} {theirs:.2f} ms (numbaconv is {theirs / ours:.2f}x)"
        print(text)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return {"bench": cmd_bench, "explain": cmd_explain, "info": cmd_info}[args.command](args)
    except UsageError as err:
        print(str(err).splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
