"""pytest-benchmark: training steps on the ResNet-50 conv shapes at batch 8.

Two kinds of case, each for numbaconv, a plain-NumPy "seed-style"
implementation and (when installed) PyTorch:

* ``test_forward_backward``: one forward and the full backward of a layer
  (grad_x, grad_weight, grad_bias), with a bias: numbaconv's ``Conv2d``
  layer ("numbaconv") and the bare functions, conv2d then conv2d_backward
  ("functions");
* ``test_conv_transpose2d``: the transposed convolution that maps the
  layer's output shape back to its input shape.

Off in the default test run (testpaths is tests/ and --benchmark-disable);
run on purpose, on a few layers (the machine may be shared), with

    python -m pytest benchmarks/test_backward.py --benchmark-enable \
        --benchmark-columns=median,ops -k "resnet50.03 or resnet50.11"

``python benchmarks/test_backward.py`` prints the same figures as a
Markdown table of medians, GFLOP/s and ratios, each implementation timed
in its own block (see ``numbaconv.bench``), for docs/training.md.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest

import numbaconv
from numbaconv import bench

LAYERS = bench.load_suite("resnet50")
BATCH = 8


# --------------------------------------------------------------------------
# The seed-style baseline: what a NumPy tutorial layer does.  im2col by one
# strided-slice copy per tap, GEMMs, col2im by one slice-add per tap.
# groups == 1 (every ResNet-50 shape).
# --------------------------------------------------------------------------
class SeedConv:
    """A NumPy conv layer: forward caches the columns, backward reuses them."""

    def __init__(self, w, b, stride, padding, dilation, layout):
        self.w, self.b, self.s, self.p, self.d, self.layout = (w, b, stride, padding, dilation,
                                                               layout)

    def _sizes(self, shape):
        k = self.w.shape[2] if self.layout == "NCHW" else self.w.shape[0]
        h, wd = shape[2:] if self.layout == "NCHW" else shape[1:3]
        ph = (h + 2 * self.p - self.d * (k - 1) - 1) // self.s + 1
        pw = (wd + 2 * self.p - self.d * (k - 1) - 1) // self.s + 1
        return k, ph, pw

    def _taps(self, k, ph, pw):
        s, d = self.s, self.d
        for i in range(k):
            for j in range(k):
                yield i, j, slice(i * d, i * d + s * (ph - 1) + 1, s), slice(
                    j * d, j * d + s * (pw - 1) + 1, s)

    def forward(self, x):
        k, ph, pw = self._sizes(x.shape)
        p = self.p
        self.x_shape = x.shape
        if self.layout == "NCHW":
            n, c = x.shape[:2]
            xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
            cols = np.empty((n, c, k, k, ph, pw), x.dtype)
            for i, j, rs, cs in self._taps(k, ph, pw):
                cols[:, :, i, j] = xp[:, :, rs, cs]
            self.cols = cols.reshape(n, c * k * k, ph * pw)
            y = self.w.reshape(self.w.shape[0], -1) @ self.cols
            return y.reshape(n, -1, ph, pw) + self.b[:, None, None]
        n, c = x.shape[0], x.shape[3]
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        cols = np.empty((n, ph, pw, k, k, c), x.dtype)
        for i, j, rs, cs in self._taps(k, ph, pw):
            cols[:, :, :, i, j] = xp[:, rs, cs]
        self.cols = cols.reshape(n * ph * pw, k * k * c)
        y = self.cols @ self.w.reshape(k * k * c, -1)
        return y.reshape(n, ph, pw, -1) + self.b

    def backward(self, gy):
        k, ph, pw = self._sizes(self.x_shape)
        if self.layout == "NCHW":
            n, c, h, wd = self.x_shape
            o = self.w.shape[0]
            g2 = gy.reshape(n, o, ph * pw)
            gw = np.tensordot(g2, self.cols, axes=([0, 2], [0, 2])).reshape(self.w.shape)
            gb = gy.sum(axis=(0, 2, 3))
            dcols = (self.w.reshape(o, -1).T @ g2).reshape(n, c, k, k, ph, pw)
            return self._col2im(dcols, n, c, h, wd, k, ph, pw), gw, gb
        n, h, wd, c = self.x_shape
        o = self.w.shape[3]
        g2 = gy.reshape(-1, o)
        gw = (self.cols.T @ g2).reshape(self.w.shape)
        gb = g2.sum(axis=0)
        dcols = (g2 @ self.w.reshape(-1, o).T).reshape(n, ph, pw, k, k, c)
        return self._col2im(dcols, n, c, h, wd, k, ph, pw), gw, gb

    def _col2im(self, dcols, n, c, h, wd, k, ph, pw):
        p = self.p
        if self.layout == "NCHW":
            gxp = np.zeros((n, c, h + 2 * p, wd + 2 * p), dcols.dtype)
            for i, j, rs, cs in self._taps(k, ph, pw):
                gxp[:, :, rs, cs] += dcols[:, :, i, j]
            return gxp[:, :, p : p + h, p : p + wd]
        gxp = np.zeros((n, h + 2 * p, wd + 2 * p, c), dcols.dtype)
        for i, j, rs, cs in self._taps(k, ph, pw):
            gxp[:, rs, cs] += dcols[:, :, :, i, j]
        return gxp[:, p : p + h, p : p + wd]

    def transpose(self, x, out_shape):
        """conv_transpose2d of x (this conv's output shape) back to ``out_shape``."""
        self.x_shape = out_shape
        k, ph, pw = self._sizes(out_shape)
        if self.layout == "NCHW":
            n, c, h, wd = out_shape
            o = self.w.shape[0]
            dcols = (self.w.reshape(o, -1).T @ x.reshape(n, o, -1)).reshape(n, c, k, k, ph, pw)
        else:
            n, h, wd, c = out_shape
            o = self.w.shape[3]
            dcols = (x.reshape(-1, o) @ self.w.reshape(-1, o).T).reshape(n, ph, pw, k, k, c)
        return self._col2im(dcols, n, c, h, wd, k, ph, pw)


# --------------------------------------------------------------------------
# One registry: impl -> setup(layer, x, w, b, gy, layout) -> callable
# --------------------------------------------------------------------------
def _arrays(layer, layout, dtype=np.float32):
    x, w = bench._rng_arrays(layer, BATCH, layout, dtype)
    rng = np.random.default_rng(1)
    b = rng.standard_normal(layer.o).astype(dtype)
    g = numbaconv.explain(x, w, layout=layout, **layer.conv_kwargs()).geometry
    gy = rng.standard_normal(numbaconv._args.layout_of(layout).x_shape(g.n, g.o, g.p, g.q))
    return x, w, b, gy.astype(dtype)


def _numbaconv_train(layer, x, w, b, gy, layout):
    """The Conv2d layer: forward keeps the columns when they fit, backward reuses them."""
    conv = numbaconv.Conv2d(layer.c, layer.o, layer.kernel, layer.stride, layer.padding,
                            layer.dilation, layer.groups, layout=layout, dtype=x.dtype)
    conv.weight[...] = w
    conv.bias[...] = b

    def step():
        y = conv.forward(x)
        return y, conv.backward(gy), conv.grad_weight, conv.grad_bias

    return step


def _functions_train(layer, x, w, b, gy, layout):
    """conv2d, then conv2d_backward: the columns are gathered twice."""
    kw = layer.conv_kwargs()

    def step():
        y = numbaconv.conv2d(x, w, b, layout=layout, **kw)
        return (y, *numbaconv.conv2d_backward(gy, x, w, layout=layout, **kw))

    return step


def _seed_train(layer, x, w, b, gy, layout):
    conv = SeedConv(w, b, layer.stride, layer.padding, layer.dilation, layout)

    def step():
        y = conv.forward(x)
        return (y, *conv.backward(gy))

    return step


def _torch_tensors(x, w, layout, grad):
    import torch

    torch.set_num_threads(numbaconv.get_num_threads())
    if layout == "NCHW":
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    else:  # channels_last: the NHWC buffer seen as NCHW, as in numbaconv.bench
        xt = torch.from_numpy(x).permute(0, 3, 1, 2)
        wt = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).contiguous(
            memory_format=torch.channels_last)
    return xt.requires_grad_(grad), wt.requires_grad_(grad)


