"""Benchmark sweeps: suites of layer shapes, peers to compare with, timing, plots.

``numbaconv bench`` (``cli.py``) is a thin front end over this module.  The
same ``PEERS`` registry serves the command line, the pytest-benchmark suite
under ``benchmarks/`` and the optional-peer tests (``tests/test_peers.py``),
so a peer that is added here is checked against the reference at once.

Timing rule: each implementation is timed in its own block (first call,
0.1 s of warm-up calls, then ``repeat`` timed calls), because thread pools left
spinning by one library slow the next; the median is the figure.  Even so,
a peer timed in this process shares it with Numba's OpenMP pool and
OpenBLAS's: ``PeerProcess`` times a peer in a Python process of its own
instead (``numbaconv bench --isolate``).

This module imports Numba (``_threads``, ``conv``) only inside the functions
that time numbaconv, never at module level: the isolated worker loads it
without running ``numbaconv/__init__.py`` (see ``_WORKER_BOOT``), so that no
Numba thread pool exists in the process where the peer is timed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable

import numpy as np

# Only _args (NumPy only) at module level: see the module docstring.
from . import _args

__all__ = [
    "ASKED_ONLY_PEERS", "PEERS", "PEER_MODULES", "SUITES", "Layer", "PeerProcess",
    "PeerUnsupported", "Timing",
    "available_peers",
    "bench_one", "configurations", "load_suite", "machine_info", "measure", "numpy_conv2d",
    "plot", "row_key", "sgemm_gflops", "time_peer_isolated",
]


# --------------------------------------------------------------------------
# Suites
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Layer:
    """One convolution layer of a suite: square kernel, symmetric padding.

    Examples
    --------
    >>> from numbaconv.bench import Layer
    >>> stem = Layer("resnet50.01", c=3, h=224, w=224, o=64, kernel=7, stride=2, padding=3)
    >>> stem.shapes(8, "NHWC")
    ((8, 224, 224, 3), (7, 7, 3, 64))
    >>> stem.describe(8)
    'N8 C3 224x224 -> O64 k7 s2 p3'
    >>> stem.label()
    '3→64 7x7/2'
    """

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
        """(input shape, weight shape) for batch ``n`` in ``layout``."""
        lay = _args.layout_of(layout)
        return (lay.x_shape(n, self.c, self.h, self.w),
                lay.w_shape(self.o, self.c // self.groups, self.kernel, self.kernel))

    def conv_kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def describe(self, n: int) -> str:
        """The row's shape column."""
        extra = f" g{self.groups}" if self.groups > 1 else ""
        extra += f" d{self.dilation}" if self.dilation > 1 else ""
        return (f"N{n} C{self.c} {self.h}x{self.w} -> O{self.o} k{self.kernel} "
                f"s{self.stride} p{self.padding}{extra}")

    def label(self) -> str:
        """A short label for plots: channels, kernel and stride."""
        k = f"{self.kernel}x{self.kernel}" + (f"/{self.stride}" if self.stride > 1 else "")
        if self.dilation > 1:
            k += f" d{self.dilation}"
        if self.groups == self.c == self.o:
            return f"dw {self.c} {k}"
        groups = f" g{self.groups}" if self.groups > 1 else ""
        return f"{self.c}→{self.o} {k}{groups}"


def _resnet50() -> list[Layer]:
    # (C, H=W, O, kernel, stride, pad): the distinct conv shapes of ResNet-50.
    shapes = [(3, 224, 64, 7, 2, 3), (64, 56, 64, 1, 1, 0), (64, 56, 64, 3, 1, 1),
              (64, 56, 256, 1, 1, 0), (256, 56, 64, 1, 1, 0), (128, 56, 128, 3, 2, 1),
              (128, 28, 128, 3, 1, 1), (512, 28, 128, 1, 1, 0), (256, 14, 256, 3, 1, 1),
              (1024, 14, 256, 1, 1, 0), (512, 7, 512, 3, 1, 1), (512, 7, 2048, 1, 1, 0)]
    return [Layer(f"resnet50.{i:02d}", c, hw, hw, o, k, s, p)
            for i, (c, hw, o, k, s, p) in enumerate(shapes, 1)]


def _vgg16() -> list[Layer]:
    # (C, H=W, O): VGG-16's distinct 3x3/1 convolutions at 224x224 input
    # (conv1_1, conv1_2, conv2_1, conv2_2, conv3_1, conv3_2 = conv3_3,
    # conv4_1, conv4_2 = conv4_3, conv5_1 = conv5_2 = conv5_3).
    shapes = [(3, 224, 64), (64, 224, 64), (64, 112, 128), (128, 112, 128), (128, 56, 256),
              (256, 56, 256), (256, 28, 512), (512, 28, 512), (512, 14, 512)]
    return [Layer(f"vgg16.{i:02d}", c, hw, hw, o, 3, 1, 1)
            for i, (c, hw, o) in enumerate(shapes, 1)]


