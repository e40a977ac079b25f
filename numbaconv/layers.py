"""Convolution layers of every rank: parameters, forward, and a cached backward.

In the style of the classic hand-written ``Convolution`` layer: ``forward``
keeps what ``backward`` needs, ``backward`` returns the input gradient and
stores the parameter gradients.  No autograd, no optimiser: update
``.weight`` and ``.bias`` with ``.grad_weight`` and ``.grad_bias`` yourself.

``layer.eval()`` switches a layer to inference, as in PyTorch: forward then
keeps nothing and runs plain ``conv2d`` (for Conv2d that is the
dispatcher's fastest plan, not the gather whose columns backward would
reuse: on ResNet-50's 3x3 layers at batch 1 the training forward took
1.26-1.67x its time); ``layer.train()`` switches back.

What forward keeps: the input (a reference, as PyTorch saves tensors: do
not modify it in place before backward), or for Conv2d its im2col columns
instead when the whole batch's columns fit in one workspace chunk
(``config.max_workspace_bytes``).  Then forward gathers them once into a
buffer the layer owns and backward's weight gradient skips its gather
(1.15-1.5x per training step on most of ResNet-50's 3x3 layers, see
docs/training.md); above that bound the memory held between the passes
would outgrow the gather it saves, so the columns are recomputed chunk by
chunk.
"""

from __future__ import annotations

import math

import numpy as np

from . import _activation, _args, _rank
from ._execute import quiet_fp
from ._plan import backward_plan
from .algorithms import im2col_gemm
from .backward import grad_bias, grad_input, grad_weight
from .conv import conv2d
from .transpose import transpose_backward, transpose_forward, transpose_problem

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]


def _positive_int(value, name: str) -> int:
    if not _args._is_int(value):
        raise TypeError(f"{name}: expected an int, got {_args.shown(value)}")
    if value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value}")
    _args.check_max((value,), name, value)
    return int(value)


