"""The plot: GFLOP/s per layer per implementation, one panel per layout and table."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from .._args import LAYOUTS
from .peers import PEERS
from .suites import Layer

NUMBACONV_COLOUR = "#1f77b4"  # the peers' colours are in their records (PEERS)
def _short_names(names: list[str]) -> dict[str, str]:
    """Drop a prefix common to every name ("resnet50.01" -> "01")."""
    prefix = os.path.commonprefix(names)
    prefix = prefix[: prefix.rfind(".") + 1]
    return {n: n[len(prefix):] or n for n in names}


def plot(rows: list[dict], path: str, sgemm: float, layers: Iterable[Layer] = (),
         title: str | None = None) -> None:
    """Bar chart of GFLOP/s per layer per implementation, written to ``path``.

    One panel per layout, NCHW and NHWC side by side (or, when there are too
    many bars for that, NCHW above NHWC), all sharing the y axis; one panel
    row per (batch, dtype, threads) in the sweep.  Each
    implementation's GFLOP/s is the row's work (``gflop``) over its median
    time; the BLAS float32 GEMM rate measured at the start of the run is a
    dashed line.  Needs matplotlib (the ``plot`` extra); the file format
    follows the extension (``.png``, ``.svg``, ``.pdf``).

    Examples
    --------
    >>> import os, tempfile
    >>> from numbaconv.bench import plot
    >>> row = dict(name="tiny", batch=1, layout="NCHW", dtype="float32", threads=1,
    ...            gflop=0.002, median_ms=0.1, numpy_ms=0.2, check="ok")
    >>> path = os.path.join(tempfile.mkdtemp(), "r.png")
    >>> plot([row], path, sgemm=100.0)
    >>> os.path.getsize(path) > 0
    True
    """
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("plot: no rows to plot")
    impls = ["numbaconv"] + [p for p in PEERS if any(f"{p}_ms" in r for r in rows)]
    colours = {"numbaconv": NUMBACONV_COLOUR} | {p: PEERS[p].colour for p in impls[1:]}
    names = list(dict.fromkeys(r["name"] for r in rows))
    present = {str(r["layout"]) for r in rows}
    layouts = [name for name in LAYOUTS if name in present]
    groups = list(dict.fromkeys((r["batch"], r["dtype"], r["threads"]) for r in rows))
    by_name = {layer.name: layer for layer in layers}
    short = _short_names(names)
    panels: dict[tuple, dict[str, dict]] = {}  # (layout, batch, dtype, threads): name -> row
    for r in rows:
        panels.setdefault((str(r["layout"]), r["batch"], r["dtype"], r["threads"]), {})[
            r["name"]] = r
    ticks = [f"{short[n]} {by_name[n].label()}" if n in by_name else short[n] for n in names]

    width = min(max(4.5, 0.12 * len(names) * (len(impls) + 1.5) + 1.2), 16)
    # Two layouts side by side while that stays readable; with many bars per
    # panel, NCHW above NHWC instead, layer under layer.
    stacked = len(layouts) > 1 and width > 9
    nrows, ncols = (len(groups) * len(layouts), 1) if stacked else (len(groups), len(layouts))
    fig = Figure(figsize=(width * ncols, 1.0 + 3.0 * nrows + 0.9), layout="constrained", dpi=100)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    bar = 0.8 / len(impls)
    x = np.arange(len(names))
    for gi, (n, dtype, threads) in enumerate(groups):
        for li, layout in enumerate(layouts):
            row, col = (gi * len(layouts) + li, 0) if stacked else (gi, li)
            ax = axes[row, col]
            panel = panels.get((layout, n, dtype, threads), {})
            for ii, impl in enumerate(impls):
                key = "median_ms" if impl == "numbaconv" else f"{impl}_ms"
                values = [panel[name]["gflop"] / panel[name][key] * 1e3
                          if name in panel and panel[name].get(key) else np.nan
                          for name in names]
                ax.bar(x + (ii - (len(impls) - 1) / 2) * bar, values, bar * 0.95,
                       color=colours[impl], label=impl, zorder=2)
            ax.axhline(sgemm, color="#d62728", linestyle="--", linewidth=1.2, zorder=3,
                       label=f"BLAS sgemm, float32 ({sgemm:.0f} GFLOP/s)")
            ax.set_title(f"{layout}, batch {n}, {dtype}, {threads} thread"
                         f"{'s' if threads != 1 else ''}", fontsize=10)
            last = row == nrows - 1
            ax.set_xticks(x, ticks if last else [""] * len(names), rotation=45, ha="right",
                          rotation_mode="anchor", fontsize=8)
            ax.set_xlim(-0.6, len(names) - 0.4)
            ax.grid(axis="y", color="0.88", zorder=0)
            ax.set_axisbelow(True)
            if col == 0:
                ax.set_ylabel("GFLOP/s (higher is better)")
            if last:
                ax.set_xlabel("layer")
    top = max((r["gflop"] / r[k] * 1e3 for r in rows
               for k in ["median_ms"] + [f"{p}_ms" for p in impls[1:]] if r.get(k)),
              default=0.0)
    axes[0, 0].set_ylim(0, 1.08 * max(top, sgemm))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles, labels = handles[1:] + handles[:1], labels[1:] + labels[:1]  # the sgemm line last
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path)
