"""Gradients of conv2d: with respect to the input, the weight and the bias.

The gradients are computed by the algorithm the backward rules pick
(``algorithms.BACKWARD_RULES``): im2col_gemm's are GEMMs around the
forward's gather and scatter kernels (grad_x is col2im of ``W^T @
grad_out``; a reflected, replicated or wrapped position was *read* from an
input element, so its gradient is added back to that element, which the
index tables already encode), gemm_1x1's need no col2im,
direct_depthwise has direct kernels, and for a stride-1 layer with zero
padding, winograd's and indirect_gemm's grad_x is their forward convolution
of grad_out with the weight turned round (``algorithms._adjoint``).
grad_bias is the sum of grad_out over the batch and spatial axes.
Chunking follows the forward's plan under the same workspace bound.
"""

from __future__ import annotations

import numpy as np

from . import _args
from ._execute import quiet_fp
from ._plan import backward_plan
from .algorithms import REGISTRY

__all__ = ["conv2d_backward", "conv2d_grad_input", "conv2d_grad_weight"]

# --------------------------------------------------------------------------
# Argument handling
# --------------------------------------------------------------------------
def _shape_arg(value, name: str, ndims: tuple[int, ...]) -> tuple[int, ...]:
    """A shape given as ints, or the shape of an array."""
    if isinstance(value, tuple | list) and all(_args._is_int(v) for v in value):
        shape = tuple(int(v) for v in value)
    elif isinstance(value, np.ndarray):
        shape = value.shape
    else:
        raise TypeError(f"{name}: expected a shape (a tuple of ints) or an array, got "
                        f"{_args.shown(value)}")
    if len(shape) not in ndims or min(shape, default=0) < 0:
        want = " or ".join(f"{d}" for d in ndims)
        raise ValueError(f"{name}: expected {want} non-negative sizes, got {shape}")
    return shape


def _needs(needs) -> tuple[bool, bool, bool]:
    if (
        not isinstance(needs, tuple | list)
        or len(needs) != 3
        or not all(isinstance(v, bool | np.bool_) for v in needs)
    ):
        raise TypeError("needs: expected three bools (grad_x, grad_weight, grad_bias), got "
                        f"{_args.shown(needs)}")
    return tuple(bool(v) for v in needs)  # type: ignore[return-value]


def _problem(x_shape, w_shape, grad_out, layout, stride, padding, dilation, groups,
             padding_mode, names=("x", "weight")):
    """Validate a backward problem; returns (geometry, grad_out as 4-d, unbatched?)."""
    if len(x_shape) not in (3, 4):
        raise ValueError(f"{names[0]}: expected a 4-d array {layout.x_desc()} or unbatched "
                         f"3-d, got shape {tuple(x_shape)}")
    if len(w_shape) != 4:
        raise ValueError(f"{names[1]}: expected a 4-d array in {layout.weight_name} order, "
                         f"got shape {tuple(w_shape)}")
    unbatched = len(x_shape) == 3
    x4 = (1, *x_shape) if unbatched else tuple(x_shape)
    g = _args.conv_geometry(x4, tuple(w_shape), layout, stride, padding, dilation, groups,
                            padding_mode, names=names)
    expected = layout.x_shape(g.n, g.o, g.p, g.q)[unbatched:]
    if grad_out.shape != expected:
        raise ValueError(
            f"grad_out: expected shape {expected} (the conv2d output for {names[0]} of shape "
            f"{tuple(x_shape)} and {names[1]} of shape {tuple(w_shape)}), got "
            f"{grad_out.shape}"
        )
    return g, (grad_out[None] if unbatched else grad_out), unbatched


# --------------------------------------------------------------------------
# The computations, on C-contiguous 4-d arrays of the compute dtype
# --------------------------------------------------------------------------
def grad_input(g, layout, dtype, w, gout) -> np.ndarray:
    """grad_x (C-contiguous, ``layout``) from weight and grad_out."""
    if g.n == 0:
        return np.zeros(layout.x_shape(g.n, g.c, g.h, g.w), dtype)
    plan = backward_plan(g, layout, dtype)
    return REGISTRY[plan.algorithm].grad_input(plan, w, gout)


def grad_weight(g, layout, dtype, x, gout, cols=None) -> np.ndarray:
    """grad_weight (C-contiguous, ``layout``'s weight order) from x and grad_out.

    ``cols``, when given, is the whole batch's column matrix as the plan's
    single chunk gathers it (a forward pass kept it), so the gather is skipped.
    """
    if g.n == 0:
        return np.zeros(layout.w_shape(g.o, g.cg, g.kh, g.kw), dtype)
    plan = backward_plan(g, layout, dtype)
    return REGISTRY[plan.algorithm].grad_weight(plan, x, gout, cols)