def _torch_train(layer, x, w, b, gy, layout):
    import torch

    xt, wt = _torch_tensors(x, w, layout, True)
    bt = torch.from_numpy(b).requires_grad_()
    gyt = torch.from_numpy(gy)
    if layout == "NHWC":
        gyt = gyt.permute(0, 3, 1, 2)
    kw = layer.conv_kwargs()

    def step():
        xt.grad = wt.grad = bt.grad = None
        y = torch.nn.functional.conv2d(xt, wt, bt, **kw)
        y.backward(gyt)
        if layout == "NCHW":
            return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()
        return (y.detach().permute(0, 2, 3, 1).numpy(), xt.grad.permute(0, 2, 3, 1).numpy(),
                wt.grad.permute(2, 3, 1, 0).numpy(), bt.grad.numpy())

    return step


def _numbaconv_transpose(layer, x, w, gy, layout):
    kw = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
              groups=layer.groups)
    size = (layer.h, layer.w)
    return lambda: numbaconv.conv_transpose2d(gy, w, layout=layout, output_size=size, **kw)


def _seed_transpose(layer, x, w, gy, layout):
    conv = SeedConv(w, None, layer.stride, layer.padding, layer.dilation, layout)
    return lambda: conv.transpose(gy, x.shape)


def _torch_transpose(layer, x, w, gy, layout):
    import torch

    _, wt = _torch_tensors(x, w, layout, False)
    gyt = torch.from_numpy(gy)
    if layout == "NHWC":
        gyt = gyt.permute(0, 3, 1, 2)
    k, s, p, d = layer.kernel, layer.stride, layer.padding, layer.dilation
    op = layer.h - ((gy.shape[2 if layout == "NCHW" else 1] - 1) * s - 2 * p + d * (k - 1) + 1)

    def call():
        with torch.no_grad():
            y = torch.nn.functional.conv_transpose2d(gyt, wt, None, s, p, op, layer.groups, d)
        return y.numpy() if layout == "NCHW" else y.permute(0, 2, 3, 1).numpy()

    return call