def _uniform(rng: np.random.Generator, bound: float, shape, dtype) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class _Layer:
    """What both layers share: parameters, gradients, the cache and its checks."""

    weight: np.ndarray
    bias: np.ndarray | None
    grad_weight: np.ndarray | None
    grad_bias: np.ndarray | None

    rank = 2  # spatial axes
    _fuses_activation = True  # the transposed layers' forward has no activation

    def __init__(self, in_channels, out_channels, kernel_size, groups, bias, layout, dtype,
                 activation=None):
        self.activation = activation
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.groups = _positive_int(groups, "groups")
        for name, value in (("in_channels", self.in_channels),
                            ("out_channels", self.out_channels)):
            if value % self.groups:
                raise ValueError(f"groups: {name} {value} are not divisible by "
                                 f"groups={self.groups}")
        self.kernel_size = _args.int_tuple(kernel_size, "kernel_size", self.rank, 1)
        self.layout = (_args.layout_of(layout) if self.rank == 2 else
                       _args.rank_layout_of(layout, self.rank)).name
        self.dtype = _args.dtype_of(dtype)
        if not isinstance(bias, bool | np.bool_):
            raise TypeError(f"bias: expected True or False, got {_args.shown(bias)}")
        self.grad_weight = self.grad_bias = None
        self._cache = None
        self.training = True
        self._eval_forward = False  # the last forward ran in eval mode

    def _init_parameters(self, w_shape, fan_in: int, bias: bool, rng) -> None:
        # PyTorch's reset_parameters: kaiming_uniform_(a=sqrt(5)) gives
        # bound = gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + 5)), which
        # is 1 / sqrt(fan_in); the bias uses the same bound.
        _args.check_fits(math.prod(w_shape) * self.dtype.itemsize,
                         f"a weight of shape {tuple(w_shape)}")
        try:
            rng = np.random.default_rng(rng)
        except (TypeError, ValueError):
            raise TypeError(f"rng: expected a numpy.random.Generator, a non-negative int seed "
                            f"or None, got {_args.shown(rng)}") from None
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = _uniform(rng, bound, w_shape, self.dtype)
        self.bias = _uniform(rng, bound, (self.out_channels,), self.dtype) if bias else None

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def train(self, mode=True):
        """Training mode (the default): forward keeps what backward needs.  Returns the layer."""
        if not isinstance(mode, bool | np.bool_):
            raise TypeError(f"mode: expected True or False, got {_args.shown(mode)}")
        self.training = bool(mode)
        return self

    def eval(self):
        """Inference mode: forward keeps nothing, runs ``conv2d``'s own plan.  Returns the layer.

        ``backward`` then raises until a forward in training mode
        (``train()``).  The parameters stay as they are.
        """
        return self.train(False)

    def _inference(self, y: np.ndarray) -> np.ndarray:
        """Forget the previous forward's cache (and its memory): eval mode keeps nothing."""
        self._cache = None
        self._eval_forward = True
        return y

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """``[(weight, grad_weight), (bias, grad_bias)]`` (no bias pair without a bias)."""
        pairs = [(self.weight, self.grad_weight)]
        if self.bias is not None:
            pairs.append((self.bias, self.grad_bias))
        return pairs

    @property
    def _rank_layout(self) -> _args.RankLayout:
        return _args.RANK_LAYOUTS[self.layout]

    def _input(self, x, name="x"):
        x = _args.as_float_array(x, name)
        _args.ensure_ndim(x, name, (self.rank + 1, self.rank + 2),
                          f"{self._rank_layout.x_desc()} or unbatched")
        return x

    def _cached(self):
        if self._cache is None and self._eval_forward:
            raise ValueError(f"backward: the last forward() of this {type(self).__name__} ran in "
                             "eval mode, which keeps nothing for backward; call train() and "
                             "forward() again")
        if self._cache is None:
            raise ValueError(f"backward: expected a forward() call first; {type(self).__name__} "
                             "has no cached input (backward called before forward)")
        return self._cache

    def _grad_out(self, grad_out, expected: tuple[int, ...]) -> np.ndarray:
        grad_out = _args.as_float_array(grad_out, "grad_out")
        if grad_out.shape != expected:
            raise ValueError(f"grad_out: expected shape {expected} (the output of the last "
                             f"forward), got {grad_out.shape}")
        return grad_out

    @property
    def activation(self) -> str | None:
        """None, "relu", "relu6" or "silu": applied to the output (settable)."""
        return self._activation

    @activation.setter
    def activation(self, value) -> None:
        code = _activation.activation_code(value)
        if code != _activation.ACT_NONE and not self._fuses_activation:
            raise ValueError(f"activation: {type(self).__name__} takes none (PyTorch's has "
                             f"none either), got {value!r}; apply it to the output")
        self._act = code
        self._activation = value

    def _fused(self) -> str | None:
        """The activation forward fuses into its convolution.

        All of it, but for SiLU in training: its backward needs the
        activation's input, so the convolution then runs without it.
        """
        if self.training and self._act == _activation.ACT_SILU:
            return None
        return self.activation

    def _activated(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(the layer's output, what backward's activation gradient reads) in training.

        ``y`` is the convolution's result with :meth:`_fused` applied.  ReLU
        and ReLU6 read their own output (a reference, as PyTorch saves it);
        SiLU its input.
        """
        if self._act == _activation.ACT_NONE:
            return y, None
        if self._act == _activation.ACT_SILU:
            out = y.copy()
            _activation.apply(out, self._act)
            return out, y
        return y, y

    def _before_activation(self, gout: np.ndarray, kept) -> np.ndarray:
        """The gradient of the convolution's result, from the layer's ``gout``."""
        if self._act == _activation.ACT_NONE:
            return gout
        return np.ascontiguousarray(_activation.backward(gout, kept, self._act))

    def _store(self, gw, gb) -> None:
        # Parameters keep their dtype, whatever the inputs were promoted to.
        self.grad_weight = np.asarray(gw, self.weight.dtype)
        self.grad_bias = None if gb is None else np.asarray(gb, self.bias.dtype)


class Conv2d(_Layer):
    """A 2-D convolution layer with PyTorch's arguments and initialisation.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (int, int)
    padding : int, pair, explicit pairs, "same" or "valid"
        As in :func:`numbaconv.conv2d`.
    groups : int
    bias : bool
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
    layout : {"NCHW", "NHWC"}
        Activations ``(N, C, H, W)`` with an OIHW weight, or ``(N, H, W, C)``
        with an HWIO weight.
    activation : {None, "relu", "relu6", "silu"}
        Applied to the output, fused into the convolution (as
        :func:`numbaconv.conv2d`'s ``activation``); ``backward`` takes the
        gradient of the activated output.  For ReLU and ReLU6, forward keeps a
        reference to its output, as PyTorch does: do not modify it in place
        before backward.
    dtype : float32 or float64
    rng : numpy.random.Generator, int or None
        Source of the initial weights.

    Attributes
    ----------
    weight, bias : numpy.ndarray
        Drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
        ``fan_in = in_channels / groups * KH * KW``: PyTorch's default.
        ``bias`` is None when ``bias=False``.
    grad_weight, grad_bias : numpy.ndarray or None
        Set (overwritten, not accumulated) by :meth:`backward`.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> layer = numbaconv.Conv2d(3, 8, 3, padding=1, rng=0)
    >>> x = np.ones((2, 3, 5, 5), np.float32)
    >>> y = layer.forward(x)
    >>> y.shape, layer.weight.shape
    ((2, 8, 5, 5), (8, 3, 3, 3))
    >>> gx = layer.backward(np.ones_like(y))
    >>> gx.shape, layer.grad_weight.shape, layer.grad_bias.shape
    ((2, 3, 5, 5), (8, 3, 3, 3), (8,))
    >>> float(layer.grad_bias[0])
    50.0
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", *, layout="NCHW",
                 activation=None, dtype=np.float32, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, groups, bias, layout, dtype,
                         activation)
        kh, kw = self.kernel_size
        self.stride = _args.int_pair(stride, "stride", 1)
        self.dilation = _args.int_pair(dilation, "dilation", 1)
        _args.resolve_padding(padding, (1, 1), self.kernel_size, self.stride, self.dilation)
        self.padding = padding
        self.padding_mode = _args.padding_mode_of(padding_mode)
        cg = self.in_channels // self.groups
        w_shape = _args.layout_of(self.layout).w_shape(self.out_channels, cg, kh, kw)
        self._init_parameters(w_shape, cg * kh * kw, bias, rng)

    def _kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode,
                    activation=self._fused())

    @quiet_fp
    def forward(self, x) -> np.ndarray:
        """y = conv2d(x, weight, bias, activation=...); keeps x (and its columns when they
        fit) unless eval()."""
        layout = _args.layout_of(self.layout)
        x = self._input(x)
        unbatched = x.ndim == 3
        x4 = x[None] if unbatched else x
        if not self.training:  # (conv2d validates as below)
            y = conv2d(x4, self.weight, self.bias, layout=layout, **self._kwargs())
            return self._inference(y[0] if unbatched else y)
        g = _args.conv_geometry(x4.shape, self.weight.shape, layout, self.stride, self.padding,
                                self.dilation, self.groups, self.padding_mode)
        dtype = _args.result_dtype(x, self.weight, self.bias)
        cols = None
        # When the gradients gather columns (im2col_gemm's, not a direct or a
        # 1x1 kernel's), keep them if one chunk holds the whole batch.
        plan = backward_plan(g, layout, dtype) if g.n else None
        if plan is not None and plan.algorithm == "im2col_gemm" and plan.chunks == 1:
            prev = self._cache[3] if self._cache is not None else None
            bias = None if self.bias is None else self.bias.astype(dtype)
            cols, y = im2col_gemm.run_keeping_columns(
                plan, _args.contiguous(x4, dtype), _args.contiguous(self.weight, dtype), bias,
                prev, _activation.activation_code(self._fused()))
        if cols is None:
            y = conv2d(x4, self.weight, self.bias, layout=layout, **self._kwargs())
        y, kept = self._activated(y)
        # Like PyTorch's saved tensors, x itself (no copy unless its dtype or
        # layout needs one): an activation-sized copy costs ~15% of a 1x1 layer.
        self._cache = (g, dtype, None if cols is not None else _args.contiguous(x4, dtype),
                       cols, unbatched, kept)
        self._eval_forward = False
        return y[0] if unbatched else y

    @quiet_fp
    def backward(self, grad_out) -> np.ndarray:
        """grad_x of the last forward; stores ``grad_weight`` and ``grad_bias``."""
        layout = _args.layout_of(self.layout)
        g, dtype, x, cols, unbatched, kept = self._cached()
        expected = layout.x_shape(g.n, g.o, g.p, g.q)[unbatched:]
        grad_out = self._grad_out(grad_out, expected)
        gout = _args.contiguous(grad_out[None] if unbatched else grad_out, dtype)
        gout = self._before_activation(gout, kept)
        w = _args.contiguous(self.weight, dtype)
        gw = grad_weight(g, layout, dtype, x, gout, cols=cols)
        gb = grad_bias(layout, gout) if self.bias is not None else None
        self._store(gw, gb)
        gx = grad_input(g, layout, dtype, w, gout)
        return gx[0] if unbatched else gx

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, kernel_size="
                f"{self.kernel_size}, stride={self.stride}, padding={self.padding!r}, "
                f"dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}, "
                f"padding_mode={self.padding_mode!r}, layout={self.layout!r}, "
                f"activation={self.activation!r}, dtype={self.dtype.name})")