def _mobilenet_v2() -> list[Layer]:
    # MobileNetV2 at 224x224: the stem, then each inverted-residual block's
    # 1x1 expansion, 3x3 depthwise (groups == channels) and 1x1 projection,
    # then the final 1x1; repeated shapes are listed once.
    layers = [(3, 224, 32, 3, 2, 1, 1)]  # (C, H=W, O, kernel, stride, pad, groups)
    c, hw = 32, 112
    # (expansion t, output channels, repeats, first stride), from the paper's table 2.
    for t, out, repeats, first_stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                                          (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                          (6, 320, 1, 1)]:
        for r in range(repeats):
            s, hidden = (first_stride if r == 0 else 1), c * t
            if t != 1:
                layers.append((c, hw, hidden, 1, 1, 0, 1))
            layers.append((hidden, hw, hidden, 3, s, 1, hidden))
            hw = (hw - 1) // s + 1
            layers.append((hidden, hw, out, 1, 1, 0, 1))
            c = out
    layers.append((320, 7, 1280, 1, 1, 0, 1))
    distinct = list(dict.fromkeys(layers))
    return [Layer(f"mobilenet_v2.{i:02d}", c, hw, hw, o, k, s, p, groups=g)
            for i, (c, hw, o, k, s, p, g) in enumerate(distinct, 1)]


SUITES: dict[str, Callable[[], list[Layer]]] = {
    "resnet50": _resnet50, "vgg16": _vgg16, "mobilenet_v2": _mobilenet_v2,
}

_JSON_INTS = ("C", "H", "W", "O", "kernel", "stride", "padding", "dilation", "groups")


def load_suite(name: str) -> list[Layer]:
    """A built-in suite by name, or a JSON file of layer objects.

    A JSON suite is a list of objects with the keys ``name, C, H, W, O,
    kernel`` and optionally ``stride, padding, dilation, groups`` (integers;
    defaults 1, 0, 1, 1).  Every layer is checked as conv2d would check it.

    Raises
    ------
    ValueError
        An unknown suite, an unreadable or malformed file, or a layer whose
        shapes are impossible; the message starts with ``--suite:``.

    Examples
    --------
    >>> from numbaconv.bench import load_suite
    >>> [len(load_suite(s)) for s in ("resnet50", "vgg16", "mobilenet_v2")]
    [12, 9, 30]
    >>> load_suite("mobilenet_v2")[2]
    Layer(name='mobilenet_v2.03', c=32, h=112, w=112, o=16, kernel=1, stride=1, padding=0, \
dilation=1, groups=1)
    >>> load_suite("alexnet")
    Traceback (most recent call last):
    ...
    ValueError: --suite: expected one of ['mobilenet_v2', 'resnet50', 'vgg16'] or a JSON file, \
got 'alexnet'
    """
    from .conv import explain

    if name in SUITES:
        return SUITES[name]()
    if not os.path.isfile(name):
        raise ValueError(f"--suite: expected one of {sorted(SUITES)} or a JSON file, got "
                         f"{name!r}")
    try:
        with open(name) as f:
            items = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--suite: cannot read {name}: {err}") from None
    if not isinstance(items, list) or not items:
        raise ValueError(f"--suite: {name} must hold a non-empty JSON list of layers")
    need = {"name", "C", "H", "W", "O", "kernel"}
    layers, seen = [], set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not need <= set(item):
            raise ValueError(f"--suite: layer {i} of {name} needs keys {sorted(need)}, got "
                             f"{item!r}")
        where = f"--suite: layer {i} ({item['name']!r}) of {name}"
        unknown = set(item) - {"name", *_JSON_INTS}
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)}")
        if not isinstance(item["name"], str) or not item["name"]:
            raise ValueError(f"{where}: name: expected a non-empty string")
        if item["name"] in seen:
            raise ValueError(f"{where}: the name is used twice (names identify rows)")
        seen.add(item["name"])
        for key in _JSON_INTS:
            if key in item and not _args._is_int(item[key]):
                raise ValueError(f"{where}: {key}: expected an integer, got {item[key]!r}")
        kw = {k.lower() if k in "CHWO" else k: v for k, v in item.items()}
        try:
            layer = Layer(**kw)
            explain(*layer.shapes(1, "NCHW"), **layer.conv_kwargs())
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
        layers.append(layer)
    return layers


# --------------------------------------------------------------------------
# The plain-NumPy baseline and the peers
# --------------------------------------------------------------------------
class PeerUnsupported(NotImplementedError):
    """A peer cannot run this problem (e.g. ONNX Runtime's CPU Conv has no float64)."""


def numpy_conv2d(x, w, stride=1, padding=0, dilation=1, groups=1, layout="NCHW"):
    """The tutorial recipe: np.pad, one strided-slice copy per tap, then ``@``.

    The plain-NumPy baseline of ``numbaconv bench`` (``--compare numpy``).

    Examples
    --------
    >>> import numpy as np
    >>> from numbaconv.bench import numpy_conv2d
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> numpy_conv2d(x, np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[10., 18.],
           [42., 50.]])
    """
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


def _peer_threads(threads: int | None) -> int:
    """The thread count a peer runs with: ``threads``, or else numbaconv's current count."""
    if threads is not None:
        return threads
    from . import _threads

    return _threads.get_num_threads()


def _numpy_peer(layer: Layer, x, w, layout: str, threads: int | None = None):
    # BLAS threads are set around the whole row (threadpoolctl), not here.
    kw = layer.conv_kwargs()
    return lambda: numpy_conv2d(x, w, layout=layout, **kw)


def _torch_peer(layer: Layer, x, w, layout: str, threads: int | None = None):
    """torch.nn.functional.conv2d; NHWC runs in channels_last memory format.

    Uses the row's thread count (``torch.set_num_threads``).
    """
    import torch

    torch.set_num_threads(_peer_threads(threads))
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


