"""numbaconv over Dask arrays: data sets and images larger than memory.

``numbaconv.dask.conv2d`` takes a ``dask.array.Array`` and returns a lazy one
with the result of :func:`numbaconv.conv2d`, one in-memory numbaconv call per
output block.  Install with ``pip install "numbaconv[dask]"``.

How a call is cut into blocks (docs/dask.md):

- The batch axis keeps x's chunks: one output block per batch chunk.
- The channel axis is joined into one chunk (a convolution needs every input
  channel of a group), with a warning when that makes large blocks.
- A spatial axis in one chunk is padded by each block's own call.  One in
  several chunks is padded once, globally (``dask.array.pad`` in the
  padding mode).  Either way "same" and the padding modes apply at the
  image's borders only.  Output block j then holds the outputs whose
  window starts in x's chunk j (padded coordinates), so every block starts
  on a stride-aligned row of the padded input and reads forward only: its
  chunk plus a halo of up to ``(k - 1) * dilation`` rows of the next ones,
  cut out by small slicing tasks where those chunks live.
- The weight and the bias are one node of the graph each: a worker fetches
  them once, not once per task.
"""

from __future__ import annotations

import operator
import threading
import warnings
from dataclasses import dataclass

import numba
import numpy as np

try:
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph
except ImportError as err:  # an optional extra
    raise ImportError('numbaconv.dask needs Dask: pip install "numbaconv[dask]"') from err

from . import _args
from ._activation import activation_code
from ._threads import get_num_threads, threads
from .conv import _batched, _check_bias
from .conv import conv2d as _conv2d
from .packed import PackedWeight

__all__ = ["conv2d"]

# numbaconv's padding modes as dask.array.pad's (NumPy's) names
_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
              "circular": "wrap"}

# One block computes at a time per process, on all of the worker's threads:
# Dask threads x Numba threads never exceed the worker's nthreads.
_computing = threading.Lock()