class _ConvNd(_Layer):
    """Conv1d and Conv3d: the layer of :func:`numbaconv.conv1d` / :func:`numbaconv.conv3d`."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", *, layout=None,
                 activation=None, dtype=np.float32, rng=None):
        layout = self._default_layout if layout is None else layout
        super().__init__(in_channels, out_channels, kernel_size, groups, bias, layout, dtype,
                         activation)
        self.stride = _args.int_tuple(stride, "stride", self.rank, 1)
        self.dilation = _args.int_tuple(dilation, "dilation", self.rank, 1)
        ones = (1,) * self.rank
        _args.resolve_padding(padding, ones, self.kernel_size, self.stride, self.dilation)
        self.padding = padding
        self.padding_mode = _args.padding_mode_of(padding_mode)
        cg = self.in_channels // self.groups
        w_shape = self._rank_layout.w_shape(self.out_channels, cg, self.kernel_size)
        self._init_parameters(w_shape, cg * math.prod(self.kernel_size), bias, rng)

    @quiet_fp
    def forward(self, x) -> np.ndarray:
        """y = conv(x, weight, bias, activation=...); keeps x for backward unless in eval mode."""
        layout = self._rank_layout
        x = self._input(x)
        unbatched = x.ndim == self.rank + 1
        xb = x[None] if unbatched else x
        g = _args.nd_geometry(xb.shape, self.weight.shape, layout, self.stride, self.padding,
                              self.dilation, self.groups, self.padding_mode)
        dtype = _args.result_dtype(x, self.weight, self.bias)
        xb = _args.contiguous(xb, dtype)
        low = _rank.lower(g, layout)
        bias = None if self.bias is None else self.bias.astype(dtype)
        y = _rank.forward(low, xb, _args.contiguous(self.weight, dtype), bias, dtype,
                          self._fused())
        if not self.training:
            return self._inference(y[0] if unbatched else y)
        y, kept = self._activated(y)
        self._cache = (low, dtype, xb, unbatched, kept)
        self._eval_forward = False
        return y[0] if unbatched else y

    @quiet_fp
    def backward(self, grad_out) -> np.ndarray:
        """grad_x of the last forward; stores ``grad_weight`` and ``grad_bias``."""
        low, dtype, x, unbatched, kept = self._cached()
        grad_out = self._grad_out(grad_out, low.y_shape()[unbatched:])
        gout = _args.contiguous(grad_out[None] if unbatched else grad_out, dtype)
        gout = self._before_activation(gout, kept)
        gw = _rank.grad_weight(low, dtype, x, gout)
        gb = _rank.grad_bias(low.layout, gout) if self.bias is not None else None
        self._store(gw, gb)
        gx = _rank.grad_input(low, dtype, _args.contiguous(self.weight, dtype), gout)
        return gx[0] if unbatched else gx

    __repr__ = Conv2d.__repr__  # the same arguments, under the class's own name


class Conv1d(_ConvNd):
    """A 1-D convolution layer with PyTorch's arguments and initialisation.

    As :class:`Conv2d`, in 1-d: ``layout`` is "NCW" (OIW weight) or "NWC"
    (WIO weight); sizes and hyper-parameters take one value.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> layer = numbaconv.Conv1d(2, 4, 3, padding="same", rng=0)
    >>> y = layer(np.ones((1, 2, 10), np.float32))
    >>> y.shape, layer.weight.shape, layer.backward(np.ones_like(y)).shape
    ((1, 4, 10), (4, 2, 3), (1, 2, 10))
    """

    rank = 1
    _default_layout = "NCW"


class Conv3d(_ConvNd):
    """A 3-D convolution layer with PyTorch's arguments and initialisation.

    As :class:`Conv2d`, in 3-d: ``layout`` is "NCDHW" (OIDHW weight) or
    "NDHWC" (DHWIO weight); sizes and hyper-parameters take one value or
    three.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> layer = numbaconv.Conv3d(2, 4, 3, stride=(1, 2, 2), padding=1, rng=0)
    >>> y = layer(np.ones((1, 2, 4, 8, 8), np.float32))
    >>> y.shape, layer.weight.shape, layer.backward(np.ones_like(y)).shape
    ((1, 4, 4, 4, 4), (4, 2, 3, 3, 3), (1, 2, 4, 8, 8))
    """

    rank = 3
    _default_layout = "NCDHW"


class _ConvTranspose(_Layer):
    """ConvTranspose1d/2d/3d: the layer of the transposed convolution of each rank."""

    _fuses_activation = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros", *,
                 layout=None, dtype=np.float32, rng=None):
        layout = self._default_layout if layout is None else layout
        super().__init__(in_channels, out_channels, kernel_size, groups, bias, layout, dtype)
        if _args.padding_mode_of(padding_mode) != "zeros":
            raise ValueError(f"padding_mode: {type(self).__name__} supports only 'zeros', got "
                             f"{padding_mode!r}")
        self.stride = _args.int_tuple(stride, "stride", self.rank, 1)
        self.dilation = _args.int_tuple(dilation, "dilation", self.rank, 1)
        self.padding = padding
        self.output_padding = output_padding
        self.padding_mode = padding_mode
        # Validate the hyper-parameters now, on a 1x1 input.
        lay = self._rank_layout
        og = self.out_channels // self.groups
        w_shape = lay.w_shape(self.in_channels, og, self.kernel_size)
        transpose_problem(lay.x_shape(1, self.in_channels, (1,) * self.rank), w_shape, lay,
                          self.stride, padding, output_padding, self.groups, self.dilation, None)
        self._init_parameters(w_shape, og * math.prod(self.kernel_size), bias, rng)

    def forward(self, x, output_size=None) -> np.ndarray:
        """y = conv_transpose(x, weight, bias); keeps x for backward unless in eval mode."""
        layout = self._rank_layout
        x = self._input(x)
        unbatched = x.ndim == self.rank + 1
        x4 = x[None] if unbatched else x
        out_pad = 0 if output_size is not None else self.output_padding
        prob = transpose_problem(x4.shape, self.weight.shape, layout, self.stride,
                                 self.padding, out_pad, self.groups, self.dilation,
                                 output_size, x.ndim)
        dtype = _args.result_dtype(x, self.weight, self.bias)
        y = transpose_forward(prob, x4, self.weight, self.bias, dtype)
        if not self.training:
            return self._inference(y[0] if unbatched else y)
        self._cache = (prob, dtype, _args.contiguous(x4, dtype), unbatched)
        self._eval_forward = False
        return y[0] if unbatched else y

    def backward(self, grad_out) -> np.ndarray:
        """grad_x of the last forward; stores ``grad_weight`` and ``grad_bias``."""
        prob, dtype, x, unbatched = self._cached()
        grad_out = self._grad_out(grad_out, prob.out_shape()[unbatched:])
        gout = grad_out[None] if unbatched else grad_out
        gx, gw, gb = transpose_backward(prob, gout, x, _args.contiguous(self.weight, dtype),
                                        dtype, (True, True, self.bias is not None))
        self._store(gw, gb)
        return gx[0] if unbatched else gx

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.in_channels}, {self.out_channels}, kernel_size="
                f"{self.kernel_size}, stride={self.stride}, padding={self.padding!r}, "
                f"output_padding={self.output_padding!r}, groups={self.groups}, "
                f"bias={self.bias is not None}, dilation={self.dilation}, "
                f"layout={self.layout!r}, dtype={self.dtype.name})")


class ConvTranspose2d(_ConvTranspose):
    """A 2-D transposed convolution layer with PyTorch's arguments and initialisation.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size, stride, dilation : int or (int, int)
    padding : int, (ph, pw), ((top, bottom), (left, right)), "same" or "valid"
        As in :func:`numbaconv.conv_transpose2d`.
    output_padding : int or (int, int)
        Each smaller than ``max(stride, dilation)``.
    groups : int
    bias : bool
    padding_mode : {"zeros"}
        The only mode PyTorch's ConvTranspose2d supports.
    layout : {"NCHW", "NHWC"}
        NCHW weight ``(C_in, O/groups, KH, KW)``; NHWC ``(KH, KW, O/groups, C_in)``.
    dtype : float32 or float64
    rng : numpy.random.Generator, int or None

    Attributes
    ----------
    weight, bias : numpy.ndarray
        U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with PyTorch's fan_in for this
        weight, ``out_channels / groups * KH * KW``.
    grad_weight, grad_bias : numpy.ndarray or None
        Set by :meth:`backward`.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> up = numbaconv.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, rng=0)
    >>> y = up(np.ones((1, 4, 5, 5), np.float32))
    >>> y.shape, up.weight.shape
    ((1, 2, 10, 10), (4, 2, 3, 3))
    >>> up.backward(np.ones_like(y)).shape
    (1, 4, 5, 5)
    >>> up.forward(np.ones((1, 4, 5, 5), np.float32), output_size=(9, 9)).shape
    (1, 2, 9, 9)
    """

    _default_layout = "NCHW"


class ConvTranspose1d(_ConvTranspose):
    """A 1-D transposed convolution layer: :class:`ConvTranspose2d` in 1-d.

    ``layout`` is "NCW" (weight ``(C_in, O/groups, K)``) or "NWC" (``(K,
    O/groups, C_in)``).

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> up = numbaconv.ConvTranspose1d(4, 2, 4, stride=2, padding=1, rng=0)
    >>> up(np.ones((1, 4, 8), np.float32)).shape
    (1, 2, 16)
    """

    rank = 1
    _default_layout = "NCW"


class ConvTranspose3d(_ConvTranspose):
    """A 3-D transposed convolution layer: :class:`ConvTranspose2d` in 3-d.

    ``layout`` is "NCDHW" (weight ``(C_in, O/groups, KD, KH, KW)``) or
    "NDHWC" (``(KD, KH, KW, O/groups, C_in)``).

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> up = numbaconv.ConvTranspose3d(4, 2, 2, stride=2, rng=0)
    >>> y = up(np.ones((1, 4, 2, 3, 3), np.float32))
    >>> y.shape, up.backward(np.ones_like(y)).shape
    ((1, 2, 4, 6, 6), (1, 4, 2, 3, 3))
    """

    rank = 3
    _default_layout = "NCDHW"
