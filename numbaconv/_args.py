"""Argument normalisation: layouts, stride/padding/dilation, dtypes, geometry.

Everything a user can get wrong is checked here, in plain Python, so the
Numba kernels only ever see arrays and indices they can trust.  Errors name
the argument and give the expected and the actual value.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
# No convolution has a size or hyper-parameter larger than this; refusing
# them keeps every index product (one such value times another) in int64.
MAX_VALUE = 2**31 - 1


# --------------------------------------------------------------------------
# Layouts as data: one small description per layout instead of two copies of
# every shape computation.  Axes are given in the canonical order
# (N, C, H, W) for activations and (O, I, KH, KW) for weights.
# --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Layout:
    """One memory layout: where each axis sits, and what follows from that.

    Everything that differs between NCHW and NHWC is a field or a method
    here, so that the rest of the package asks the layout instead of
    comparing its name.  A layout equals its name (``layout == "NHWC"``),
    which keeps plans readable in tests and at the prompt.
    """

    name: str
    x_axes: tuple[int, int, int, int]  # where N, C, H, W sit in x
    w_axes: tuple[int, int, int, int]  # where O, I, KH, KW sit in weight
    weight_name: str
    # The channels are x's last, fastest axis.  Then the GEMMs run as
    # cols @ W with the batch's pixels in M (one GEMM for the whole batch);
    # else as W @ cols, the weight on the left, one GEMM per image.
    channels_last: bool

    def x_shape(self, n: int, c: int, h: int, w: int) -> tuple[int, ...]:
        return _place((n, c, h, w), self.x_axes)

    def w_shape(self, o: int, i: int, kh: int, kw: int) -> tuple[int, ...]:
        return _place((o, i, kh, kw), self.w_axes)

    def x_dims(self, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """(N, C, H, W) from a 4-d activation shape in this layout."""
        return tuple(shape[a] for a in self.x_axes)  # type: ignore[return-value]

    def w_dims(self, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """(O, I, KH, KW) from a 4-d weight shape in this layout."""
        return tuple(shape[a] for a in self.w_axes)  # type: ignore[return-value]

    def x_desc(self) -> str:
        return "(" + ", ".join(self.name) + ")"

    @property
    def channel_axis(self) -> int:
        return self.x_axes[1]

    @property
    def spatial_axes(self) -> tuple[int, int]:
        return self.x_axes[2], self.x_axes[3]

    @property
    def from_nchw(self) -> tuple[int, int, int, int]:
        """The transpose from an (N, C, H, W) array to this layout; ``x_axes`` undoes it."""
        return tuple(self.x_axes.index(a) for a in range(4))  # type: ignore[return-value]

    def bias_shape(self, o: int) -> tuple[int, ...]:
        """The shape that broadcasts a per-channel bias over one image of x."""
        return (o,) if self.channels_last else (o, 1, 1)

    def crop(self, x: np.ndarray, h: int, w: int) -> np.ndarray:
        """x's first ``h`` rows and ``w`` columns (a view)."""
        index = [slice(None)] * x.ndim
        index[self.x_axes[2]], index[self.x_axes[3]] = slice(h), slice(w)
        return x[tuple(index)]

    def cols_desc(self) -> str:
        """The im2col matrix of one image, as ``im2col`` returns it."""
        return "(N, L, KH*KW*C)" if self.channels_last else "(N, C*KH*KW, L)"

    @property
    def cols_axes(self) -> tuple[int, int]:
        """(rows axis, patches axis) of that (N, ...) matrix."""
        return (2, 1) if self.channels_last else (1, 2)

    def __eq__(self, other) -> bool:
        if isinstance(other, str):  # exact, so that equal values hash alike
            return other == self.name
        return isinstance(other, Layout) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Layout({self.name!r})"


def _place(values, axes):
    out = [0] * 4
    for v, a in zip(values, axes, strict=True):
        out[a] = v
    return tuple(out)


