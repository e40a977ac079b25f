"""conv_transpose2d: the adjoint of conv2d, with PyTorch's semantics.

A transposed convolution of x is the gradient of a conv2d with respect to
its input, taken with x as the output gradient.  So it runs on
``backward.grad_input`` (the algorithm ``algorithms.BACKWARD_RULES`` picks:
a GEMM ``W^T @ x`` and the parallel col2im, or the direct depthwise kernel)
with the geometry of the conv2d that maps the (larger) output back to x's
size.

Output size per axis (PyTorch's formula)::

    out = (in - 1) * stride - pad_before - pad_after + dilation * (k - 1) + 1 + output_padding

output_padding adds rows at the bottom/right.  The conv2d geometry absorbs
them in its bottom padding; only when output_padding exceeds the bottom
padding by a stride or more (possible when dilation > stride) are the last
rows out of every kernel tap's reach: they are computed as zeros by a
smaller problem and embedded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _args
from .backward import grad_input, grad_weight
from .conv import conv2d

__all__ = ["conv_transpose2d"]


@dataclass(frozen=True)
class TransposeProblem:
    """A validated conv_transpose2d problem.

    ``geometry`` is the conv2d from the output (cropped to ``inner`` rows
    and columns) back to x; ``outer`` is the full output (H, W); ``pads``
    is that conv2d's explicit padding.
    """

    layout: _args.Layout
    n: int
    c_in: int
    o: int
    outer: tuple[int, int]
    inner: tuple[int, int]
    pads: tuple[int, int, int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    geometry: _args.Geometry | None  # None when no output position is reachable

    def out_shape(self) -> tuple[int, ...]:
        return self.layout.x_shape(self.n, self.o, *self.outer)

    def conv_kwargs(self) -> dict:
        pt, pb, pl, pr = self.pads
        return dict(stride=self.stride, padding=((pt, pb), (pl, pr)), dilation=self.dilation,
                    groups=self.groups, layout=self.layout)

    def embedded(self) -> bool:
        return self.inner != self.outer


def _transpose_padding(padding) -> tuple[int, int, int, int]:
    if isinstance(padding, str):
        raise ValueError("padding: conv_transpose2d expects an int, (ph, pw) or "
                         f"((top, bottom), (left, right)), got {_args.shown(padding)}")
    return _args.resolve_padding(padding, (1, 1), (1, 1), (1, 1), (1, 1))


def _output_size(output_size, ndim: int, layout: _args.Layout) -> tuple[int, int]:
    """(H, W) from a pair, or from a full 3-d/4-d output shape in ``layout``."""
    if _args._is_sequence(output_size) and all(_args._is_int(v) for v in output_size):
        size = tuple(int(v) for v in output_size)
        if len(size) == 2:
            return size  # type: ignore[return-value]
        if len(size) == ndim:
            dims = layout.x_dims(size if ndim == 4 else (1, *size))
            return dims[2], dims[3]
    raise TypeError(f"output_size: expected (H, W) or a {ndim}-d output shape, got "
                    f"{_args.shown(output_size)}")


def _weight_desc(layout: _args.Layout) -> str:
    """The transposed convolution's weight shape in ``layout``: OIHW read as (C_in, O/groups)."""
    return "(" + ", ".join(layout.w_shape("C_in", "O/groups", "KH", "KW")) + ")"


