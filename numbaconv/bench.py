"""Benchmark sweeps: suites of layer shapes, peers to compare with, timing.

``python -m numbaconv bench`` is a thin front end (``cli.py``) over
:func:`run`.  The same ``PEERS`` registry serves the command line, the
pytest-benchmark suite under ``benchmarks/`` and the optional-peer tests.

Timing rule: each implementation is timed in its own block (first call,
one warm-up, then ``repeat`` timed calls), because thread pools left
spinning by one library slow the next; the median is the figure.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable

import numpy as np

from . import _args, _threads
from .conv import conv2d_with, explain


# --------------------------------------------------------------------------
# Suites
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Layer:
    name: str
    c: int
    h: int
    w: int
    o: int
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    def shapes(self, n: int, layout: str):
        lay = _args.layout_of(layout)
        return (lay.x_shape(n, self.c, self.h, self.w),
                lay.w_shape(self.o, self.c // self.groups, self.kernel, self.kernel))

    def conv_kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def describe(self, n: int) -> str:
        extra = f" g{self.groups}" if self.groups > 1 else ""
        extra += f" d{self.dilation}" if self.dilation > 1 else ""
        return (f"N{n} C{self.c} {self.h}x{self.w} -> O{self.o} k{self.kernel} "
                f"s{self.stride} p{self.padding}{extra}")


def _resnet50() -> list[Layer]:
    # (C, H=W, O, kernel, stride, pad): the distinct conv shapes of ResNet-50.
    shapes = [(3, 224, 64, 7, 2, 3), (64, 56, 64, 1, 1, 0), (64, 56, 64, 3, 1, 1),
              (64, 56, 256, 1, 1, 0), (256, 56, 64, 1, 1, 0), (128, 56, 128, 3, 2, 1),
              (128, 28, 128, 3, 1, 1), (512, 28, 128, 1, 1, 0), (256, 14, 256, 3, 1, 1),
              (1024, 14, 256, 1, 1, 0), (512, 7, 512, 3, 1, 1), (512, 7, 2048, 1, 1, 0)]
    return [Layer(f"resnet50.{i:02d}", c, hw, hw, o, k, s, p)
            for i, (c, hw, o, k, s, p) in enumerate(shapes, 1)]


SUITES: dict[str, Callable[[], list[Layer]]] = {"resnet50": _resnet50}


def load_suite(name: str) -> list[Layer]:
    """A built-in suite by name, or a JSON file of layer objects."""
    if name in SUITES:
        return SUITES[name]()
    if not os.path.exists(name):
        raise ValueError(f"--suite: expected one of {sorted(SUITES)} or a JSON file, got "
                         f"{name!r}")
    try:
        with open(name) as f:
            items = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--suite: cannot read {name}: {err}") from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"--suite: {name} must hold a non-empty JSON list of layers")
    fields = {f.name for f in dataclasses.fields(Layer)}
    need = {"name", "C", "H", "W", "O", "kernel"}
    layers = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not need <= set(item):
            raise ValueError(f"--suite: layer {i} of {name} needs keys {sorted(need)}, got "
                             f"{item!r}")
        unknown = set(item) - {k.upper() if k in "chwo" else k for k in fields}
        if unknown:
            raise ValueError(f"--suite: layer {i} of {name} has unknown keys {sorted(unknown)}")
        kw = {k.lower() if k in "CHWO" else k: v for k, v in item.items()}
        try:
            layer = Layer(**kw)
            explain(layer.shapes(1, "NCHW")[0], layer.shapes(1, "NCHW")[1],
                    **layer.conv_kwargs())
        except (TypeError, ValueError) as err:
            raise ValueError(f"--suite: layer {i} ({item.get('name')}) of {name}: {err}") from None
        layers.append(layer)
    return layers


# --------------------------------------------------------------------------
# The plain-NumPy baseline and the peers
# --------------------------------------------------------------------------
def numpy_conv2d(x, w, stride=1, padding=0, dilation=1, groups=1, layout="NCHW"):
    """The tutorial recipe: np.pad, one strided-slice copy per tap, then ``@``."""
    s, p, d = stride, padding, dilation
    if layout == "NCHW":
        n, c, h, wd = x.shape
        o, cg, k, _ = w.shape
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    else:
        n, h, wd, c = x.shape
        k, _, cg, o = w.shape
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ph = (h + 2 * p - d * (k - 1) - 1) // s + 1
    pw = (wd + 2 * p - d * (k - 1) - 1) // s + 1
    g, og = groups, o // groups
    if layout == "NCHW":
        cols = np.empty((n, c, k, k, ph, pw), x.dtype)
        for i in range(k):
            for j in range(k):
                cols[:, :, i, j] = xp[:, :, i * d : i * d + s * ph : s, j * d : j * d + s * pw : s]
        out = w.reshape(g, og, cg * k * k) @ cols.reshape(n, g, cg * k * k, ph * pw)
        return out.reshape(n, o, ph, pw)
    cols = np.empty((n, ph, pw, k, k, c), x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, :, i, j] = xp[:, i * d : i * d + s * ph : s, j * d : j * d + s * pw : s]
    a = cols.reshape(n * ph * pw, k * k, g, cg).transpose(2, 0, 1, 3).reshape(g, -1, k * k * cg)
    b = w.reshape(k * k, cg, g, og).transpose(2, 0, 1, 3).reshape(g, k * k * cg, og)
    return (a @ b).transpose(1, 0, 2).reshape(n, ph, pw, o)


def _numpy_peer(layer: Layer, x, w, layout: str):
    kw = layer.conv_kwargs()
    return lambda: numpy_conv2d(x, w, layout=layout, **kw)


def _torch_peer(layer: Layer, x, w, layout: str):
    import torch

    torch.set_num_threads(_threads.get_num_threads())
    kw = layer.conv_kwargs()
    if layout == "NCHW":
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    else:  # channels_last memory format: the NHWC buffer, seen as NCHW
        xt = torch.from_numpy(x).permute(0, 3, 1, 2)
        wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).contiguous(
            memory_format=torch.channels_last)

    def call():
        with torch.no_grad():
            y = torch.nn.functional.conv2d(xt, wt, **kw)
        return y.numpy() if layout == "NCHW" else y.permute(0, 2, 3, 1).numpy()

    return call


# name -> setup(layer, x, w, layout) -> zero-argument callable returning the output
PEERS: dict[str, Callable] = {"numpy": _numpy_peer, "torch": _torch_peer}
PEER_MODULES = {"numpy": "numpy", "torch": "torch"}


def available_peers() -> list[str]:
    import importlib.util

    return [p for p, mod in PEER_MODULES.items() if importlib.util.find_spec(mod) is not None]


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------
@dataclasses.dataclass
class Timing:
    first: float  # seconds of the very first call (includes compilation)
    median: float
    best: float
    result: object = dataclasses.field(repr=False, default=None)


def measure(fn: Callable, repeat: int) -> Timing:
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    fn()  # warm-up: caches, page faults, spinning-up thread pools
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(first, statistics.median(times), min(times), result)


def sgemm_gflops(size: int = 1536, repeat: int = 5) -> float:
    """OpenBLAS float32 GEMM rate on a square problem, best of ``repeat``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    t = measure(lambda: a @ b, repeat)
    return 2 * size**3 / t.best / 1e9