LAYOUTS = {
    "NCHW": Layout("NCHW", x_axes=(0, 1, 2, 3), w_axes=(0, 1, 2, 3), weight_name="OIHW",
                   channels_last=False),
    "NHWC": Layout("NHWC", x_axes=(0, 3, 1, 2), w_axes=(3, 2, 0, 1), weight_name="HWIO",
                   channels_last=True),
}
NCHW, NHWC = LAYOUTS["NCHW"], LAYOUTS["NHWC"]


@dataclass(frozen=True, eq=False)
class RankLayout:
    """An activation layout of any rank: channels first (N, C, *S) or last (N, *S, C).

    Weights are (O, I, *K) channels first and (*K, I, O) channels last, as in
    PyTorch and TensorFlow/JAX.  ``base`` is the 2-d layout of the same
    family, on which every rank runs (``numbaconv._rank``).
    """

    name: str
    weight_name: str
    rank: int
    channels_last: bool

    @property
    def base(self) -> Layout:
        return NHWC if self.channels_last else NCHW

    def x_dims(self, shape) -> tuple[int, int, tuple[int, ...]]:
        """(N, C, spatial sizes) of an activation shape in this layout."""
        if self.channels_last:
            return shape[0], shape[-1], tuple(shape[1:-1])
        return shape[0], shape[1], tuple(shape[2:])

    def w_dims(self, shape) -> tuple[int, int, tuple[int, ...]]:
        """(O, I, kernel sizes) of a weight shape in this layout."""
        if self.channels_last:
            return shape[-1], shape[-2], tuple(shape[:-2])
        return shape[0], shape[1], tuple(shape[2:])

    def x_shape(self, n, c, sizes) -> tuple:
        return (n, *sizes, c) if self.channels_last else (n, c, *sizes)

    def w_shape(self, o, i, kernel) -> tuple:
        return (*kernel, i, o) if self.channels_last else (o, i, *kernel)

    def x_desc(self) -> str:
        return "(" + ", ".join(self.name) + ")"

    @property
    def channel_axis(self) -> int:
        return self.rank + 1 if self.channels_last else 1

    def bias_shape(self, o: int) -> tuple[int, ...]:
        return (o,) if self.channels_last else (o,) + (1,) * self.rank

    def crop(self, x: np.ndarray, sizes) -> np.ndarray:
        """x's first ``sizes[i]`` positions along each spatial axis (a view)."""
        first = 1 + (not self.channels_last)
        index = [slice(None)] * x.ndim
        for i, size in enumerate(sizes):
            index[first + i] = slice(size)
        return x[tuple(index)]

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"RankLayout({self.name!r})"


RANK_LAYOUTS = {
    name: RankLayout(name, weight, len(name) - 2, name[1] != "C")
    for name, weight in (("NCW", "OIW"), ("NWC", "WIO"), ("NCHW", "OIHW"), ("NHWC", "HWIO"),
                         ("NCDHW", "OIDHW"), ("NDHWC", "DHWIO"))
}


def rank_layout_of(layout, rank: int) -> RankLayout:
    """The rank-``rank`` layout named ``layout``; a 2-d name stands for its family.

    ``"NCHW"`` and ``"NHWC"`` (conv2d's defaults) are read as channels first
    or last, so ``conv3d(..., layout="NHWC")`` means NDHWC.
    """
    if isinstance(layout, RankLayout) and layout.rank == rank:
        return layout
    names = [k for k, v in RANK_LAYOUTS.items() if v.rank == rank]
    if isinstance(layout, Layout | RankLayout):
        layout = layout.name
    if isinstance(layout, str):
        key = layout.upper()
        if key in ("NCHW", "NHWC"):
            key = names[key == "NHWC"]
        if key in RANK_LAYOUTS and RANK_LAYOUTS[key].rank == rank:
            return RANK_LAYOUTS[key]
    raise ValueError(f"layout: expected one of {names}, got {shown(layout)}")