def _onnxruntime_peer(layer: Layer, x, w, layout: str, threads: int | None = None, *,
                      nchwc: bool = True):
    """A one-node ONNX ``Conv`` model run by an ONNX Runtime CPU session.

    The model is built with the ``onnx`` helper API, the weight stored in it
    as an initializer (as in a deployed model).  The session runs with
    ``intra_op_num_threads`` = the row's thread count and
    ``inter_op_num_threads = 1``.  ONNX ``Conv`` is NCHW/OIHW only, so for
    NHWC the timed call includes transposing the input to NCHW and the
    output back to NHWC (the weight is transposed once, outside the timing).
    ONNX Runtime's CPU ``Conv`` has no float64 kernel: float64 rows raise
    :class:`PeerUnsupported` and are reported as n/a.

    With its default optimisations (``nchwc=True``, peer ``onnxruntime``), on
    a CPU with AVX2 or better, ONNX Runtime rewrites the node as a direct
    convolution on channel-blocked data (its ``NchwcTransformer``: the
    weight reordered once, when the session is made; the input reordered
    to NCHW8c and the output back inside each call).  ``nchwc=False``
    (peer ``onnxruntime_gemm``) turns that one optimizer off, which leaves
    its plain ``Conv``: im2col and MLAS's SGEMM, the same algorithm family
    as numbaconv's, for telling the algorithm's share of a gap from the
    implementation's.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    if x.dtype != np.float32:
        raise PeerUnsupported(f"onnxruntime: Conv has no CPU kernel for {x.dtype}")
    if layout == "NHWC":
        w = w.transpose(3, 2, 0, 1)
    k, s, p, d = layer.kernel, layer.stride, layer.padding, layer.dilation
    n, c, h, wd = _args.layout_of(layout).x_dims(x.shape)
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[k, k], strides=[s, s],
                            pads=[p, p, p, p], dilations=[d, d], group=layer.groups)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, c, h, wd])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(w), "w")])
    # Opset 13 with the IR version it came with, so that older runtimes load it too.
    model = helper.make_model_gen_version(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = _peer_threads(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"],
                                   disabled_optimizers=[] if nchwc else ["NchwcTransformer"])
    if layout == "NCHW":
        return lambda: session.run(None, {"x": x})[0]

    def call():
        y = session.run(None, {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
        return np.ascontiguousarray(y.transpose(0, 2, 3, 1))

    return call


def _jax_peer(layer: Layer, x, w, layout: str, threads: int | None = None):
    """``jax.lax.conv_general_dilated``, jitted, on the CPU backend.

    ``dimension_numbers`` is ``("NCHW", "OIHW", "NCHW")`` or
    ``("NHWC", "HWIO", "NHWC")``, so both layouts are native.  Inputs are
    placed on the device once; each timed call runs the compiled function
    and waits for it (``block_until_ready``).  float64 runs inside
    ``jax.enable_x64``.  XLA sizes its CPU thread pool once, when JAX starts,
    so ``--threads`` does not apply to this peer: it uses every core (set
    ``XLA_FLAGS`` before the run to change that).
    """
    import jax

    s, p, d = layer.stride, layer.padding, layer.dilation
    dims = ("NCHW", "OIHW", "NCHW") if layout == "NCHW" else ("NHWC", "HWIO", "NHWC")
    fn = jax.jit(lambda a, b: jax.lax.conv_general_dilated(
        a, b, window_strides=(s, s), padding=[(p, p), (p, p)], rhs_dilation=(d, d),
        dimension_numbers=dims, feature_group_count=layer.groups))
    x64 = x.dtype == np.float64
    enable_x64 = getattr(jax, "enable_x64", None)
    if enable_x64 is None:  # pragma: no cover - jax < 0.6
        from jax.experimental import enable_x64
    with enable_x64(x64):
        xa, wa = jax.device_put(x), jax.device_put(w)

    def call():
        with enable_x64(x64):
            return np.asarray(fn(xa, wa).block_until_ready())

    return call


# name -> setup(layer, x, w, layout, threads=None) -> zero-argument callable returning
# the output as a NumPy array; the setup raises PeerUnsupported for problems it cannot
# run.  threads=None means numbaconv's current count (the row's, in bench_one); the
# isolated worker, which has no Numba, passes the row's count.
PEERS: dict[str, Callable] = {
    "numpy": _numpy_peer, "torch": _torch_peer, "onnxruntime": _onnxruntime_peer,
    "jax": _jax_peer,
    "onnxruntime_gemm": functools.partial(_onnxruntime_peer, nchwc=False)}
# name -> the modules it needs (all of them must be importable)
PEER_MODULES: dict[str, tuple[str, ...]] = {"numpy": ("numpy",), "torch": ("torch",),
                                            "onnxruntime": ("onnxruntime", "onnx"),
                                            "jax": ("jax", "jaxlib"),
                                            "onnxruntime_gemm": ("onnxruntime", "onnx")}
# Peers timed only when asked for by name (``--compare``): diagnostics, not
# what a user of that library gets by default.
ASKED_ONLY_PEERS = ("onnxruntime_gemm",)


def available_peers() -> list[str]:
    """The peers whose modules are installed, in ``PEERS`` order.

    Examples
    --------
    >>> from numbaconv.bench import available_peers
    >>> available_peers()[0]
    'numpy'
    """
    import importlib.util

    return [p for p, mods in PEER_MODULES.items()
            if all(importlib.util.find_spec(m) is not None for m in mods)]


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------
@dataclasses.dataclass
class Timing:
    """Seconds: the first call (with compilation), then median and best of the timed calls."""

    first: float
    median: float
    best: float
    result: object = dataclasses.field(repr=False, default=None)


WARMUP_S = 0.1  # measure's warm-up: calls until this long has passed (at least one)
WARMUP_CALLS = 50  # ... or this many calls


def measure(fn: Callable, repeat: int) -> Timing:
    """Time ``fn()``: one first call, warm-up calls, then ``repeat`` timed calls.

    The warm-up runs for ``WARMUP_S`` (at most ``WARMUP_CALLS`` calls, at
    least one), not one call: on this shared 2-core VM, a process that had
    been waiting (numbaconv's, while ``--isolate``'s peers timed a table)
    ran its next calls up to 2x slower for tens of ms, its Numba workers
    going to sleep and waking at every launch; the first row of each
    table took 3.3-5.9 ms against 2.4-2.8 ms (ResNet-50's stem, batch 1).

    Examples
    --------
    >>> from numbaconv.bench import measure
    >>> t = measure(lambda: sum(range(1000)), repeat=3)
    >>> t.result, t.best <= t.median
    (499500, True)
    """
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    # Warm-up: caches, page faults, thread pools spinning up (see above).
    t0 = time.perf_counter()
    for _ in range(WARMUP_CALLS):
        fn()
        if time.perf_counter() - t0 >= WARMUP_S:
            break
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(first, statistics.median(times), min(times), result)


def sgemm_gflops(size: int = 1536, repeat: int = 5) -> float:
    """The BLAS float32 GEMM rate on a square problem, best of ``repeat``, in GFLOP/s.

    Examples
    --------
    >>> from numbaconv.bench import sgemm_gflops
    >>> sgemm_gflops(size=64, repeat=1) > 0
    True
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    t = measure(lambda: a @ b, repeat)
    return 2 * size**3 / t.best / 1e9


# --------------------------------------------------------------------------
# Machine description (also ``numbaconv info``)
# --------------------------------------------------------------------------
def jit_cache_dir() -> str:
    """Where Numba writes (or would write) numbaconv's compiled kernels.

    Numba tries ``NUMBA_CACHE_DIR``, then ``__pycache__`` next to the kernel
    sources, then a per-user directory (``~/.cache/numba``): the first that
    is writable wins.
    """
    from . import config

    if not config.disk_cache:
        return "off (NUMBACONV_CACHE=0): kernels are compiled in memory"
    try:
        from numba.core import caching

        from .kernels import im2col

        for cls in caching.CacheImpl._locator_classes:
            locator = cls.from_function(im2col.im2col_nchw, im2col.__file__)
            if locator is not None:
                return locator.get_cache_path()
        return "no writable directory: kernels are compiled in memory"
    except Exception:  # pragma: no cover - Numba's private API moved
        import numba

        return numba.config.CACHE_DIR or "next to the package (or ~/.cache/numba)"


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """The header of every CSV/JSON result, and ``numbaconv info``.

    CPU model, cores and SIMD flags, library versions (numbaconv, NumPy,
    Numba, and each installed peer, read from package metadata without
    importing it), BLAS library and threads, Numba's threading layer,
    thread counts, the JIT cache directory and the date.

    Examples
    --------
    >>> from numbaconv.bench import machine_info
    >>> info = machine_info()
    >>> {"cpu", "cores", "simd", "numba", "blas", "threading_layer"} <= set(info)
    True
    """
    import numba
    import threadpoolctl

    from . import _threads

    cpu, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and cpu in ("", platform.machine()):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    flags = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni",
                                         "avx512_bf16", "amx_tile") if f in have]
                    break
    except OSError:
        pass
    blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('threading_layer')}, "
        f"{i.get('num_threads')} threads, {os.path.basename(i.get('filepath', ''))})"
        for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"
    ]
    from . import __version__, config, machine

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "simd": " ".join(flags),
        "isa": machine.describe(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numbaconv": __version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": _version("llvmlite"),
    }
    for dist in ("torch", "onnxruntime", "onnx", "jax", "jaxlib", "matplotlib"):
        info[dist] = _version(dist) or "not installed"
    info.update({
        "blas": "; ".join(blas) or "unknown",
        "threading_layer": _threads.threading_layer() or "not started",
        "openmp_spin": _threads.spin_policy,
        "blas_spin": _threads.blas_spin,
        "numba_threads": numba.get_num_threads(),
        "jit_cache_dir": jit_cache_dir(),
        "numba_cache_dir": numba.config.CACHE_DIR or "(NUMBA_CACHE_DIR not set)",
        "disk_cache": config.disk_cache,
        "max_workspace_bytes": config.max_workspace_bytes,
    })
    return info


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