def transpose_problem(x_shape, w_shape, layout, stride, padding, output_padding, groups,
                      dilation, output_size, x_ndim=4) -> TransposeProblem:
    """Validate a conv_transpose2d problem given by 4-d shapes (x had ``x_ndim`` dims)."""
    groups = _args.groups_of(groups)
    n, c_in, h, w = layout.x_dims(x_shape)
    # In conv2d terms the weight maps the output (O/groups per group) to x (C_in).
    cw, og, kh, kw = layout.w_dims(w_shape)
    wdesc = _weight_desc(layout)
    if min(c_in, h, w) < 1:
        raise ValueError(f"x: expected channels, height and width >= 1, got shape {x_shape}")
    if min(cw, og, kh, kw) < 1:
        raise ValueError(f"weight: expected every dimension >= 1, got shape {w_shape}")
    if c_in % groups:
        raise ValueError(f"groups: input channels {c_in} are not divisible by groups={groups}")
    if cw != c_in:
        raise ValueError(f"weight: expected {c_in} input channels (x has {c_in}) in a "
                         f"{wdesc} weight, got {cw} in shape {w_shape}")
    stride = _args.int_pair(stride, "stride", 1)
    dilation = _args.int_pair(dilation, "dilation", 1)
    pads = _transpose_padding(padding)
    op = _args.int_pair(output_padding, "output_padding", 0)
    limit = tuple(max(s, d) for s, d in zip(stride, dilation, strict=True))
    if op[0] >= limit[0] or op[1] >= limit[1]:
        raise ValueError(f"output_padding: expected values smaller than max(stride, dilation) "
                         f"= {limit} per axis, got {tuple(op)}")
    lowest = tuple(
        (size - 1) * s - pads[2 * i] - pads[2 * i + 1] + d * (k - 1) + 1
        for i, (size, s, d, k) in enumerate(zip((h, w), stride, dilation, (kh, kw), strict=True))
    )
    if output_size is not None:
        want = _output_size(output_size, x_ndim, layout)
        highest = tuple(lo + s - 1 for lo, s in zip(lowest, stride, strict=True))
        if any(not lo <= v <= hi for v, lo, hi in zip(want, lowest, highest, strict=True)):
            raise ValueError(
                f"output_size: {want} is not reachable; with this x, weight, stride and "
                f"padding the output (H, W) can be from {lowest} to {highest}"
            )
        chosen = tuple(v - lo for v, lo in zip(want, lowest, strict=True))
        if op != (0, 0) and op != chosen:
            raise ValueError(f"output_padding: expected {chosen} (implied by output_size "
                             f"{want}) or 0, got {tuple(op)}")
        op = chosen
    outer = tuple(lo + p for lo, p in zip(lowest, op, strict=True))
    if min(outer) < 1:
        raise ValueError(f"x: the output would be {outer[0]}x{outer[1]}; padding {pads} "
                         f"removes more than (in - 1) * stride + dilation * (k - 1) + 1")
    # Rows past the bottom padding plus a whole stride are beyond every tap's
    # reach: drop them from the conv2d problem (they stay zero).
    inner, conv_pads = [], []
    for i, s in enumerate(stride):
        before, after = pads[2 * i], pads[2 * i + 1]
        extra = op[i] - max(0, (op[i] - after) // s) * s
        inner.append(lowest[i] + extra)
        conv_pads += [before, max(0, after - extra)]
    o = og * groups
    prob = dict(layout=layout, n=n, c_in=c_in, o=o, outer=outer, inner=tuple(inner),
                pads=tuple(conv_pads), stride=stride, dilation=dilation, groups=groups)
    if min(inner) < 1:
        return TransposeProblem(**prob, geometry=None)
    g = _args.conv_geometry(layout.x_shape(n, o, *inner), tuple(w_shape), layout, stride,
                            ((conv_pads[0], conv_pads[1]), (conv_pads[2], conv_pads[3])),
                            dilation, groups, "zeros")
    assert (g.p, g.q, g.o) == (h, w, c_in), (g, h, w, c_in)
    return TransposeProblem(**prob, geometry=g)


def _embed(prob: TransposeProblem, inner: np.ndarray) -> np.ndarray:
    """The full output: ``inner`` at the top-left, zeros elsewhere."""
    out = np.zeros(prob.out_shape(), inner.dtype)
    prob.layout.crop(out, *prob.inner)[...] = inner
    return out


def _crop(prob: TransposeProblem, full: np.ndarray) -> np.ndarray:
    return prob.layout.crop(full, *prob.inner)


def transpose_forward(prob: TransposeProblem, x, weight, bias, dtype) -> np.ndarray:
    """x, weight: 4-d arrays (any order); returns the 4-d output."""
    if prob.geometry is None or prob.n == 0:
        y = np.zeros(prob.out_shape(), dtype)
    else:
        y = grad_input(prob.geometry, prob.layout, dtype, _args.contiguous(weight, dtype),
                        _args.contiguous(x, dtype))
        if prob.embedded():
            y = _embed(prob, y)
    if bias is not None:
        y += bias.reshape(prob.layout.bias_shape(bias.shape[0])).astype(dtype)
    return y


def transpose_backward(prob: TransposeProblem, grad_out, x, weight, dtype, needs):
    """(grad_x, grad_weight, grad_bias) of conv_transpose2d, 4-d arrays.

    conv_transpose2d is linear in x with adjoint conv2d, so grad_x is the
    conv2d of grad_out; grad_weight is conv2d's weight gradient with the
    roles of input and output swapped.
    """
    need_x, need_w, need_b = needs
    gx = gw = gb = None
    layout = prob.layout
    reachable = prob.geometry is not None and prob.n > 0
    gy = _args.contiguous(_crop(prob, grad_out), dtype) if reachable else None
    if need_x:
        if reachable:
            gx = conv2d(gy, _args.contiguous(weight, dtype), **prob.conv_kwargs())
        else:
            gx = np.zeros(x.shape, dtype)
    if need_w:
        if reachable:
            gw = grad_weight(prob.geometry, layout, dtype, gy, _args.contiguous(x, dtype))
        else:
            gw = np.zeros(weight.shape, dtype)
    if need_b:
        axes = tuple(a for a in range(4) if a != layout.channel_axis)
        gb = np.asarray(grad_out, dtype).sum(axis=axes)
    return gx, gw, gb


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, *, layout="NCHW", output_size=None):
    """2-D transposed convolution (the adjoint of conv2d), as PyTorch computes it.

    Parameters
    ----------
    x : array_like
        ``(N, C_in, H, W)`` for NCHW or ``(N, H, W, C_in)`` for NHWC; 3-d
        unbatched input gives 3-d output.
    weight : array_like
        NCHW: ``(C_in, O/groups, KH, KW)`` (PyTorch's ConvTranspose2d);
        NHWC: ``(KH, KW, O/groups, C_in)`` (TensorFlow's conv2d_transpose).
    bias : array_like, optional
        ``(O,)``.
    stride, dilation : int or (int, int)
    padding : int, (ph, pw) or ((top, bottom), (left, right))
        Removed from the output's borders (``dilation * (k - 1) - padding``
        of implicit zero padding on the input).
    output_padding : int or (int, int)
        Extra rows/columns at the bottom/right, each smaller than
        ``max(stride, dilation)`` (PyTorch's rule).
    groups : int
    layout : {"NCHW", "NHWC"}
    output_size : (int, int) or full output shape, optional
        Picks the output (H, W) among the sizes the stride can reach, as
        PyTorch's ``ConvTranspose2d(...)(x, output_size)`` does; it sets
        output_padding (which must then be 0 or agree).

    Returns
    -------
    numpy.ndarray
        ``(N, O, H_out, W_out)`` or ``(N, H_out, W_out, O)`` with
        ``H_out = (H - 1) * stride - pad_top - pad_bottom + dilation * (KH - 1)
        + output_padding + 1``; dtype ``np.result_type(x, weight, bias)``.

    Raises
    ------
    TypeError, ValueError
        For inconsistent shapes or hyper-parameters, ``output_padding >=
        max(stride, dilation)`` and an unreachable ``output_size`` (the
        message gives the reachable range).

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> w = np.ones((1, 1, 2, 2))
    >>> numbaconv.conv_transpose2d(x, w, stride=2)[0, 0]
    array([[1., 1., 2., 2.],
           [1., 1., 2., 2.],
           [3., 3., 4., 4.],
           [3., 3., 4., 4.]])
    >>> numbaconv.conv_transpose2d(x, w, stride=2, padding=1, output_size=(3, 3)).shape
    (1, 1, 3, 3)
    """
    layout = _args.layout_of(layout)
    x = _args.as_float_array(x, "x")
    weight = _args.as_float_array(weight, "weight")
    bias = None if bias is None else _args.as_float_array(bias, "bias")
    _args.ensure_ndim(x, "x", (3, 4), f"{layout.x_desc()} or unbatched")
    wdesc = _weight_desc(layout)
    _args.ensure_ndim(weight, "weight", (4,), wdesc)
    unbatched = x.ndim == 3
    x4 = x[None] if unbatched else x
    prob = transpose_problem(x4.shape, weight.shape, layout, stride, padding, output_padding,
                             groups, dilation, output_size, x.ndim)
    if bias is not None and bias.shape != (prob.o,):
        raise ValueError(f"bias: expected shape ({prob.o},) (one per output channel), got "
                         f"{bias.shape}")
    dtype = _args.result_dtype(x, weight, bias)
    y = transpose_forward(prob, x4, weight, bias, dtype)
    return y[0] if unbatched else y