TRAIN = {"numbaconv": _numbaconv_train, "functions": _functions_train, "numpy": _seed_train,
         "torch": _torch_train}
TRANSPOSE = {"numbaconv": _numbaconv_transpose, "numpy": _seed_transpose,
             "torch": _torch_transpose}
PEERS = [p for p in bench.available_peers() if p in TRANSPOSE]
TRAIN_IMPLS = ["numbaconv", "functions", *PEERS]
TRANSPOSE_IMPLS = ["numbaconv", *PEERS]


def _flops(layer, layout):
    x_shape, w_shape = layer.shapes(BATCH, layout)
    return numbaconv.explain(x_shape, w_shape, layout=layout, **layer.conv_kwargs()).flops


# --------------------------------------------------------------------------
# pytest-benchmark
# --------------------------------------------------------------------------
def _record(benchmark, flops):
    if benchmark.stats is not None:  # None with --benchmark-disable
        benchmark.extra_info["gflops"] = flops / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("impl", TRAIN_IMPLS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.name)
def test_forward_backward(benchmark, layer, layout, impl):
    x, w, b, gy = _arrays(layer, layout)
    fn = TRAIN[impl](layer, x, w, b, gy, layout)
    fn()  # compile / warm up outside the timing
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, 3 * _flops(layer, layout))  # forward, grad_x, grad_weight


