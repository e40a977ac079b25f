"""conv1d and conv3d, their gradients and transposes: the 2-d functions in every rank.

Arguments and results follow :func:`numbaconv.conv2d` exactly, with one
value per spatial axis: ``stride=(sd, sh, sw)``, ``padding=((d0, d1), (h0,
h1), (w0, w1))`` (JAX's form), and so on.  Layouts are NCW/NWC with OIW/WIO
weights in 1-d and NCDHW/NDHWC with OIDHW/DHWIO weights in 3-d; the 2-d
names "NCHW"/"NHWC" are also read as channels first/last.  Every rank runs
on the 2-d engine (``numbaconv._rank``).
"""

from __future__ import annotations

import numpy as np

from . import _args, _rank
from ._activation import activation_code
from .backward import _needs
from .packed import PackedWeight
from .transpose import conv_transpose

__all__ = ["conv1d", "conv1d_backward", "conv3d", "conv3d_backward", "conv_transpose1d",
           "conv_transpose3d", "conv_nd", "conv_nd_backward", "explain_nd", "im2col_nd",
           "col2im_nd"]


def _inputs(rank, x, weight, bias, layout):
    """Array-likes -> (layout, x batched, unbatched?, weight, bias), validated, not copied."""
    layout = _args.rank_layout_of(layout, rank)
    x = _args.as_float_array(x, "x")
    weight = _args.as_float_array(weight, "weight")
    bias = None if bias is None else _args.as_float_array(bias, "bias")
    if x.ndim not in (rank + 1, rank + 2):
        desc = f"{layout.x_desc()} or unbatched {layout.x_desc().replace('N, ', '')}"
        _args.ensure_ndim(x, "x", (rank + 2, rank + 1), desc)
    _args.ensure_ndim(weight, "weight", (rank + 2,), f"in {layout.weight_name} order")
    unbatched = x.ndim == rank + 1
    return layout, (x[None] if unbatched else x), unbatched, weight, bias


def conv_nd(rank: int, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
            layout, padding_mode="zeros", activation=None) -> np.ndarray:
    """The convolution of ``rank`` spatial axes; conv1d and conv3d call this."""
    activation_code(activation)  # checked here too: a call with N == 0 runs no conv2d
    if isinstance(weight, PackedWeight):
        raise TypeError(f"weight: a PackedWeight is for conv2d only; pass the {rank}-d weight "
                        "array")
    layout, x, unbatched, weight, bias = _inputs(rank, x, weight, bias, layout)
    g = _args.nd_geometry(x.shape, weight.shape, layout, stride, padding, dilation, groups,
                          padding_mode)
    if bias is not None and bias.shape != (g.o,):
        raise ValueError(f"bias: expected shape ({g.o},) (one per output channel), got "
                         f"{bias.shape}")
    dtype = _args.result_dtype(x, weight, bias)
    y = _rank.forward(_rank.lower(g, layout), _args.contiguous(x, dtype),
                      _args.contiguous(weight, dtype),
                      None if bias is None else _args.contiguous(bias, dtype), dtype,
                      activation)
    return y[0] if unbatched else y


def conv_nd_backward(rank: int, grad_out, x, weight, stride=1, padding=0, dilation=1,
                     groups=1, *, layout, padding_mode="zeros", needs=(True, True, True)):
    """(grad_x, grad_weight, grad_bias) of :func:`conv_nd`; conv1d/3d_backward call this."""
    need_x, need_w, need_b = _needs(needs)
    grad_out = _args.as_float_array(grad_out, "grad_out")
    layout, x, unbatched, weight, _ = _inputs(rank, x, weight, None, layout)
    g = _args.nd_geometry(x.shape, weight.shape, layout, stride, padding, dilation, groups,
                          padding_mode)
    expected = layout.x_shape(g.n, g.o, g.out)[unbatched:]
    if grad_out.shape != expected:
        raise ValueError(f"grad_out: expected shape {expected} (the conv{rank}d output for x of "
                         f"shape {x.shape[unbatched:]} and weight of shape {weight.shape}), "
                         f"got {grad_out.shape}")
    dtype = _args.result_dtype(grad_out, x, weight)
    gout = _args.contiguous(grad_out[None] if unbatched else grad_out, dtype)
    low = _rank.lower(g, layout)
    gx = gw = gb = None
    if need_x:
        gx = _rank.grad_input(low, dtype, _args.contiguous(weight, dtype), gout)
        gx = gx[0] if unbatched else gx
    if need_w:
        gw = _rank.grad_weight(low, dtype, _args.contiguous(x, dtype), gout)
    if need_b:
        gb = _rank.grad_bias(layout, gout)
    return gx, gw, gb