# --------------------------------------------------------------------------
# Machine description (also ``numbaconv info``)
# --------------------------------------------------------------------------
def machine_info() -> dict:
    import numba
    import threadpoolctl

    cpu, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("", platform.machine()):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f") if f in have]
                    break
    except OSError:
        pass
    blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('threading_layer')}, "
        f"{i.get('num_threads')} threads, {os.path.basename(i.get('filepath', ''))})"
        for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"
    ]
    from . import __version__, config

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "simd": " ".join(flags),
        "python": platform.python_version(),
        "numbaconv": __version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "blas": "; ".join(blas) or "unknown",
        "threading_layer": _threads.threading_layer() or "not started",
        "openmp_spin": _threads.spin_policy,
        "numba_threads": numba.get_num_threads(),
        "numba_cache_dir": numba.config.CACHE_DIR or "next to the package (or ~/.cache/numba)",
        "disk_cache": config.disk_cache,
        "max_workspace_bytes": config.max_workspace_bytes,
    }


# --------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------
def _rng_arrays(layer: Layer, n: int, layout: str, dtype):
    rng = np.random.default_rng(0)
    xs, ws = layer.shapes(n, layout)
    x = rng.standard_normal(xs, dtype=np.float64).astype(dtype)
    fan_in = layer.c // layer.groups * layer.kernel**2
    w = (rng.standard_normal(ws) / np.sqrt(fan_in)).astype(dtype)
    return x, w


def _close(a, b, dtype) -> bool:
    tol = 2e-4 if np.dtype(dtype) == np.float32 else 1e-9
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and float(np.abs(a - b).max(initial=0)) <= tol * max(
        1.0, float(np.abs(b).max(initial=0)))


def configurations(layers, batches, layouts, dtypes, threads, algorithm):
    for t in threads:
        for dtype in dtypes:
            for layout in layouts:
                for n in batches:
                    for layer in layers:
                        yield dict(layer=layer, batch=n, layout=layout, dtype=dtype, threads=t,
                                   algorithm=algorithm)


def row_key(row: dict) -> tuple:
    """What identifies a row for --resume."""
    return (row["name"], int(row["batch"]), row["layout"], row["dtype"], int(row["threads"]),
            row["requested_algorithm"])


def bench_one(cfg: dict, compare: Iterable[str], repeat: int, sgemm: float) -> dict:
    layer, n, layout, dtype = cfg["layer"], cfg["batch"], cfg["layout"], cfg["dtype"]
    x, w = _rng_arrays(layer, n, layout, dtype)
    kw = layer.conv_kwargs()
    with _threads.threads(cfg["threads"]):
        plan = explain(x, w, layout=layout, algorithm=cfg["algorithm"], **kw)
        ours = measure(lambda: conv2d_with(x, w, layout=layout, algorithm=cfg["algorithm"],
                                           **kw), repeat)
        flops = plan.flops
        row = {
            "name": layer.name, "shape": layer.describe(n), "batch": n, "layout": layout,
            "dtype": np.dtype(dtype).name, "threads": cfg["threads"],
            "requested_algorithm": cfg["algorithm"], "algorithm": plan.algorithm,
            "first_call_ms": ours.first * 1e3, "median_ms": ours.median * 1e3,
            "best_ms": ours.best * 1e3, "gflops": flops / ours.median / 1e9,
            "pct_sgemm": 100 * flops / ours.median / 1e9 / sgemm, "check": "ok",
        }
        for peer in compare:
            fn = PEERS[peer](layer, x, w, layout)
            t = measure(fn, repeat)
            row[f"{peer}_ms"] = t.median * 1e3
            row[f"vs_{peer}"] = t.median / ours.median  # > 1: numbaconv is faster
            if not _close(ours.result, t.result, dtype):
                row["check"] = f"MISMATCH vs {peer}"
    return row
