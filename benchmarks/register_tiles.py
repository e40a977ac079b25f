"""Candidate register tiles against the built-in variants, layer by layer, on this CPU.

The tool for choosing a variant's tile (``numbaconv/machine.py``): each
candidate ``MRxNV`` (rows x vectors per row, on the vector width of
``--base``) is added to the variants table, and it takes turns with the
named variants in one process, round by round, on ResNet-50's stem, its
3x3 layers and two 1x1 layers (float32, batch ``--batch``).  Prints GFLOP/s,
medians over the rounds.

    python benchmarks/register_tiles.py --base avx512 8x2 10x2 12x2 6x4 --compare avx2
    NUMBACONV_CACHE=0 python benchmarks/register_tiles.py --layout NHWC 10x2

NR = NV x lanes must be a power of two.  Candidates compile on first use
(several seconds each).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

import numbaconv
from numbaconv import machine
from numbaconv.bench import measure

LAYERS = [  # (C, H=W, O, kernel, stride, padding)
    (64, 56, 64, 3, 1, 1), (128, 28, 128, 3, 1, 1), (256, 14, 256, 3, 1, 1),
    (512, 7, 512, 3, 1, 1), (3, 224, 64, 7, 2, 3), (256, 56, 64, 1, 1, 0),
    (512, 7, 2048, 1, 1, 0)]


def median_time(call, calls: int) -> float:
    return measure(call, calls).median  # the bench's rule: first call, warm-up, then calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tiles", nargs="*", help="candidates as MRxNV, e.g. 10x2")
    parser.add_argument("--base", default=machine.variant(),
                        help="the variant whose vectors the candidates use (default: in use)")
    parser.add_argument("--compare", nargs="*", default=[], help="built-in variants beside them")
    parser.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=11)
    args = parser.parse_args()
    base = machine.VARIANTS[args.base]
    names = [args.base, *args.compare]
    for text in args.tiles:
        mr, nv = (int(v) for v in text.lower().split("x"))
        name = f"{args.base}-{mr}x{nv}"
        machine.VARIANTS[name] = replace(base, name=name, rows=mr, vectors=nv)
        names.append(name)
    rng = np.random.default_rng(0)
    print(f"# {machine.describe()}; {args.layout}, batch {args.batch}, float32, GFLOP/s")
    print("layer" + "".join(f" {n:>14}" for n in names))
    for c, hw, o, k, s, p in LAYERS:
        x = rng.standard_normal((args.batch, c, hw, hw), dtype=np.float32)
        w = rng.standard_normal((o, c, k, k), dtype=np.float32)
        if args.layout == "NHWC":
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            w = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
        q = (hw + 2 * p - k) // s + 1
        flops = 2 * args.batch * o * c * k * k * q * q
        times: dict[str, list[float]] = {n: [] for n in names}

        def call(x=x, w=w, s=s, p=p):
            numbaconv.conv2d(x, w, stride=s, padding=p, layout=args.layout)

        before = machine.variant()
        try:
            for _ in range(args.rounds):
                for n in names:
                    machine._current = n  # candidates are not in runnable(): set directly
                    times[n].append(median_time(call, args.calls))
        finally:
            machine.set_variant(before)
        print(f"{c}x{hw}x{hw}->{o} {k}x{k}/{s}" + "".join(
            f" {flops / np.median(times[n]) / 1e9:14.1f}" for n in names), flush=True)


if __name__ == "__main__":
    main()