@dataclass(frozen=True)
class _Spec:
    """What every block's call shares (stride and dilation as conv_geometry resolved them)."""

    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    layout: str
    h_axis: int
    w_axis: int
    pads: tuple  # ((top, bottom), (left, right)) padded by the call: axes in one chunk
    padding_mode: str
    threads: int  # the caller's count: what blocks use outside a distributed worker
    activation: str | None


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           layout="NCHW", padding_mode="zeros", activation=None):
    """:func:`numbaconv.conv2d` of a Dask array, as a lazy Dask array.

    The arguments and the result are those of :func:`numbaconv.conv2d`; ``x``
    is a ``dask.array.Array`` (3-d for one image, or 4-d) with any chunks,
    ``weight`` and ``bias`` in-memory arrays.  The result's batch chunks are
    x's; its spatial chunks follow x's, one output block per input chunk.
    Nothing is computed until the result is.

    Raises
    ------
    TypeError, ValueError
        As :func:`numbaconv.conv2d` does, naming the argument; also for a
        ``x`` whose chunk sizes are unknown, and a ``PackedWeight``.

    Examples
    --------
    >>> import dask.array as da, numpy as np, numbaconv.dask
    >>> x = da.ones((4, 3, 64, 64), chunks=(2, 3, 32, 32), dtype=np.float32)
    >>> w = np.ones((8, 3, 3, 3), np.float32)
    >>> y = numbaconv.dask.conv2d(x, w, padding="same")
    >>> y.shape, y.chunks[0], y.chunks[2]
    ((4, 8, 64, 64), (2, 2), (33, 31))
    >>> float(y[0, 0, 10, 10].compute())
    27.0
    """
    layout = _args.layout_of(layout)
    activation_code(activation)  # now, not when the graph is computed
    x, unbatched = _batched(_dask_input(x), "x", layout)  # conv2d's ndim check and batch axis
    if isinstance(weight, PackedWeight):
        raise TypeError("weight: numbaconv.dask takes a plain weight array, got a PackedWeight")
    weight = _args.as_float_array(weight, "weight")
    _args.ensure_ndim(weight, "weight", (4,), f"in {layout.weight_name} order")
    bias = None if bias is None else _args.as_float_array(bias, "bias")
    dtype = _args.result_dtype(np.empty(0, x.dtype), weight, bias)
    g = _args.conv_geometry(x.shape, weight.shape, layout, stride, padding, dilation, groups,
                            padding_mode, in_memory=False)
    _check_bias(bias, g.o)
    n_axis, c_axis, h_axis, w_axis = layout.x_axes
    out_shape = layout.x_shape(g.n, g.o, g.p, g.q)
    if g.n == 0:
        return da.empty(out_shape, dtype=dtype)[0] if unbatched else da.empty(out_shape,
                                                                              dtype=dtype)
    x = _join_channels(x, c_axis)
    x = _drop_empty_chunks(x)
    # An axis in one chunk is padded inside the block's call (no copy); an axis
    # in several is padded once, globally, and its blocks' calls pad nothing.
    whole = (len(x.chunks[h_axis]) == 1, len(x.chunks[w_axis]) == 1)
    axis_pads = (g.pads[:2], g.pads[2:])
    in_call = tuple(p if one else (0, 0) for one, p in zip(whole, axis_pads, strict=True))
    xp = _pad(x, [(0, 0) if one else p for one, p in zip(whole, axis_pads, strict=True)],
              g.padding_mode, h_axis, w_axis)
    spec = _Spec(g.stride, g.dilation, g.groups, layout.name, h_axis, w_axis, in_call,
                 g.padding_mode, get_num_threads(), activation)
    rows = [(0, g.p)] if whole[0] else _out_blocks(x.chunks[h_axis], g.pads[0], g.p,
                                                   g.stride[0])
    cols = [(0, g.q)] if whole[1] else _out_blocks(x.chunks[w_axis], g.pads[2], g.q,
                                                   g.stride[1])
    # the rows a block reads past its first: all of them on an axis in one chunk
    reach = (x.shape[h_axis] if whole[0] else (g.kh - 1) * g.dilation[0],
             x.shape[w_axis] if whole[1] else (g.kw - 1) * g.dilation[1])

    w_node = da.from_array(weight, chunks=weight.shape)
    deps = [xp, w_node]
    w_key = (w_node.name, 0, 0, 0, 0)
    b_key = None
    if bias is not None:
        b_node = da.from_array(bias, chunks=bias.shape)
        deps.append(b_node)
        b_key = (b_node.name, 0)
    token = tokenize(xp.name, w_node.name, b_key, spec)
    name, halo = f"numbaconv-conv2d-{token}", f"numbaconv-halo-{token}"
    layer = {}
    for bi in range(len(xp.chunks[n_axis])):
        for ri, (r0, r1) in enumerate(rows):
            row_pieces = _pieces(xp.chunks[h_axis], r0 * g.stride[0],
                                 (r1 - 1) * g.stride[0] + reach[0] + 1)
            for ci, (c0, c1) in enumerate(cols):
                col_pieces = _pieces(xp.chunks[w_axis], c0 * g.stride[1],
                                     (c1 - 1) * g.stride[1] + reach[1] + 1)
                grid = []
                for hi, h_cut in row_pieces:
                    line = []
                    for wi, w_cut in col_pieces:
                        src = (xp.name, *_place(n_axis, bi, h_axis, hi, w_axis, wi))
                        if h_cut is None and w_cut is None:  # the whole chunk
                            line.append(src)
                            continue
                        index = [slice(None)] * 4
                        index[h_axis] = h_cut or slice(None)
                        index[w_axis] = w_cut or slice(None)
                        key = (halo, bi, ri, ci, hi, wi)
                        layer[key] = (operator.getitem, src, tuple(index))
                        line.append(key)
                    grid.append(line)
                out_key = (name, *_place(n_axis, bi, h_axis, ri, w_axis, ci))
                layer[out_key] = (_block, grid, w_key, b_key, spec)
    chunks = [None] * 4
    chunks[n_axis] = xp.chunks[n_axis]
    chunks[c_axis] = (g.o,)
    chunks[h_axis] = tuple(b - a for a, b in rows)
    chunks[w_axis] = tuple(b - a for a, b in cols)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=deps)
    y = da.Array(graph, name, chunks=tuple(chunks), dtype=dtype)
    return y[0] if unbatched else y


def _dask_input(x):
    if not isinstance(x, da.Array):
        raise TypeError(f"x: expected a dask.array.Array (numbaconv.conv2d takes in-memory "
                        f"arrays), got {type(x).__name__}")
    if any(np.isnan(size) for sizes in x.chunks for size in sizes):
        raise ValueError("x: its chunk sizes are unknown; call x.compute_chunk_sizes() first")
    _args.as_float_array(np.empty(0, x.dtype), "x")  # the dtype check conv2d makes
    return x