def layout_of(layout) -> Layout:
    if isinstance(layout, Layout):
        return layout
    if not isinstance(layout, str) or layout.upper() not in LAYOUTS:
        raise ValueError(f"layout: expected one of {sorted(LAYOUTS)}, got {shown(layout)}")
    return LAYOUTS[layout.upper()]


def padding_mode_of(mode) -> str:
    if not isinstance(mode, str) or mode not in PADDING_MODES:
        raise ValueError(f"padding_mode: expected one of {list(PADDING_MODES)}, got {shown(mode)}")
    return mode


# --------------------------------------------------------------------------
# Scalars and pairs
# --------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)


def shown(value) -> str:
    """A user's value for a one-line message: arrays by shape and dtype, long reprs cut."""
    try:  # any attribute or repr may raise: that must not hide the real error
        shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
        if (isinstance(shape, tuple) and all(_is_int(d) for d in shape) and dtype is not None
                and math.prod(shape) > 8):
            return f"{type(value).__name__} of shape {tuple(shape)} and dtype {dtype}"
        text = " ".join(repr(value).split())
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 100 else text[:97] + "..."


def _is_sequence(value) -> bool:
    """A tuple, list or 1-d array (a 0-d array has no length)."""
    return isinstance(value, tuple | list) or isinstance(value, np.ndarray) and value.ndim == 1


def check_max(values, name: str, given) -> None:
    """ValueError naming ``name`` when a value exceeds MAX_VALUE."""
    if max(values, default=0) > MAX_VALUE:
        raise ValueError(f"{name}: expected values <= {MAX_VALUE} (2**31 - 1), got {shown(given)}")


