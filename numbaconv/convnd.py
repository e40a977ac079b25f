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
from .backward import _needs
from .packed import PackedWeight
from .transpose import conv_transpose

__all__ = ["conv1d", "conv1d_backward", "conv3d", "conv3d_backward", "conv_transpose1d",
           "conv_transpose3d", "conv_nd", "conv_nd_backward", "explain_nd"]


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
            layout, padding_mode="zeros") -> np.ndarray:
    """The convolution of ``rank`` spatial axes; conv1d and conv3d call this."""
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
                      None if bias is None else _args.contiguous(bias, dtype), dtype)
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


# --------------------------------------------------------------------------
# The public functions of each rank
# --------------------------------------------------------------------------
def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, layout="NCW",
           padding_mode="zeros"):
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
                   padding_mode=padding_mode)


def conv3d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           layout="NCDHW", padding_mode="zeros"):
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
                   padding_mode=padding_mode)


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