def explain_nd(x_shape, w_shape, bias_shape, stride, padding, dilation, groups, layout,
               padding_mode, dtype, algorithm) -> _rank.NdPlan:
    """explain() of a 1-d or 3-d problem (the rank is the weight's ndim - 2)."""
    from ._plan import make_plan

    rank = len(w_shape) - 2
    layout = _args.rank_layout_of(layout, rank)
    if len(x_shape) == rank + 1:
        x_shape = (1, *x_shape)
    if len(x_shape) != rank + 2:
        raise ValueError(f"x: expected a {rank + 2}-d shape {layout.x_desc()} for a "
                         f"{len(w_shape)}-d weight (or {rank + 1}-d unbatched), got "
                         f"{tuple(x_shape)}")
    g = _args.nd_geometry(x_shape, w_shape, layout, stride, padding, dilation, groups,
                          padding_mode)
    if bias_shape is not None and bias_shape != (g.o,):
        raise ValueError(f"bias: expected shape ({g.o},), got {bias_shape}")
    low = _rank.lower(g, layout)
    chunk = max((nr for _, nr in low.chunks(np.dtype(dtype).itemsize)), default=0)
    plan = make_plan(low.geometry2(chunk), layout.base, np.dtype(dtype), algorithm)
    return _rank.NdPlan(rank, layout, g, plan, low.rows, chunk)


def _patches(layout, x_shape, kernel_size, stride, padding, dilation, padding_mode,
             x_name="x") -> _rank.Lowered:
    """The lowering of an im2col/col2im problem: a convolution with one output channel."""
    kernel = _args.int_tuple(kernel_size, "kernel_size", layout.rank, 1)
    c = layout.x_dims(x_shape)[1]
    g = _args.nd_geometry(x_shape, layout.w_shape(1, c, kernel), layout, stride, padding,
                          dilation, 1, padding_mode, names=(x_name, "kernel_size"))
    return _rank.lower(g, layout)


# The 2-d im2col of NDHWC's folded rows has columns (kh, kw, kd, c); these axes of
# (N, L, KH, KW, KD, C) put them in (kd, kh, kw, c) order.
_TAPS_FIRST = (0, 1, 4, 2, 3, 5)