def _join_channels(x, c_axis: int):
    """One chunk over the channels: a group's output needs all of its input channels."""
    if len(x.chunks[c_axis]) == 1:
        return x
    biggest = x.dtype.itemsize * x.shape[c_axis] * int(np.prod(
        [max(sizes) for axis, sizes in enumerate(x.chunks) if axis != c_axis]))
    memory = _args.physical_memory()
    if memory is not None and biggest > memory // 8:
        warnings.warn(
            f"numbaconv.dask: x is chunked over its {x.shape[c_axis]} channels; joining them "
            f"makes blocks of up to {biggest / 2**30:.3g} GiB, against this machine's "
            f"{memory / 2**30:.3g} GiB. Chunk x over the batch or space instead.",
            RuntimeWarning, stacklevel=3)
    return x.rechunk({c_axis: -1})


def _drop_empty_chunks(x):
    """x without zero-size chunks (dask.array.pad's edge mode fails on them)."""
    chunks = tuple(tuple(c for c in sizes if c) or sizes for sizes in x.chunks)
    return x if chunks == x.chunks else x.rechunk(chunks)


def _pad(x, pads, mode: str, h_axis: int, w_axis: int):
    """x padded once, globally: the padding modes act at the image's borders only."""
    if not any(p for pair in pads for p in pair):
        return x
    width = [(0, 0)] * 4
    width[h_axis], width[w_axis] = pads
    return da.pad(x, width, mode=_PAD_MODES[mode])


def _out_blocks(in_chunks, pad_low: int, out_len: int, stride: int) -> list[tuple[int, int]]:
    """Output ranges: those whose window starts in each input chunk (padded coordinates).

    So every range starts on a stride-aligned padded row and reads forward
    only: a layer's block then waits on the next chunks, not on both sides,
    which halves what a stack of layers holds (docs/design/decisions.md).
    The first range also takes the windows starting in the low padding, the
    last those in the high padding; empty ranges are dropped.
    """
    bounds = np.cumsum(in_chunks)[:-1] + pad_low
    starts = [0] + [min(-(-int(b) // stride), out_len) for b in bounds]
    ends = starts[1:] + [out_len]
    return [(a, b) for a, b in zip(starts, ends, strict=True) if b > a]


def _pieces(chunks, lo: int, hi: int) -> list[tuple[int, slice | None]]:
    """The chunks that rows [lo, hi) touch, each with its cut (None: the whole chunk)."""
    out, start = [], 0
    for i, size in enumerate(chunks):
        end = start + size
        if end > lo and start < hi:
            a, b = max(lo, start) - start, min(hi, end) - start
            out.append((i, None if (a, b) == (0, size) else slice(a, b)))
        start = end
    return out


def _place(n_axis, n, h_axis, h, w_axis, w) -> tuple[int, int, int, int]:
    """A block index with the batch, height and width indices in place (channels: 0)."""
    index = [0, 0, 0, 0]
    index[n_axis], index[h_axis], index[w_axis] = n, h, w
    return tuple(index)


def _worker_threads(caller: int | None = None) -> int:
    """The Dask worker's nthreads; outside a worker, ``caller`` (the count conv2d saw).

    Not the running thread's own count: Numba's is per thread, and in a
    local scheduler's pool thread it is Numba's default, not the caller's.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a distributed worker
        return caller or get_num_threads()
    n = getattr(getattr(worker, "state", None), "nthreads", None) or worker.nthreads
    return max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))


def _block(grid, weight, bias, spec: _Spec):
    """One output block: its input pieces put together, then one numbaconv call."""
    lines = [line[0] if len(line) == 1 else np.concatenate(line, axis=spec.w_axis)
             for line in grid]
    x = lines[0] if len(lines) == 1 else np.concatenate(lines, axis=spec.h_axis)
    with _computing, threads(_worker_threads(spec.threads)):
        return _conv2d(x, weight, bias, spec.stride, spec.pads, spec.dilation, spec.groups,
                       layout=spec.layout, padding_mode=spec.padding_mode,
                       activation=spec.activation)