def configurations(layers, batches, layouts, dtypes, threads, algorithm, prepack=False):
    """Every row of a sweep, layers innermost (so a plot panel fills up first).

    ``prepack``: numbaconv gets each weight as a ``pack_weight`` result.

    Examples
    --------
    >>> from numbaconv.bench import configurations, load_suite
    >>> rows = list(configurations(load_suite("vgg16"), [1, 8], ["NCHW", "NHWC"], ["float32"],
    ...                            [2], "auto"))
    >>> len(rows), rows[0]["layer"].name, rows[-1]["batch"], rows[-1]["layout"]
    (36, 'vgg16.01', 8, 'NHWC')
    """
    for t in threads:
        for dtype in dtypes:
            for layout in layouts:
                for n in batches:
                    for layer in layers:
                        yield dict(layer=layer, batch=n, layout=layout, dtype=dtype, threads=t,
                                   algorithm=algorithm, prepack=prepack)


def row_key(row: dict) -> tuple:
    """What identifies a row for ``--resume``: (name, batch, layout, dtype, threads, algorithm).

    Examples
    --------
    >>> from numbaconv.bench import row_key
    >>> row_key({"name": "vgg16.01", "batch": "8", "layout": "NHWC", "dtype": "float32",
    ...          "threads": "2", "requested_algorithm": "auto"})
    ('vgg16.01', 8, 'NHWC', 'float32', 2, 'auto')
    """
    return (row["name"], int(row["batch"]), row["layout"], row["dtype"], int(row["threads"]),
            row["requested_algorithm"])


