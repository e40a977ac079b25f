"""Gradients of conv2d: with respect to the input, the weight and the bias.

Both gradients are GEMMs around the forward's gather/scatter kernels:

* grad_x is col2im of ``W^T @ grad_out``: the GEMM writes a column matrix
  and the parallel, race-free col2im (``_execute.scatter``) sums it into the
  image.  A reflected, replicated or wrapped position was *read* from an
  input element, so its gradient is added back to that element; the index
  tables already encode that, which makes scatter the exact adjoint of the
  gather.  A pointwise (1x1, stride-1, unpadded) problem needs no col2im.
* grad_weight is ``grad_out @ cols^T`` over the im2col columns of x,
  gathered chunk by chunk under the forward's workspace bound.
* grad_bias is the sum of grad_out over the batch and spatial axes.

Chunking and GEMM shapes follow the forward's plan (``_plan.get_plan``).
For NCHW with small images (the plan's ``gemm_batched``) the batch joins the
GEMMs' long dimension: the columns are gathered as (C*KH*KW, images, P*Q)
and grad_out is copied to (O, images, P*Q), so that grad_weight is one GEMM
per chunk rather than one thin GEMM per image, each followed by a
weight-sized accumulation.
"""

from __future__ import annotations

import numpy as np

from . import _args, kernels
from ._execute import (
    channel_block,
    gather,
    quiet_fp,
    scatter,
    serial_below,
    weight_matrices,
    workspace,
)
from ._plan import Plan, get_plan, is_depthwise, is_pointwise

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
                        f"{value!r}")
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
                        f"{needs!r}")
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
def backward_plan(g: _args.Geometry, layout: _args.Layout, dtype) -> Plan:
    """The forward's plan with a GEMM algorithm, so its chunking and tables apply.

    (Depthwise problems take ``_depthwise_grad`` instead, with direct kernels.)
    """
    return get_plan(g, layout, dtype, "gemm_1x1" if is_pointwise(g) else "im2col_gemm")


def _chunks(plan: Plan):
    g = plan.geometry
    for n0 in range(0, g.n, plan.batch_chunk):
        nb = min(plan.batch_chunk, g.n - n0)
        for p0 in range(0, g.p, plan.row_chunk):
            yield n0, nb, p0, min(plan.row_chunk, g.p - p0)