def im2col_nd(x, kernel_size, stride, padding, dilation, layout, padding_mode) -> np.ndarray:
    """im2col of a 1-d or 3-d input (``numbaconv.im2col`` with a rank-1 or rank-3 layout).

    Channels first: ``(N, C*prod(K), L)``, rows in (c, kd, kh, kw) order.
    Channels last: ``(N, L, prod(K)*C)``, columns in (kd, kh, kw, c) order.
    ``L`` is the number of output positions, depth-major.
    """
    from .conv import im2col

    x = _args.as_float_array(x, "x")
    unbatched = x.ndim == layout.rank + 1
    if x.ndim not in (layout.rank + 1, layout.rank + 2):
        _args.ensure_ndim(x, "x", (layout.rank + 2, layout.rank + 1), layout.x_desc())
    xb = x[None] if unbatched else x
    low = _patches(layout, xb.shape, kernel_size, stride, padding, dilation, padding_mode)
    dtype = _args.native(x.dtype)
    g, kw = low.nd, low.conv_kwargs()
    kw.pop("groups")
    two_d = im2col(low.fold(_args.contiguous(xb, dtype), 0, low.rows, dtype, kept=False),
                   low.plane.kernel, **kw)  # (rows, R, PQ) or (rows, PQ, R)
    length, rows = int(np.prod(g.out)), g.c * int(np.prod(g.kernel))
    if not low.folds:
        cols = two_d
    elif layout.channels_last:
        kd, kh, kwd = g.kernel
        cols = two_d.reshape(g.n, length, kh, kwd, kd, g.c).transpose(_TAPS_FIRST)
        cols = np.ascontiguousarray(cols).reshape(g.n, length, rows)
    else:
        cols = two_d.reshape(g.n, g.out[0], rows, length // g.out[0]).transpose(0, 2, 1, 3)
        cols = np.ascontiguousarray(cols).reshape(g.n, rows, length)
    return cols[0] if unbatched else cols


def col2im_nd(cols, output_size, kernel_size, stride, padding, dilation, layout,
              padding_mode) -> np.ndarray:
    """col2im of 1-d or 3-d columns: the adjoint of :func:`im2col_nd`."""
    from .conv import col2im

    cols = _args.as_float_array(cols, "cols")
    if cols.ndim not in (2, 3):
        raise ValueError(f"cols: expected a 3-d array (N, rows, L) or 2-d unbatched, got shape "
                         f"{cols.shape}")
    unbatched = cols.ndim == 2
    cb = cols[None] if unbatched else cols
    sizes = _args.int_tuple(output_size, "output_size", layout.rank, 1)
    kernel = _args.int_tuple(kernel_size, "kernel_size", layout.rank, 1)
    rows_axis, length_axis = (2, 1) if layout.channels_last else (1, 2)
    taps = int(np.prod(kernel))
    if cb.shape[rows_axis] % taps:
        raise ValueError(f"cols: expected axis {rows_axis} to be a multiple of the "
                         f"{taps} kernel taps, got shape {cols.shape}")
    n, c = cb.shape[0], cb.shape[rows_axis] // taps
    low = _patches(layout, layout.x_shape(n, c, sizes), kernel, stride, padding, dilation,
                   padding_mode, x_name="output_size")
    g = low.nd
    length = int(np.prod(g.out))
    if cb.shape[length_axis] != length:
        raise ValueError(f"cols: expected {length} patches ({'x'.join(map(str, g.out))}) on "
                         f"axis {length_axis} for output_size {sizes}, got shape {cols.shape}")
    dtype = _args.native(cols.dtype)
    cb = _args.contiguous(cb, dtype)
    kw = low.conv_kwargs()
    kw.pop("groups")
    hw = low.plane.sizes
    if not low.folds:
        x = col2im(cb, hw, low.plane.kernel, **kw).reshape(low.x_shape())
        return x[0] if unbatched else x
    kd, kh, kwd = g.kernel
    plane, rows = length // g.out[0], c * taps
    if layout.channels_last:  # to (rows, PQ, (kh, kw, kd, c))
        two_d = cb.reshape(n, length, kd, kh, kwd, c).transpose(0, 1, 3, 4, 2, 5)
        two_d = two_d.reshape(low.rows, plane, rows)
    else:  # to (rows, (c, kd, kh, kw), PQ)
        two_d = cb.reshape(n, rows, g.out[0], plane).transpose(0, 2, 1, 3)
        two_d = two_d.reshape(low.rows, rows, plane)
    x2 = col2im(np.ascontiguousarray(two_d), hw, (kh, kwd), **kw)
    x = np.zeros(low.x_shape(), dtype)
    low.unfold_into(x, x2, 0, low.rows)
    return x[0] if unbatched else x


# --------------------------------------------------------------------------
# The public functions of each rank
# --------------------------------------------------------------------------
def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NCW",
           padding_mode="zeros", activation=None):
    """1-D convolution (cross-correlation), as ``torch.nn.functional.conv1d``.

    Parameters
    ----------
    x : array_like
        ``(N, C, W)`` for ``layout="NCW"`` or ``(N, W, C)`` for ``"NWC"``;
        a 2-d unbatched input gives a 2-d output.
    weight : array_like
        ``(O, C/groups, K)`` (OIW) for NCW, ``(K, C/groups, O)`` (WIO) for NWC.
    bias : array_like, optional
        ``(O,)``.
    stride, dilation : int or (int,)
    padding : int, (p,), ((low, high),), "valid" or "same"
    groups : int
    layout : {"NCW", "NWC"}
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
    activation : {None, "relu", "relu6", "silu"}
        Fused into the kernels' write-out, as in :func:`numbaconv.conv2d`.

    Returns
    -------
    numpy.ndarray
        ``(N, O, W_out)`` or ``(N, W_out, O)``, dtype
        ``np.result_type(x, weight, bias)``.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.arange(6, dtype=np.float32).reshape(1, 1, 6)
    >>> numbaconv.conv1d(x, np.ones((1, 1, 3), np.float32))
    array([[[ 3.,  6.,  9., 12.]]], dtype=float32)
    >>> numbaconv.conv1d(x, np.ones((1, 1, 3), np.float32), stride=2, padding="same").shape
    (1, 1, 3)
    """
    return conv_nd(1, x, weight, bias, stride, padding, dilation, groups, layout=layout,
                   padding_mode=padding_mode, activation=activation)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           layout="NCDHW", padding_mode="zeros", activation=None):
    """3-D convolution (cross-correlation), as ``torch.nn.functional.conv3d``.

    Parameters
    ----------
    x : array_like
        ``(N, C, D, H, W)`` for ``layout="NCDHW"`` or ``(N, D, H, W, C)`` for
        ``"NDHWC"``; a 4-d unbatched input gives a 4-d output.
    weight : array_like
        ``(O, C/groups, KD, KH, KW)`` (OIDHW) for NCDHW, ``(KD, KH, KW,
        C/groups, O)`` (DHWIO) for NDHWC.
    bias : array_like, optional
        ``(O,)``.
    stride, dilation : int or (int, int, int)
    padding : int, (pd, ph, pw), three (low, high) pairs, "valid" or "same"
    groups : int
    layout : {"NCDHW", "NDHWC"}
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
    activation : {None, "relu", "relu6", "silu"}
        Fused into the kernels' write-out, as in :func:`numbaconv.conv2d`.

    Returns
    -------
    numpy.ndarray
        ``(N, O, D_out, H_out, W_out)`` or ``(N, D_out, H_out, W_out, O)``.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.ones((1, 2, 4, 5, 5), np.float32)
    >>> w = np.ones((3, 2, 3, 3, 3), np.float32)
    >>> y = numbaconv.conv3d(x, w, padding=1)
    >>> y.shape, float(y[0, 0, 1, 2, 2]), float(y[0, 0, 0, 0, 0])
    ((1, 3, 4, 5, 5), 54.0, 16.0)
    >>> numbaconv.conv3d(x.transpose(0, 2, 3, 4, 1), w.transpose(2, 3, 4, 1, 0),
    ...                  stride=(1, 2, 2), layout="NDHWC").shape
    (1, 2, 2, 2, 3)
    """
    return conv_nd(3, x, weight, bias, stride, padding, dilation, groups, layout=layout,
                   padding_mode=padding_mode, activation=activation)