def _parts_alone(plan, x: np.ndarray, repeat: int) -> tuple[float | None, float | None]:
    """Seconds of the plan's GEMMs alone and of its gathers alone (medians).

    The GEMMs run on random operands of the plan's GEMM shape, as many calls
    as the plan makes, each into a preallocated output: what BLAS reaches on
    this layer's own GEMM shape with nothing else in between.  The gathers
    fill the plan's column buffer chunk by chunk, as conv2d does.
    """
    from . import _execute

    if not plan.gemm_calls:
        return None, None
    rng = np.random.default_rng(0)
    a = rng.standard_normal((plan.gemm_m, plan.gemm_k)).astype(x.dtype)
    b = rng.standard_normal((plan.gemm_k, plan.gemm_n)).astype(x.dtype)
    c = np.empty((plan.gemm_m, plan.gemm_n), x.dtype)

    def gemms():
        for _ in range(plan.gemm_calls):
            np.matmul(a, b, out=c)

    gemm = measure(gemms, repeat).median
    if plan.algorithm != "im2col_gemm":
        return gemm, None
    g = plan.geometry
    xc = np.ascontiguousarray(x)
    rows = g.c * g.kh * g.kw
    bc, rc = plan.batch_chunk, plan.row_chunk
    if plan.layout == "NHWC":
        shape = (bc * rc * g.q, rows)
    else:
        shape = (rows, bc, rc * g.q) if plan.gemm_batched else (bc, rows, rc * g.q)
    cols = np.empty(shape, x.dtype)

    def gathers():
        for n0 in range(0, g.n, bc):
            nb = min(bc, g.n - n0)
            for p0 in range(0, g.p, rc):
                pb = min(rc, g.p - p0)
                if (nb, pb) == (bc, rc):  # the partial last chunk costs the same per byte
                    _execute.gather(plan, xc, cols, n0, p0, nb, row_major=plan.gemm_batched)
                else:
                    _execute.gather(plan, xc, _partial(cols, plan, nb, pb), n0, p0, nb,
                                    row_major=plan.gemm_batched)

    return gemm, measure(gathers, repeat).median


def _partial(cols: np.ndarray, plan, nb: int, pb: int) -> np.ndarray:
    """The front of ``cols`` shaped for a smaller last chunk."""
    g = plan.geometry
    rows = g.c * g.kh * g.kw
    if plan.layout == "NHWC":
        shape = (nb * pb * g.q, rows)
    else:
        shape = (rows, nb, pb * g.q) if plan.gemm_batched else (nb, rows, pb * g.q)
    return cols.reshape(-1)[: int(np.prod(shape))].reshape(shape)


def bench_one(cfg: dict, compare: Iterable[str], repeat: int, sgemm: float,
              isolated: dict[str, dict] | None = None) -> dict:
    """Time one configuration with numbaconv and every peer in ``compare``.

    Returns the row: its identity, the plan's algorithm, ``gflop`` (the work
    of one call), numbaconv's first-call, median and best times in ms, its
    GFLOP/s and % of ``sgemm``; ``pct_own_gemm``, the time of the plan's
    GEMMs alone as a percentage of numbaconv's (the rate reached relative to
    what BLAS gets on this layer's own GEMM shape), and ``im2col_pct``, the
    share of the time its gathers take alone (None where there are none);
    then ``{peer}_ms`` (median) and ``vs_{peer}``
    (peer time / numbaconv time: above 1, numbaconv is faster) per peer, or
    None where the peer cannot run the problem.  ``check`` is ``"ok"`` or
    names the peer whose result differs from numbaconv's, or that failed.

    With ``isolated`` (``numbaconv bench --isolate``), the peers are not run
    here: ``isolated[peer]`` is :meth:`PeerProcess.time`'s answer for this
    configuration, timed in the peer's own process, and the
    result check compares numbaconv's output with the sample it carries.

    Examples
    --------
    >>> from numbaconv.bench import Layer, bench_one
    >>> cfg = dict(layer=Layer("tiny", 3, 8, 8, 4, 3, padding=1), batch=2, layout="NHWC",
    ...            dtype="float64", threads=1, algorithm="auto")
    >>> row = bench_one(cfg, ["numpy"], repeat=1, sgemm=100.0)
    >>> row["algorithm"], row["check"], row["gflop"] == 2 * 2 * 8 * 8 * 4 * 3 * 9 / 1e9
    ('im2col_gemm', 'ok', True)
    """
    from . import _threads
    from .conv import conv2d_with, explain
    from .packed import pack_weight

    layer, n, layout, dtype = cfg["layer"], cfg["batch"], cfg["layout"], cfg["dtype"]
    x, w = _rng_arrays(layer, n, layout, dtype)
    kw = layer.conv_kwargs()
    with _threads.threads(cfg["threads"]):
        # Packed outside the timing, as a peer's session set-up is.
        ws = pack_weight(w, layer.groups, layout=layout) if cfg.get("prepack") else w
        plan = explain(x, ws, layout=layout, algorithm=cfg["algorithm"], **kw)
        ours = measure(lambda: conv2d_with(x, ws, layout=layout, algorithm=cfg["algorithm"],
                                           **kw), repeat)
        flops = plan.flops
        row = {
            "name": layer.name, "shape": layer.describe(n), "batch": n, "layout": layout,
            "dtype": np.dtype(dtype).name, "threads": cfg["threads"],
            "requested_algorithm": cfg["algorithm"], "algorithm": plan.algorithm,
            "gflop": flops / 1e9,
            "first_call_ms": ours.first * 1e3, "median_ms": ours.median * 1e3,
            "best_ms": ours.best * 1e3, "gflops": flops / ours.median / 1e9,
            "pct_sgemm": 100 * flops / ours.median / 1e9 / sgemm, "check": "ok",
        }
        gemm, gathers = _parts_alone(plan, x, repeat)
        row["pct_own_gemm"] = None if gemm is None else 100 * gemm / ours.median
        row["im2col_pct"] = None if gathers is None else 100 * gathers / ours.median
        for peer in compare:
            row[f"{peer}_ms"] = row[f"vs_{peer}"] = None
            if isolated is not None:
                got = isolated[peer]
                if "unsupported" in got:
                    continue
                if "error" in got:
                    row["check"] = f"ERROR in {peer}: {got['error']}".splitlines()[0]
                    continue
                median, same = got["median_ms"] / 1e3, _sample_close(ours.result, got, dtype)
            else:
                try:
                    t = measure(PEERS[peer](layer, x, w, layout), repeat)
                except PeerUnsupported:
                    continue
                except Exception as err:  # a peer's failure is flagged, and the sweep goes on
                    row["check"] = f"ERROR in {peer}: {_error_text(err)}".splitlines()[0]
                    continue
                median, same = t.median, _close(ours.result, t.result, dtype)
            row[f"{peer}_ms"] = median * 1e3
            row[f"vs_{peer}"] = median / ours.median  # > 1: numbaconv is faster
            if not same and row["check"] == "ok":
                row["check"] = f"MISMATCH vs {peer}"
    return row