def _channel_major(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Copy NCHW images ``src`` (nb, C, ...) into ``dst`` as (C, nb, H*W).

    The batched NCHW GEMMs need the batch next to the spatial axis; this copy
    is activation-sized, KH*KW times smaller than the columns.
    """
    nb, c = src.shape[:2]
    out = dst.reshape(c, nb, -1)
    np.copyto(out, src.reshape(nb, c, -1).transpose(1, 0, 2))
    return out


class _Accumulator:
    """Sums GEMM results into ``dst``: the first straight into it, later ones via a temporary."""

    def __init__(self, dst: np.ndarray):
        self.dst, self.tmp, self.first = dst, None, True

    def matmul(self, a, b) -> None:
        if self.first:
            np.matmul(a, b, out=self.dst)
            self.first = False
        else:
            self.tmp = np.matmul(a, b, out=self.tmp)
            self.dst += self.tmp


def _depthwise_grad(kind: str, g, layout, dtype, a, b, shape) -> np.ndarray:
    """grad_x (kind "depthwise_grad_input", a=grad_out, b=weight) or grad_weight
    ("depthwise_grad_weight", a=x, b=grad_out) of a depthwise convolution.

    Its GEMMs would be one (m x KH*KW) product per channel, far too thin for
    BLAS: measured 7-8x slower than PyTorch's forward + backward at stride 1.
    Direct kernels read through the forward's index tables instead.
    """
    plan = get_plan(g, layout, dtype, "direct_depthwise")
    t = plan.tables
    out = np.empty(shape, dtype)
    kernel = kernels.get(kind, layout.name, plan.dtype)
    with serial_below(a.nbytes + b.nbytes + out.nbytes):
        if layout.name == "NCHW":
            kernel(a, b, out, t.htab, t.wtab, t.wint, t.sw)
        elif kind == "depthwise_grad_input":
            kernel(a, b, out, t.htab, t.wtab,
                   channel_block(g.c, g.n, plan.threads, plan.register_tile.vw))
        else:  # blocks of output channels, at least 4 per thread, of at least one vector
            kernel(a, b, out, t.htab, t.wtab,
                   max(_args.ceil_div(g.o, 4 * plan.threads), plan.register_tile.vw))
    return out


@quiet_fp
def grad_input(g, layout, dtype, w, gout) -> np.ndarray:
    """grad_x (C-contiguous, ``layout``) from weight and grad_out."""
    if is_depthwise(g) and g.n:
        return _depthwise_grad("depthwise_grad_input", g, layout, dtype, gout, w,
                               layout.x_shape(g.n, g.c, g.h, g.w))
    plan = backward_plan(g, layout, dtype)
    pointwise = plan.algorithm == "gemm_1x1"
    gx = (np.empty if pointwise else np.zeros)(layout.x_shape(g.n, g.c, g.h, g.w), dtype)
    if g.n == 0:
        return gx
    wt = weight_matrices(plan, w).transpose(0, 2, 1)  # NCHW (G, Cg*KK, Og); NHWC (G, Og, KK*Cg)
    kk, hw = g.kh * g.kw, g.h * g.w
    nchw = layout.name == "NCHW"
    if pointwise and not nchw:  # x_g (NHW, Cg) = gout_g (NHW, Og) @ W_g^T, the whole batch
        rows = g.n * hw
        np.matmul(gout.reshape(rows, g.groups, g.og).transpose(1, 0, 2), wt,
                  out=gx.reshape(rows, g.groups, g.cg).transpose(1, 0, 2))
        return gx
    if pointwise and not plan.gemm_batched:  # x[n, g] (Cg, HW) = W_g^T @ gout[n, g] (Og, HW)
        np.matmul(wt, gout.reshape(g.n, g.groups, g.og, hw),
                  out=gx.reshape(g.n, g.groups, g.cg, hw))
        return gx
    buf = workspace(plan.workspace_bytes, dtype)
    for n0, nb, p0, pb in _chunks(plan):
        length = pb * g.q
        if pointwise:  # small images: one GEMM over (Og, nb*HW), then into place
            gt = _channel_major(buf[: g.o * nb * hw], gout[n0 : n0 + nb])
            xt = buf[g.o * nb * hw : (g.o + g.c) * nb * hw].reshape(g.c, nb, hw)
            np.matmul(wt, gt.reshape(g.groups, g.og, nb * hw),
                      out=xt.reshape(g.groups, g.cg, nb * hw))
            np.copyto(gx[n0 : n0 + nb].reshape(nb, g.c, hw), xt.transpose(1, 0, 2))
        elif not nchw:
            rows = nb * length
            cols = buf[: rows * kk * g.c].reshape(rows, kk * g.c)
            go = gout[n0 : n0 + nb, p0 : p0 + pb].reshape(rows, g.groups, g.og)
            np.matmul(go.transpose(1, 0, 2), wt,
                      out=cols.reshape(rows, g.groups, kk * g.cg).transpose(1, 0, 2))
            scatter(plan, cols, gx, n0, p0, nb)
        elif plan.gemm_batched:  # small whole images: cols (C*KK, nb, P*Q)
            size = g.c * kk * nb * length
            cols = buf[:size].reshape(g.c * kk, nb, length)
            gt = _channel_major(buf[size : size + g.o * nb * length], gout[n0 : n0 + nb])
            np.matmul(wt, gt.reshape(g.groups, g.og, nb * length),
                      out=cols.reshape(g.groups, g.cg * kk, nb * length))
            scatter(plan, cols, gx, n0, p0, nb, row_major=True)
        else:
            cols = buf[: nb * g.c * kk * length].reshape(nb, g.c * kk, length)
            go = gout[n0 : n0 + nb, :, p0 : p0 + pb].reshape(nb, g.groups, g.og, length)
            np.matmul(wt, go, out=cols.reshape(nb, g.groups, g.cg * kk, length))
            scatter(plan, cols, gx, n0, p0, nb)
    return gx


@quiet_fp
def grad_weight(g, layout, dtype, x, gout, cols=None) -> np.ndarray:
    """grad_weight (C-contiguous, ``layout``'s weight order) from x and grad_out.

    ``cols``, when given, is the whole batch's column matrix as the plan's
    single chunk gathers it (a forward pass kept it), so the gather is skipped.
    """
    if is_depthwise(g) and g.n:
        return _depthwise_grad("depthwise_grad_weight", g, layout, dtype, x, gout,
                               layout.w_shape(g.o, g.cg, g.kh, g.kw))
    plan = backward_plan(g, layout, dtype)
    pointwise = plan.algorithm == "gemm_1x1"
    gw = np.zeros(layout.w_shape(g.o, g.cg, g.kh, g.kw), dtype)
    if g.n == 0:
        return gw
    kk, hw = g.kh * g.kw, g.h * g.w
    # The GEMMs write into gw through its weight_matrices view.
    acc = _Accumulator(weight_matrices(plan, gw))
    if layout.name == "NHWC":
        if pointwise:  # W_g (Cg, Og) = x_g^T (Cg, NHW) @ gout_g (NHW, Og): one GEMM
            rows = g.n * hw
            acc.matmul(x.reshape(rows, g.groups, g.cg).transpose(1, 2, 0),
                       gout.reshape(rows, g.groups, g.og).transpose(1, 0, 2))
            return gw
        for n0, nb, p0, pb in _chunks(plan):
            rows = nb * pb * g.q
            if cols is None:
                c2 = workspace(plan.workspace_bytes, dtype)[: rows * kk * g.c]
                c2 = c2.reshape(rows, kk * g.c)
                gather(plan, x, c2, n0, p0, nb)
            else:
                c2 = cols
            go = gout[n0 : n0 + nb, p0 : p0 + pb].reshape(rows, g.groups, g.og)
            acc.matmul(c2.reshape(rows, g.groups, kk * g.cg).transpose(1, 2, 0),
                       go.transpose(1, 0, 2))
        return gw
    if plan.gemm_batched:
        # Small whole images: the batch joins the GEMM's K, W_g = gout_g @ cols_g^T
        # with gout_g (Og, nb*P*Q) and cols_g (Cg*KK, nb*P*Q).
        buf = workspace(plan.workspace_bytes, dtype)
        length = g.p * g.q
        for n0, nb, _, _ in _chunks(plan):
            rows_k = g.c * (1 if pointwise else kk)
            size = rows_k * nb * length
            if pointwise:
                c3 = _channel_major(buf[:size], x[n0 : n0 + nb])
            elif cols is None:
                c3 = buf[:size].reshape(rows_k, nb, length)
                gather(plan, x, c3, n0, 0, nb, row_major=True)
            else:
                c3 = cols
            gt = _channel_major(buf[size : size + g.o * nb * length], gout[n0 : n0 + nb])
            acc.matmul(gt.reshape(g.groups, g.og, nb * length),
                       c3.reshape(g.groups, rows_k // g.groups, nb * length).transpose(0, 2, 1))
        return gw
    # Large images: one GEMM per image (long enough on its own), summed into gw.
    for n0, nb, p0, pb in _chunks(plan):
        length = pb * g.q
        if pointwise:
            c3 = x[n0 : n0 + nb].reshape(nb, g.groups, g.cg, length)
        else:
            if cols is None:
                c3 = workspace(plan.workspace_bytes, dtype)[: nb * g.c * kk * length]
                c3 = c3.reshape(nb, g.c * kk, length)
                gather(plan, x, c3, n0, p0, nb)
            else:
                c3 = cols
            c3 = c3.reshape(nb, g.groups, g.cg * kk, length)
        go = gout[n0 : n0 + nb, :, p0 : p0 + pb].reshape(nb, g.groups, g.og, length)
        for b in range(nb):
            acc.matmul(go[b], c3[b].transpose(0, 2, 1))
    return gw


@quiet_fp
def grad_bias(layout, gout) -> np.ndarray:
    if layout.name == "NCHW":
        return gout.sum(axis=(0, 2, 3))
    return gout.reshape(-1, gout.shape[3]).sum(axis=0)


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