@quiet_fp
def grad_bias(layout, gout) -> np.ndarray:
    if layout.channels_last:  # one pass over rows of channels
        return gout.reshape(-1, gout.shape[-1]).sum(axis=0)
    return gout.sum(axis=tuple(a for a in range(4) if a != layout.channel_axis))


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------
def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1, *,
                    layout="NCHW", padding_mode="zeros", needs=(True, True, True)):
    """Gradients of :func:`numbaconv.conv2d` with respect to x, weight and bias.

    Parameters
    ----------
    grad_out : array_like
        The gradient of the loss with respect to conv2d's output: the shape
        conv2d returns for ``x`` and ``weight``.
    x, weight : array_like
        The forward's input and weight, as given to :func:`numbaconv.conv2d`.
    stride : int or (int, int)
        The forward's stride (see :func:`numbaconv.conv2d` for every argument).
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same"
        The forward's padding.
    dilation : int or (int, int)
        The forward's dilation.
    groups : int
        The forward's groups.
    layout : {"NCHW", "NHWC"}
        The forward's layout.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        The forward's padding mode.
    needs : (bool, bool, bool)
        Which of (grad_x, grad_weight, grad_bias) to compute.

    Returns
    -------
    grad_x, grad_weight, grad_bias : numpy.ndarray or None
        Shaped like ``x``, ``weight`` and ``(O,)``, of dtype
        ``np.result_type(grad_out, x, weight)``; None where ``needs`` is
        False.  With a padding_mode other than "zeros" the gradient of a padded
        position is added to the input element it was copied from.

    Raises
    ------
    TypeError, ValueError
        For every bad input :func:`numbaconv.conv2d` rejects, and for a
        grad_out whose shape is not conv2d's output shape.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> gy = np.ones((1, 1, 3, 3))          # d(sum(conv2d(x, w))) / dy
    >>> gx, gw, gb = numbaconv.conv2d_backward(gy, x, w)
    >>> gx[0, 0]
    array([[1., 2., 2., 1.],
           [2., 4., 4., 2.],
           [2., 4., 4., 2.],
           [1., 2., 2., 1.]])
    >>> gw[0, 0], gb
    (array([[45., 54.],
           [81., 90.]]), array([9.]))
    """
    layout = _args.layout_of(layout)
    need_x, need_w, need_b = _needs(needs)
    grad_out = _args.as_float_array(grad_out, "grad_out")
    x = _args.as_float_array(x, "x")
    weight = _args.as_float_array(weight, "weight")
    g, gout, unbatched = _problem(x.shape, weight.shape, grad_out, layout, stride, padding,
                                  dilation, groups, padding_mode)
    dtype = _args.result_dtype(grad_out, x, weight)
    gout = _args.contiguous(gout, dtype)
    gx = gw = gb = None
    if need_x:
        gx = grad_input(g, layout, dtype, _args.contiguous(weight, dtype), gout)
        gx = gx[0] if unbatched else gx
    if need_w:
        x4 = x[None] if unbatched else x
        gw = grad_weight(g, layout, dtype, _args.contiguous(x4, dtype), gout)
    if need_b:
        gb = grad_bias(layout, gout)
    return gx, gw, gb


def conv2d_grad_input(input_size, weight, grad_out, stride=1, padding=0, dilation=1,
                      groups=1, *, layout="NCHW", padding_mode="zeros"):
    """The gradient of conv2d with respect to its input.

    Like ``torch.nn.grad.conv2d_input``, with numbaconv's argument
    conventions.  The input's values are not needed, only its shape.

    Parameters
    ----------
    input_size : tuple of int or array
        The shape of the forward's ``x`` (4-d, or 3-d unbatched), or ``x``.
    weight, grad_out : array_like
        The forward's weight and the gradient with respect to its output.

    Returns
    -------
    numpy.ndarray
        Of shape ``input_size`` and dtype ``np.result_type(weight, grad_out)``.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> w = np.ones((1, 1, 2, 2), np.float32)
    >>> numbaconv.conv2d_grad_input((1, 1, 3, 3), w, np.ones((1, 1, 2, 2), np.float32))[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]], dtype=float32)
    """
    layout = _args.layout_of(layout)
    x_shape = _shape_arg(input_size, "input_size", (3, 4))
    weight = _args.as_float_array(weight, "weight")
    grad_out = _args.as_float_array(grad_out, "grad_out")
    g, gout, unbatched = _problem(x_shape, weight.shape, grad_out, layout, stride, padding,
                                  dilation, groups, padding_mode, names=("input_size", "weight"))
    dtype = _args.result_dtype(weight, grad_out)
    gx = grad_input(g, layout, dtype, _args.contiguous(weight, dtype),
                     _args.contiguous(gout, dtype))
    return gx[0] if unbatched else gx


def conv2d_grad_weight(x, weight_size, grad_out, stride=1, padding=0, dilation=1, groups=1, *,
                       layout="NCHW", padding_mode="zeros"):
    """The gradient of conv2d with respect to its weight.

    Like ``torch.nn.grad.conv2d_weight``, with numbaconv's argument
    conventions.

    Parameters
    ----------
    x : array_like
        The forward's input.
    weight_size : tuple of int or array
        The weight's shape (OIHW for NCHW, HWIO for NHWC), or the weight.
    grad_out : array_like
        The gradient with respect to conv2d's output.

    Returns
    -------
    numpy.ndarray
        Of shape ``weight_size`` and dtype ``np.result_type(x, grad_out)``.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    >>> numbaconv.conv2d_grad_weight(x, (1, 1, 2, 2), np.ones((1, 1, 2, 2)))[0, 0]
    array([[ 8., 12.],
           [20., 24.]])
    """
    layout = _args.layout_of(layout)
    x = _args.as_float_array(x, "x")
    w_shape = _shape_arg(weight_size, "weight_size", (4,))
    grad_out = _args.as_float_array(grad_out, "grad_out")
    g, gout, unbatched = _problem(x.shape, w_shape, grad_out, layout, stride, padding,
                                  dilation, groups, padding_mode, names=("x", "weight_size"))
    dtype = _args.result_dtype(x, grad_out)
    x4 = x[None] if unbatched else x
    return grad_weight(g, layout, dtype, _args.contiguous(x4, dtype),
                        _args.contiguous(gout, dtype))