def network_pass(configs: list[dict], repeat: int) -> Timing:
    """numbaconv on a table's layers back to back, as a network's forward pass runs them.

    A row repeats one layer; a network alternates them, so each layer
    starts after a different kernel, and where the dispatcher mixes Numba's
    kernels with OpenBLAS's GEMMs, the thread pools take turns: stopping
    OpenBLAS's spinning threads before a Numba kernel and starting them on
    the next GEMM cost ResNet-50 at batch 1 a quarter of its time before
    ``pointwise_gemm`` (docs/performance.md).  Same inputs as
    :func:`bench_one`'s (weights packed beforehand with ``prepack``), so each
    layer's input is not the previous layer's output and starts out of the
    caches; the Timing of whole passes (``measure``).  For ONNX Runtime as one session,
    see ``benchmarks/network_sequence.py``.

    Examples
    --------
    >>> from numbaconv.bench import Layer, network_pass
    >>> cfgs = [dict(layer=Layer(f"tiny{i}", 3, 8, 8, 4, k, padding=k // 2), batch=1,
    ...              layout="NCHW", dtype="float32", threads=1, algorithm="auto")
    ...         for i, k in enumerate((1, 3))]
    >>> [y.shape for y in network_pass(cfgs, repeat=1).result]
    [(1, 4, 8, 8), (1, 4, 8, 8)]
    """
    from . import _threads
    from .conv import conv2d_with
    from .packed import pack_weight

    calls = []
    with _threads.threads(configs[0]["threads"]):
        for cfg in configs:
            layer, layout = cfg["layer"], cfg["layout"]
            x, w = _rng_arrays(layer, cfg["batch"], layout, cfg["dtype"])
            ws = pack_weight(w, layer.groups, layout=layout) if cfg.get("prepack") else w
            calls.append(functools.partial(conv2d_with, x, ws, layout=layout,
                                           algorithm=cfg["algorithm"], **layer.conv_kwargs()))
        return measure(lambda: [call() for call in calls], repeat)


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


# --------------------------------------------------------------------------
# Peers in their own process (--isolate)
# --------------------------------------------------------------------------
# Run by ``python -c``.  A bare ``numbaconv`` package object whose __path__ is
# this directory lets ``numbaconv.bench`` (and ``numbaconv._args``) import
# without ``numbaconv/__init__.py``, which starts Numba's OpenMP pool.
_WORKER_BOOT = """\
import sys, types
package = types.ModuleType("numbaconv")
package.__path__ = [sys.argv[1]]
sys.modules["numbaconv"] = package
from numbaconv.bench import _peer_worker
_peer_worker()
"""
_SAMPLE_SIZE = 512


def _sample(y: np.ndarray) -> dict:
    """What the parent needs to check an isolated peer's output without the array.

    The whole output would be hundreds of MB of JSON at large batches, and
    the parent cannot recompute it without importing the peer into its own
    process (the thing --isolate avoids).  So the worker sends the shape, the
    largest magnitude and the values at ``_SAMPLE_SIZE`` seeded positions;
    the parent applies ``_close``'s element-wise test to those.  A wrong
    layout or a wrong tap shows up at almost every position, so a sample
    catches it; a checksum would not catch a transposed output.
    """
    y = np.asarray(y)
    flat = y.reshape(-1).astype(np.float64)
    where = np.random.default_rng(1).integers(0, max(flat.size, 1), _SAMPLE_SIZE)
    return {"shape": list(y.shape), "absmax": float(np.abs(flat).max(initial=0)),
            "sample": flat[where].tolist() if flat.size else []}