def int_tuple(value, name: str, n: int, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints, each >= minimum, as an n-tuple."""
    if _is_int(value):
        out = (int(value),) * n
    elif _is_sequence(value) and len(value) == n and all(_is_int(v) for v in value):
        out = tuple(int(v) for v in value)
    else:
        what = "a pair of ints" if n == 2 else f"a tuple of {n} int{'s' * (n > 1)}"
        raise TypeError(f"{name}: expected an int or {what}, got {shown(value)}")
    if min(out) < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {shown(value)}")
    check_max(out, name, value)
    return out


def int_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a pair."""
    return int_tuple(value, name, 2, minimum)  # type: ignore[return-value]


Pads = tuple[int, ...]  # (low, high) per spatial axis, flat: (top, bottom, left, right) in 2-d
AXIS_NAMES = {1: ("width",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def _is_int_pair(p) -> bool:
    return isinstance(p, tuple | list) and len(p) == 2 and all(_is_int(v) for v in p)


def resolve_padding(padding, in_hw, kernel_hw, stride, dilation) -> Pads:
    """Turn every accepted padding form into explicit (low, high) per axis, flat.

    For n spatial axes (n = ``len(in_hw)``) it takes an int, n ints (the same
    on both sides of an axis), n (low, high) pairs (JAX's form), ``"valid"``
    or ``"same"``.  ``"same"`` follows TensorFlow/JAX: the output is
    ceil(input / stride) and an odd total puts the extra row/column at the
    high end (for stride 1 this is what PyTorch does too).
    """
    n = len(in_hw)
    if isinstance(padding, str):
        kind = padding.lower()
        if kind == "valid":
            return (0,) * (2 * n)
        if kind == "same":
            pads = []
            for size, k, s, d in zip(in_hw, kernel_hw, stride, dilation, strict=True):
                out = -(-size // s)
                total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        raise ValueError(
            f"padding: expected 'same', 'valid', an int or pairs, got {shown(padding)}")
    if _is_int(padding):
        pads = (int(padding),) * (2 * n)
    elif isinstance(padding, tuple | list) and len(padding) == n and all(
            _is_int(p) for p in padding):
        pads = tuple(int(p) for side in padding for p in (side, side))
    elif isinstance(padding, tuple | list) and len(padding) == n and all(
            _is_int_pair(p) for p in padding):
        pads = tuple(int(v) for pair in padding for v in pair)
    else:
        if n == 2:
            forms = "an int, a pair (ph, pw), ((top, bottom), (left, right))"
        else:
            forms = f"an int, {n} ints, {n} (low, high) pairs"
        raise TypeError(f"padding: expected {forms}, 'same' or 'valid', got {shown(padding)}")
    if min(pads) < 0:
        raise ValueError(f"padding: expected values >= 0, got {shown(padding)}")
    check_max(pads, "padding", padding)
    return pads


# --------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------
def as_float_array(obj, name: str) -> np.ndarray:
    """Any array-like as an ndarray of float32/float64 (not yet copied or cast)."""
    if isinstance(obj, np.ndarray):
        arr = obj
    else:
        try:
            arr = np.asarray(obj)
        except ValueError as err:
            if "sequence" in str(err) or "inhomogeneous" in str(err):
                raise ValueError(
                    f"{name}: expected a rectangular array of numbers, got a ragged "
                    f"{type(obj).__name__} ({err})"
                ) from None
            raise TypeError(f"{name}: cannot be read as a NumPy array: {type(obj).__name__} "
                            f"({err})") from None
        except Exception as err:  # e.g. a torch tensor that requires grad
            message = " ".join(str(err).split())
            raise TypeError(f"{name}: cannot be read as a NumPy array: {type(obj).__name__} "
                            f"({type(err).__name__}: {message})") from None
    if native(arr.dtype) not in SUPPORTED_DTYPES:
        what = "non-numeric " if arr.dtype.kind in "OUSV" else ""
        raise TypeError(
            f"{name}: unsupported {what}dtype {arr.dtype}; supported dtypes are float32 and "
            "float64"
        )
    return arr


def dtype_of(dtype) -> np.dtype:
    """A ``dtype=`` argument as float32 or float64, or a TypeError naming it."""
    try:
        if not isinstance(dtype, type | str | np.dtype):
            raise TypeError
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise TypeError(f"dtype: expected float32 or float64, got {shown(dtype)}") from None
    if dt not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def native(dtype) -> np.dtype:
    return np.dtype(dtype).newbyteorder("=")


def result_dtype(*arrays) -> np.dtype:
    """np.result_type of the inputs, in native byte order."""
    return native(np.result_type(*(native(a.dtype) for a in arrays if a is not None)))


def contiguous(arr: np.ndarray, dtype) -> np.ndarray:
    """C-contiguous, native-endian, of ``dtype``; copies only when it must.

    The result may alias the caller's array, so kernels treat it as read-only.
    """
    return np.ascontiguousarray(arr, dtype=dtype)


# --------------------------------------------------------------------------
# Geometry of one convolution, in canonical (N, C, H, W) / (O, I, KH, KW) terms
# --------------------------------------------------------------------------
class _Groups:
    """Channels per group, for the geometries (which have c, o and groups)."""

    c: int
    o: int
    groups: int

    @property
    def cg(self) -> int:
        return self.c // self.groups

    @property
    def og(self) -> int:
        return self.o // self.groups


@dataclass(frozen=True)
class Geometry(_Groups):
    n: int
    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: Pads
    groups: int
    padding_mode: str
    p: int  # output height
    q: int  # output width

    @property
    def flops(self) -> int:
        """Multiply-adds counted as two flops, the usual convention."""
        return 2 * self.n * self.o * self.p * self.q * self.cg * self.kh * self.kw


def output_hw(in_hw, kernel_hw, stride, dilation, pads, names=("x", "weight")):
    """Output (P, Q); raises when the dilated kernel exceeds the padded input."""
    out = []
    for i, (n, k, s, d) in enumerate(zip(in_hw, kernel_hw, stride, dilation, strict=True)):
        padded = n + pads[2 * i] + pads[2 * i + 1]
        extent = (k - 1) * d + 1
        if extent > padded:
            axis = AXIS_NAMES[len(in_hw)][i]
            raise ValueError(
                f"{names[1]}: dilated kernel {axis} {extent} is larger than the padded "
                f"input {axis} {padded} ({names[0]} {axis} {n} + padding "
                f"{pads[2 * i]}+{pads[2 * i + 1]})"
            )
        out.append((padded - extent) // s + 1)
    return tuple(out)


def check_padding_mode(mode: str, pads: Pads, in_hw) -> None:
    """PyTorch's limits: reflect needs pad < size, circular needs pad <= size."""
    if mode == "zeros" or mode == "replicate":
        return
    for i, n in enumerate(in_hw):
        axis = AXIS_NAMES[len(in_hw)][i]
        for pad in pads[2 * i : 2 * i + 2]:
            if mode == "reflect" and pad >= n:
                raise ValueError(
                    f"padding: reflect padding must be smaller than the input {axis} {n}, "
                    f"got {pad}"
                )
            if mode == "circular" and pad > n:
                raise ValueError(
                    f"padding: circular padding must be at most the input {axis} {n}, got {pad}"
                )


@dataclass(frozen=True)
class NdGeometry(_Groups):
    """One convolution in any rank, in canonical (N, C, *spatial) / (O, I, *kernel) terms."""

    n: int
    c: int
    o: int
    sizes: tuple[int, ...]  # input spatial sizes
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: Pads  # (low, high) per axis, flat
    groups: int
    padding_mode: str
    out: tuple[int, ...]  # output spatial sizes

    @property
    def rank(self) -> int:
        return len(self.sizes)

    @property
    def flops(self) -> int:
        return 2 * self.n * self.o * math.prod(self.out) * self.cg * math.prod(self.kernel)


def nd_geometry(x_shape, w_shape, layout: RankLayout, stride, padding, dilation, groups,
                padding_mode, names=("x", "weight"), in_memory: bool = True) -> NdGeometry:
    """Validate a convolution of any rank given by its shapes and return its geometry.

    ``names`` are what the messages call the input and the weight (callers
    that take shapes, such as conv2d_grad_input, name them differently).
    ``in_memory=False`` (numbaconv.dask: computed block by block) skips the
    check that the whole problem fits in this machine's memory.
    """
    x_name, w_name = names
    rank = layout.rank
    groups = groups_of(groups)
    n, c, sizes = layout.x_dims(x_shape)
    o, ci, kernel = layout.w_dims(w_shape)
    if min(c, *sizes) < 1:
        axes = ["channels", *AXIS_NAMES[rank]]
        raise ValueError(f"{x_name}: expected {', '.join(axes[:-1])} and {axes[-1]} >= 1, "
                         f"got shape {tuple(x_shape)}")
    if min(o, ci, *kernel) < 1:
        raise ValueError(f"{w_name}: expected every dimension >= 1, got shape "
                         f"{tuple(w_shape)}")
    if c % groups:
        raise ValueError(f"groups: input channels {c} are not divisible by groups={groups}")
    if o % groups:
        raise ValueError(f"groups: output channels {o} are not divisible by groups={groups}")
    if ci * groups != c:
        raise ValueError(
            f"{w_name}: expected {c // groups} input channels per group ({x_name} has {c} "
            f"channels, groups={groups}), got {ci} in {layout.weight_name} weight of shape "
            f"{tuple(w_shape)}"
        )
    stride = int_tuple(stride, "stride", rank, 1)
    dilation = int_tuple(dilation, "dilation", rank, 1)
    padding_mode = padding_mode_of(padding_mode)
    pads = resolve_padding(padding, sizes, kernel, stride, dilation)
    check_padding_mode(padding_mode, pads, sizes)
    out = output_hw(sizes, kernel, stride, dilation, pads, names)
    # The input (a contiguous copy, at float32 at least), the output, the
    # index tables over the padded axes and the (K, P) tables with their
    # temporaries (int64 each).
    if in_memory:
        padded = sum(sizes) + sum(pads)
        check_fits(4 * n * (c * math.prod(sizes) + o * math.prod(out)) + 16 * padded
                   + 32 * sum(k * p for k, p in zip(kernel, out, strict=True)),
                   f"a convolution of {x_name} {tuple(x_shape)} to an output "
                   f"{layout.x_shape(n, o, out)}")
    # Along an axis of one output pixel the stride is never applied: any
    # stride past the padded input's slack gives that one pixel.  The
    # smallest such stride keeps the tables (sized by stride * P) small.
    stride = tuple(
        min(s, sizes[i] + pads[2 * i] + pads[2 * i + 1] - (kernel[i] - 1) * dilation[i])
        if out[i] == 1 else s for i, s in enumerate(stride))
    return NdGeometry(n, c, o, sizes, kernel, stride, dilation, pads, groups, padding_mode, out)


def conv_geometry(x_shape, w_shape, layout: Layout, stride, padding, dilation, groups,
                  padding_mode, names=("x", "weight"), in_memory: bool = True) -> Geometry:
    """:func:`nd_geometry` of a conv2d problem given by 4-d shapes, as a 2-d Geometry."""
    nd = nd_geometry(x_shape, w_shape, RANK_LAYOUTS[layout.name], stride, padding, dilation,
                     groups, padding_mode, names, in_memory)
    (h, w), (kh, kw), (p, q) = nd.sizes, nd.kernel, nd.out
    return Geometry(nd.n, nd.c, h, w, nd.o, kh, kw, nd.stride, nd.dilation, nd.pads,
                    nd.groups, nd.padding_mode, p, q)


def groups_of(groups) -> int:
    """``groups`` as a positive int, or a TypeError/ValueError naming it."""
    if not _is_int(groups):
        raise TypeError(f"groups: expected an int, got {shown(groups)}")
    if groups < 1:
        raise ValueError(f"groups: expected an int >= 1, got {groups}")
    check_max((groups,), "groups", groups)
    return int(groups)


def physical_memory() -> int | None:
    """This machine's memory in bytes, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not POSIX
        return None


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.3g} GiB"


def check_fits(nbytes: int, what: str) -> None:
    """MemoryError before allocating, when ``what`` needs more bytes than the machine has.

    NumPy would allocate lazily and the OS kill the process when the pages are
    touched; a problem larger than the whole memory cannot succeed anyway.
    """
    limit = physical_memory()
    if limit is not None and nbytes > limit:
        raise MemoryError(f"{what} needs {_gib(nbytes)}, more than this machine's "
                          f"{_gib(limit)} of memory")


def ensure_ndim(arr: np.ndarray, name: str, allowed: tuple[int, ...], desc: str) -> None:
    if arr.ndim not in allowed:
        want = " or ".join(f"{d}-d" for d in allowed)
        raise ValueError(f"{name}: expected a {want} array {desc}, got shape {arr.shape}")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = [
    "AXIS_NAMES",
    "Geometry",
    "LAYOUTS",
    "Layout",
    "NdGeometry",
    "RANK_LAYOUTS",
    "RankLayout",
    "MAX_VALUE",
    "PADDING_MODES",
    "SUPPORTED_DTYPES",
    "as_float_array",
    "ceil_div",
    "check_fits",
    "check_max",
    "conv_geometry",
    "contiguous",
    "ensure_ndim",
    "groups_of",
    "int_pair",
    "int_tuple",
    "nd_geometry",
    "rank_layout_of",
    "layout_of",
    "output_hw",
    "padding_mode_of",
    "resolve_padding",
    "result_dtype",
]