@pytest.mark.parametrize("impl", TRANSPOSE_IMPLS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.name)
def test_conv_transpose2d(benchmark, layer, layout, impl):
    x, w, _, gy = _arrays(layer, layout)
    fn = TRANSPOSE[impl](layer, x, w, gy, layout)
    fn()
    benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    _record(benchmark, _flops(layer, layout))


@pytest.mark.parametrize("impl", TRAIN_IMPLS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_baselines_agree(impl, layout):
    """The compared implementations compute the same thing (a small stand-in layer)."""
    layer = bench.Layer("check", 5, 9, 9, 6, 3, 2, 1)
    x, w, b, gy = _arrays(layer, layout, np.float64)
    want = _functions_train(layer, x, w, b, gy, layout)()
    for got, ref in zip(TRAIN[impl](layer, x, w, b, gy, layout)(), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
    if impl in TRANSPOSE:
        ref = _numbaconv_transpose(layer, x, w, gy, layout)()
        np.testing.assert_allclose(TRANSPOSE[impl](layer, x, w, gy, layout)(), ref, rtol=1e-9,
                                   atol=1e-9)


# --------------------------------------------------------------------------
# The summary table for the docs
# --------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", nargs="*", type=int, default=list(range(1, len(LAYERS) + 1)),
                    help="ResNet-50 layer numbers, 1-12 (default: all)")
    ap.add_argument("--layout", nargs="*", default=["NCHW"], choices=["NCHW", "NHWC"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kind", nargs="*", default=["train", "transpose"],
                    choices=["train", "transpose"])
    args = ap.parse_args(argv)
    print(f"batch {BATCH}, float32, {numbaconv.get_num_threads()} threads; median of "
          f"{args.repeat}; ratio = peer time / numbaconv time (> 1: numbaconv is faster)\n")
    for kind in args.kind:
        registry = TRAIN if kind == "train" else TRANSPOSE
        impls = TRAIN_IMPLS if kind == "train" else TRANSPOSE_IMPLS
        factor = 3 if kind == "train" else 1
        title = "forward + backward" if kind == "train" else "conv_transpose2d"
        peers = impls[1:]
        head = ["layer", "layout", "numbaconv ms", "GFLOP/s", *(f"{p} ms" for p in peers),
                *(f"vs {p}" for p in peers)]
        print(f"{title}\n\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        cases = [(layout, LAYERS[number - 1]) for layout in args.layout for number in args.layers]
        times = {}
        # One implementation at a time over every case: thread pools a library
        # leaves spinning slow down the next one (see numbaconv.bench).
        for impl in impls:
            for layout, layer in cases:
                x, w, b, gy = _arrays(layer, layout)
                if kind == "train":
                    fn = registry[impl](layer, x, w, b, gy, layout)
                else:
                    fn = registry[impl](layer, x, w, gy, layout)
                times[impl, layout, layer.name] = bench.measure(fn, args.repeat).median
        totals = dict.fromkeys(impls, 0.0)
        for layout, layer in cases:
            t = {impl: times[impl, layout, layer.name] for impl in impls}
            for impl in impls:
                totals[impl] += t[impl]
            ours = t["numbaconv"]
            gflops = factor * _flops(layer, layout) / ours / 1e9
            row = [layer.describe(BATCH), layout, f"{ours * 1e3:.1f}", f"{gflops:.0f}",
                   *(f"{t[p] * 1e3:.1f}" for p in peers), *(f"{t[p] / ours:.2f}x" for p in peers)]
            print("| " + " | ".join(row) + " |", flush=True)
        ours = totals["numbaconv"]
        row = ["total", "", f"{ours * 1e3:.0f}", "", *(f"{totals[p] * 1e3:.0f}" for p in peers),
               *(f"{totals[p] / ours:.2f}x" for p in peers)]
        print("| " + " | ".join(row) + " |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