def _sample_close(ours: np.ndarray, theirs: dict, dtype) -> bool:
    """``_close`` on the sampled positions, with the tolerance of the whole output."""
    mine = _sample(ours)
    if mine["shape"] != theirs["shape"]:
        return False
    tol = 2e-4 if np.dtype(dtype) == np.float32 else 1e-9
    diff = np.abs(np.subtract(mine["sample"], theirs["sample"])).max(initial=0)
    return float(diff) <= tol * max(1.0, theirs["absmax"])


def _peer_worker() -> None:
    """The isolated process: time one peer (``sys.argv[2]``), one row per request.

    First imports the peer's modules and says ``{"ready": true}``; then reads
    one JSON line per row from stdin, ``{"repeat", "config": {layer, batch,
    layout, dtype, threads}}``, and answers each with one JSON line:
    ``{"numba_imported": bool, ...}`` plus the result (see
    :class:`PeerProcess`), until stdin closes.  The inputs are
    ``_rng_arrays``'s, as in the parent; BLAS threads (for the ``numpy``
    peer) are limited to the row's count as ``numbaconv.threads`` does there;
    the other peers set their own.  Before answering, the peer's callable
    (an ONNX Runtime session and its thread pool, say) and the row's arrays
    are dropped and OpenBLAS's idle threads (a NumPy peer's, spinning for
    ~0.1 s after each GEMM) are stopped, so that nothing of the peer's
    competes with numbaconv, which the parent times next.
    """
    import gc
    import importlib

    from threadpoolctl import threadpool_limits

    from ._openblas import openblas_shutdowns

    # The answers get a descriptor of their own; file descriptor 1 becomes
    # stderr, so whatever the peer prints, from Python or from native code,
    # cannot end up in an answer.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict) -> None:
        answer.write(json.dumps(obj) + "\n")
        answer.flush()

    peer = sys.argv[2]
    setup = PEERS[peer]
    for module in PEER_MODULES.get(peer, ()):
        importlib.import_module(module)
    # Looked up once, with the peer's libraries loaded: a scan of every
    # loaded library per row would be work between the peer and numbaconv.
    shutdowns = openblas_shutdowns()[0]
    send({"ready": True})
    for line in sys.stdin:
        job = json.loads(line)
        cfg = job["config"]
        layer, layout, threads = Layer(**cfg["layer"]), cfg["layout"], cfg["threads"]
        x, w = _rng_arrays(layer, cfg["batch"], layout, cfg["dtype"])
        # Only the NumPy baseline runs on BLAS's threads; around PyTorch the limit
        # (MKL's threads set and restored each row) made it 2-3x slower here.
        limit = (threadpool_limits(threads, user_api="blas") if peer == "numpy"
                 else contextlib.nullcontext())
        try:
            with limit:
                fn = setup(layer, x, w, layout, threads=threads)
                t = measure(fn, job["repeat"])
            result = {"first_ms": t.first * 1e3, "median_ms": t.median * 1e3,
                      "best_ms": t.best * 1e3, **_sample(t.result)}
        except PeerUnsupported as err:
            result = {"unsupported": str(err)}
        except Exception as err:  # reported for this row; the others go on
            result = {"error": _error_text(err)}
        fn = t = x = w = None
        gc.collect()
        for shutdown in shutdowns:  # this process has no other thread in BLAS
            shutdown()
        send({"numba_imported": "numba" in sys.modules, **result})


# A peer's process that has not answered in this long is stopped, and its
# rows from then on are errors: a hung peer must not hang the sweep.  Long
# enough for the slowest row (NumPy's baseline on a large layer at a large
# batch, 1 + warm-up + --repeat calls) and for importing a peer.
PEER_TIMEOUT_S = 600.0