def conv1d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    layout="NCW", padding_mode="zeros", needs=(True, True, True)):
    """Gradients of :func:`conv1d` with respect to x, weight and bias.

    As :func:`numbaconv.conv2d_backward`, in 1-d: returns ``(grad_x,
    grad_weight, grad_bias)``, None where ``needs`` is False.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.arange(5.0).reshape(1, 1, 5)
    >>> gx, gw, gb = numbaconv.conv1d_backward(np.ones((1, 1, 3)), x, np.ones((1, 1, 3)))
    >>> gx[0, 0], gw[0, 0], gb
    (array([1., 2., 3., 2., 1.]), array([3., 6., 9.]), array([3.]))
    """
    return conv_nd_backward(1, grad_out, x, weight, stride, padding, dilation, groups,
                            layout=layout, padding_mode=padding_mode, needs=needs)


def conv3d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    layout="NCDHW", padding_mode="zeros", needs=(True, True, True)):
    """Gradients of :func:`conv3d` with respect to x, weight and bias.

    As :func:`numbaconv.conv2d_backward`, in 3-d.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x, w = np.ones((1, 1, 3, 3, 3)), np.ones((1, 1, 2, 2, 2))
    >>> gx, gw, gb = numbaconv.conv3d_backward(np.ones((1, 1, 2, 2, 2)), x, w)
    >>> float(gx[0, 0, 1, 1, 1]), float(gx[0, 0, 0, 0, 0]), gw.shape, gb
    (8.0, 1.0, (1, 1, 2, 2, 2), array([8.]))
    """
    return conv_nd_backward(3, grad_out, x, weight, stride, padding, dilation, groups,
                            layout=layout, padding_mode=padding_mode, needs=needs)


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, layout="NCW", output_size=None):
    """1-D transposed convolution, as ``torch.nn.functional.conv_transpose1d``.

    As :func:`numbaconv.conv_transpose2d`, in 1-d: x ``(N, C_in, W)`` (NCW)
    or ``(N, W, C_in)`` (NWC); weight ``(C_in, O/groups, K)`` or ``(K,
    O/groups, C_in)``; ``padding`` also takes ``((low, high),)`` and
    ``"same"`` (output = input * stride).

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> numbaconv.conv_transpose1d(np.array([[[1.0, 2.0]]]), np.ones((1, 1, 3)), stride=2)
    array([[[1., 1., 3., 2., 2.]]])
    """
    return conv_transpose(1, x, weight, bias, stride, padding, output_padding, groups,
                          dilation, layout, output_size)


def conv_transpose3d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, layout="NCDHW", output_size=None):
    """3-D transposed convolution, as ``torch.nn.functional.conv_transpose3d``.

    As :func:`numbaconv.conv_transpose2d`, in 3-d: x ``(N, C_in, D, H, W)``
    (NCDHW) or ``(N, D, H, W, C_in)`` (NDHWC); weight ``(C_in, O/groups, KD,
    KH, KW)`` or ``(KD, KH, KW, O/groups, C_in)``.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> y = numbaconv.conv_transpose3d(np.ones((1, 2, 2, 2, 2)), np.ones((2, 4, 2, 2, 2)),
    ...                                stride=2)
    >>> y.shape, float(y.sum())
    ((1, 4, 4, 4, 4), 512.0)
    """
    return conv_transpose(3, x, weight, bias, stride, padding, output_padding, groups,
                          dilation, layout, output_size)