class PeerProcess:
    """One peer, timed row by row in a Python process of its own (``bench --isolate``).

    In the process that runs numbaconv, Numba's OpenMP pool and OpenBLAS's
    are alive, and a peer with pools of its own runs below its standalone
    speed there (PyTorch NCHW, ResNet-50 at batch 1: about twice its
    standalone time); the other way round, ONNX Runtime's spinning workers
    slowed numbaconv's next calls twofold.  This starts ``sys.executable``
    once for the whole sweep and waits until it has imported the peer, so
    start-up and the import are paid once, before any timing; that process
    never imports Numba or starts numbaconv's pools.  It times one row at a
    time, when asked, so that the sweep can time a table's rows with the
    peers and then with numbaconv, seconds apart: the drift of a shared
    machine then hits both sides of a ratio alike.

    :meth:`time` returns ``first_ms``, ``median_ms``, ``best_ms`` and a
    sample of the output (``shape``, ``absmax``, ``sample``) for
    :func:`bench_one` to check; or ``{"unsupported": reason}`` (the row
    shows n/a); or ``{"error": message}``, for that row or, once the process
    has failed (crashed, could not import the peer, answered nonsense, gave
    no answer within ``timeout`` seconds (default ``PEER_TIMEOUT_S``) and was
    stopped, ...), for every row from then on.

    Examples
    --------
    >>> from numbaconv.bench import Layer, PeerProcess
    >>> cfg = dict(layer=Layer("tiny", 3, 8, 8, 4, 3, padding=1), batch=1, layout="NCHW",
    ...            dtype="float32", threads=1, algorithm="auto")
    >>> with PeerProcess("numpy") as numpy_peer:
    ...     numpy_peer.time(cfg, repeat=1)["shape"]
    [1, 4, 8, 8]
    """

    def __init__(self, peer: str, timeout: float | None = None):
        self.peer = peer
        self.timeout = PEER_TIMEOUT_S if timeout is None else timeout
        self._failed = None
        self._proc = None
        self._stderr = tempfile.TemporaryFile()  # a pipe left unread could fill up
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_BOOT, os.path.dirname(__file__), peer],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        except OSError as err:
            self._failed = {"error": f"isolated process failed to start: {err}"}
            return
        self._answer("ready")

    def time(self, cfg: dict, repeat: int) -> dict:
        if self._failed is None:
            job = {"repeat": repeat,
                   "config": dict(layer=dataclasses.asdict(cfg["layer"]), batch=cfg["batch"],
                                  layout=cfg["layout"], dtype=np.dtype(cfg["dtype"]).name,
                                  threads=cfg["threads"])}
            try:
                self._proc.stdin.write(json.dumps(job) + "\n")
                self._proc.stdin.flush()
            except OSError:
                self._fail("")
            result = self._answer("numba_imported")
            if result is not None and result.pop("numba_imported"):  # a bug here
                self._fail("", "the isolated process imported numba")
            elif result is not None:
                return result
        return dict(self._failed)

    def _answer(self, key: str) -> dict | None:
        """The next answer, which must be a JSON object with ``key``; else fail.

        Waited for with ``select``, not a reader thread: a second Python
        thread in this process would keep ``quiet_blas`` from stopping
        OpenBLAS's spinning threads before numbaconv's kernels.  The worker
        writes one line per request, so nothing is left buffered between
        answers.  (Windows cannot select on a pipe: there it waits.)
        """
        if self._failed is not None:
            return None
        ready = os.name == "nt" or select.select([self._proc.stdout], [], [], self.timeout)[0]
        if not ready:
            self._fail("", f"isolated process gave no answer in {self.timeout:g} s; stopped")
            return None
        line = self._proc.stdout.readline()
        try:
            answer = json.loads(line)
            if isinstance(answer, dict) and key in answer:
                return answer
        except ValueError:
            pass
        self._fail(line)
        return None

    def _fail(self, line: str, why: str | None = None) -> None:
        """Stop the process (it has died, or cannot be trusted) and say why, once."""
        if self._failed is not None:
            return
        if line or why:  # it is alive but answered something else: no point in waiting
            self._proc.kill()
            self._proc.wait()
            why = why or f"isolated process sent {line.strip()[:200]!r}"
        else:  # end of its output: it is exiting, or has
            try:
                code = self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                code = self._proc.wait()
            how = f"status {code}" if code >= 0 else f"signal {-code}"
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace")
            why = f"isolated process failed ({how}): " + \
                (text.strip().splitlines() or ["no message"])[-1]
        self._failed = {"error": why}

    def close(self) -> None:
        """Close its stdin and let it exit; an idle worker does so at once."""
        try:
            if self._proc is not None:
                try:
                    self._proc.stdin.close()
                    self._proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                finally:  # still busy (an interrupted row) or stuck
                    if self._proc.poll() is None:
                        self._proc.kill()
                        self._proc.wait()
                    self._proc.stdout.close()
        finally:
            self._stderr.close()

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def time_peer_isolated(peer: str, configs: list[dict], repeat: int) -> list[dict]:
    """Time ``peer`` on every configuration, in order, in one :class:`PeerProcess`.

    Examples
    --------
    >>> from numbaconv.bench import Layer, time_peer_isolated
    >>> cfg = dict(layer=Layer("tiny", 3, 8, 8, 4, 3, padding=1), batch=1, layout="NCHW",
    ...            dtype="float32", threads=1, algorithm="auto")
    >>> [r["shape"] for r in time_peer_isolated("numpy", [cfg], repeat=1)]
    [[1, 4, 8, 8]]
    """
    with PeerProcess(peer) as process:
        return [process.time(cfg, repeat) for cfg in configs]


# --------------------------------------------------------------------------
# The plot
# --------------------------------------------------------------------------
_COLOURS = {"numbaconv": "#1f77b4", "numpy": "#7f7f7f", "torch": "#ff7f0e",
            "onnxruntime": "#2ca02c", "jax": "#9467bd", "onnxruntime_gemm": "#98df8a"}


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
    names = list(dict.fromkeys(r["name"] for r in rows))
    layouts = [lay for lay in ("NCHW", "NHWC") if any(r["layout"] == lay for r in rows)]
    groups = list(dict.fromkeys((r["batch"], r["dtype"], r["threads"]) for r in rows))
    by_name = {layer.name: layer for layer in layers}
    short = _short_names(names)
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
            panel = {r["name"]: r for r in rows if r["layout"] == layout
                     and (r["batch"], r["dtype"], r["threads"]) == (n, dtype, threads)}
            for ii, impl in enumerate(impls):
                key = "median_ms" if impl == "numbaconv" else f"{impl}_ms"
                values = [panel[name]["gflop"] / panel[name][key] * 1e3
                          if name in panel and panel[name].get(key) else np.nan
                          for name in names]
                ax.bar(x + (ii - (len(impls) - 1) / 2) * bar, values, bar * 0.95,
                       color=_COLOURS.get(impl), label=impl, zorder=2)
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
