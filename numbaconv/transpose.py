"""Transposed convolutions of every rank: the adjoint of the convolution, with PyTorch's semantics.

A transposed convolution of x is the gradient of a convolution with
respect to its input, taken with x as the output gradient.  So it runs on
the input gradient (``_rank.grad_input``, which in 2-d is
``backward.grad_input``: the algorithm ``algorithms.BACKWARD_RULES`` picks,
a GEMM ``W^T @ x`` and the parallel col2im, or the direct depthwise kernel)
with the geometry of the convolution that maps the (larger) output back to
x's size.

Output size per axis (PyTorch's formula)::

    out = (in - 1) * stride - pad_before - pad_after + dilation * (k - 1) + 1 + output_padding

output_padding adds rows at the high end of each axis.  The convolution's
geometry absorbs them in its high padding; only when output_padding exceeds the bottom
padding by a stride or more (possible when dilation > stride) are the last
rows out of every kernel tap's reach: they are computed as zeros by a
smaller problem and embedded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import _args, _rank

__all__ = ["conv_transpose2d"]


@dataclass(frozen=True)
class TransposeProblem:
    """A validated transposed convolution problem, of any rank.

    ``geometry`` is the convolution from the output (cropped to ``inner``)
    back to x; ``outer`` is the full output's spatial sizes; ``pads`` is that
    convolution's explicit (low, high) padding per axis, flat.
    """

    layout: _args.RankLayout
    n: int
    c_in: int
    o: int
    outer: tuple[int, ...]
    inner: tuple[int, ...]
    pads: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    geometry: _args.NdGeometry | None  # None when no output position is reachable

    def out_shape(self) -> tuple[int, ...]:
        return self.layout.x_shape(self.n, self.o, self.outer)

    @cached_property
    def lowered(self) -> _rank.Lowered:
        return _rank.lower(self.geometry, self.layout)

    def embedded(self) -> bool:
        return self.inner != self.outer


def _axes(layout: _args.RankLayout) -> str:
    return "(" + ", ".join(_args.AXIS_NAMES[layout.rank]) + ")"


def _output_size(output_size, ndim: int, layout: _args.RankLayout) -> tuple[int, ...]:
    """Spatial sizes from a tuple of them, or from a full output shape in ``layout``."""
    rank = layout.rank
    if _args._is_sequence(output_size) and all(_args._is_int(v) for v in output_size):
        size = tuple(int(v) for v in output_size)
        if len(size) == rank:
            return size
        if len(size) == ndim:
            return layout.x_dims(size if ndim == rank + 2 else (1, *size))[2]
    names = "(H, W)" if rank == 2 else _axes(layout)
    raise TypeError(f"output_size: expected {names} or a {ndim}-d output shape, got "
                    f"{_args.shown(output_size)}")


def _weight_desc(layout: _args.RankLayout) -> str:
    """The transposed convolution's weight shape: the conv's (O, I, *K) read as (C_in, O/groups)."""
    kernel = ("KD", "KH", "KW")[3 - layout.rank:]
    return "(" + ", ".join(layout.w_shape("C_in", "O/groups", kernel)) + ")"


def _string_pads(kind: str, kernel, stride, dilation):
    """TensorFlow/JAX's 'same' and 'valid' for a transposed convolution, per axis.

    'same': output = input * stride, an odd crop taken at the high end.
    'valid': output = input * stride + max(dk - stride, 0), nothing cropped
    (dk = dilation * (k - 1) + 1).  Returns the flat pads and the
    output_padding that reaches that size.
    """
    pads, op = [], []
    for s, k, d in zip(stride, kernel, dilation, strict=True):
        total = d * (k - 1) + 1 - s  # what the natural output has beyond input * stride
        crop = max(total, 0) if kind == "same" else 0
        pads += [crop // 2, crop - crop // 2]
        op.append(max(-total, 0))
    return tuple(pads), tuple(op)


def transpose_problem(x_shape, w_shape, layout, stride, padding, output_padding, groups,
                      dilation, output_size, x_ndim=None) -> TransposeProblem:
    """Validate a transposed convolution given by batched shapes (x had ``x_ndim`` dims)."""
    layout = _args.rank_layout_of(layout, len(x_shape) - 2)
    rank = layout.rank
    x_ndim = rank + 2 if x_ndim is None else x_ndim
    groups = _args.groups_of(groups)
    n, c_in, sizes = layout.x_dims(x_shape)
    # In convolution terms the weight maps the output (O/groups per group) to x (C_in).
    cw, og, kernel = layout.w_dims(w_shape)
    wdesc = _weight_desc(layout)
    if min(c_in, *sizes) < 1:
        axes = ["channels", *_args.AXIS_NAMES[rank]]
        raise ValueError(f"x: expected {', '.join(axes[:-1])} and {axes[-1]} >= 1, got shape "
                         f"{x_shape}")
    if min(cw, og, *kernel) < 1:
        raise ValueError(f"weight: expected every dimension >= 1, got shape {w_shape}")
    if c_in % groups:
        raise ValueError(f"groups: input channels {c_in} are not divisible by groups={groups}")
    if cw != c_in:
        raise ValueError(f"weight: expected {c_in} input channels (x has {c_in}) in a "
                         f"{wdesc} weight, got {cw} in shape {w_shape}")
    stride = _args.int_tuple(stride, "stride", rank, 1)
    dilation = _args.int_tuple(dilation, "dilation", rank, 1)
    op = _args.int_tuple(output_padding, "output_padding", rank, 0)
    implied = None  # the output_padding a padding string implies
    if isinstance(padding, str) and padding.lower() in ("same", "valid"):
        kind = padding.lower()
        pads, implied = _string_pads(kind, kernel, stride, dilation)
        if any(op) and op != implied:
            raise ValueError(f"output_padding: padding={kind!r} implies {implied}; expected "
                             f"that or 0, got {op}")
        op = implied
    else:
        pads = _args.resolve_padding(padding, (1,) * rank, (1,) * rank, (1,) * rank,
                                     (1,) * rank)
    limit = tuple(max(s, d) for s, d in zip(stride, dilation, strict=True))
    if any(p >= m for p, m in zip(op, limit, strict=True)):
        raise ValueError(f"output_padding: expected values smaller than max(stride, dilation) "
                         f"= {limit} per axis, got {tuple(op)}")
    lowest = tuple(
        (size - 1) * s - pads[2 * i] - pads[2 * i + 1] + d * (k - 1) + 1
        for i, (size, s, d, k) in enumerate(zip(sizes, stride, dilation, kernel, strict=True))
    )
    if output_size is not None:
        want = _output_size(output_size, x_ndim, layout)
        highest = tuple(lo + s - 1 for lo, s in zip(lowest, stride, strict=True))
        if any(not lo <= v <= hi for v, lo, hi in zip(want, lowest, highest, strict=True)):
            names = "(H, W)" if rank == 2 else _axes(layout)
            raise ValueError(
                f"output_size: {want} is not reachable; with this x, weight, stride and "
                f"padding the output {names} can be from {lowest} to {highest}"
            )
        chosen = tuple(v - lo for v, lo in zip(want, lowest, strict=True))
        if implied is not None and chosen != implied:
            raise ValueError(f"output_size: padding={padding.lower()!r} gives "
                             f"{tuple(lo + p for lo, p in zip(lowest, implied, strict=True))}, "
                             f"got {want}; pass explicit padding to choose another size")
        if any(op) and op != chosen:
            raise ValueError(f"output_padding: expected {chosen} (implied by output_size "
                             f"{want}) or 0, got {tuple(op)}")
        op = chosen
    outer = tuple(lo + p for lo, p in zip(lowest, op, strict=True))
    if min(outer) < 1:
        raise ValueError(f"x: the output would be {'x'.join(map(str, outer))}; padding {pads} "
                         f"removes more than (in - 1) * stride + dilation * (k - 1) + 1")
    # Rows past the high padding plus a whole stride are beyond every tap's
    # reach: drop them from the convolution (they stay zero).
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
    pairs = tuple(zip(conv_pads[::2], conv_pads[1::2], strict=True))
    g = _args.nd_geometry(layout.x_shape(n, o, inner), tuple(w_shape), layout, stride, pairs,
                          dilation, groups, "zeros")
    assert (g.out, g.o) == (sizes, c_in), (g, sizes, c_in)
    return TransposeProblem(**prob, geometry=g)


def _embed(prob: TransposeProblem, inner: np.ndarray) -> np.ndarray:
    """The full output: ``inner`` at the low corner, zeros elsewhere."""
    out = np.zeros(prob.out_shape(), inner.dtype)
    prob.layout.crop(out, prob.inner)[...] = inner
    return out


def transpose_forward(prob: TransposeProblem, x, weight, bias, dtype) -> np.ndarray:
    """x, weight: batched arrays (any order); returns the batched output."""
    if prob.geometry is None or prob.n == 0:
        y = np.zeros(prob.out_shape(), dtype)
    else:
        y = _rank.grad_input(prob.lowered, dtype, _args.contiguous(weight, dtype),
                             _args.contiguous(x, dtype))
        if prob.embedded():
            y = _embed(prob, y)
    if bias is not None:
        y += bias.reshape(prob.layout.bias_shape(bias.shape[0])).astype(dtype)
    return y


def transpose_backward(prob: TransposeProblem, grad_out, x, weight, dtype, needs):
    """(grad_x, grad_weight, grad_bias) of a transposed convolution, batched arrays.

    It is linear in x with the convolution as adjoint, so grad_x is the
    convolution of grad_out; grad_weight is the convolution's weight
    gradient with the roles of input and output swapped.
    """
    need_x, need_w, need_b = needs
    gx = gw = gb = None
    reachable = prob.geometry is not None and prob.n > 0
    gy = (_args.contiguous(prob.layout.crop(grad_out, prob.inner), dtype) if reachable
          else None)
    if need_x:
        if reachable:
            gx = _rank.forward(prob.lowered, gy, _args.contiguous(weight, dtype), None, dtype)
        else:
            gx = np.zeros(x.shape, dtype)
    if need_w:
        if reachable:
            gw = _rank.grad_weight(prob.lowered, dtype, gy, _args.contiguous(x, dtype))
        else:
            gw = np.zeros(weight.shape, dtype)
    if need_b:
        gb = _rank.grad_bias(prob.layout, np.asarray(grad_out, dtype))
    return gx, gw, gb


def conv_transpose(rank: int, x, weight, bias, stride, padding, output_padding, groups,
                   dilation, layout, output_size) -> np.ndarray:
    """The transposed convolution of any rank: what conv_transpose1d/2d/3d share."""
    layout = _args.rank_layout_of(layout, rank)
    x = _args.as_float_array(x, "x")
    weight = _args.as_float_array(weight, "weight")
    bias = None if bias is None else _args.as_float_array(bias, "bias")
    _args.ensure_ndim(x, "x", (rank + 1, rank + 2), f"{layout.x_desc()} or unbatched")
    _args.ensure_ndim(weight, "weight", (rank + 2,), _weight_desc(layout))
    unbatched = x.ndim == rank + 1
    xb = x[None] if unbatched else x
    prob = transpose_problem(xb.shape, weight.shape, layout, stride, padding, output_padding,
                             groups, dilation, output_size, x.ndim)
    if bias is not None and bias.shape != (prob.o,):
        raise ValueError(f"bias: expected shape ({prob.o},) (one per output channel), got "
                         f"{bias.shape}")
    dtype = _args.result_dtype(x, weight, bias)
    y = transpose_forward(prob, xb, weight, bias, dtype)
    return y[0] if unbatched else y


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
    padding : int, (ph, pw), ((top, bottom), (left, right)), "same" or "valid"
        Removed from the output's borders (``dilation * (k - 1) - padding``
        of implicit zero padding on the input).  Unequal (low, high) pairs
        express ONNX's ``auto_pad=SAME_LOWER`` and explicit ``pads``.
        ``"same"`` is TensorFlow/JAX's: the output is ``input * stride``,
        any odd crop taken at the bottom/right (ONNX's ``SAME_UPPER``).
        ``"valid"`` is TensorFlow's too: nothing cropped, and the output is
        ``input * stride + max(dilation * (k - 1) + 1 - stride, 0)``.
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
    return conv_transpose(2, x, weight, bias, stride, padding, output_padding, groups,
                          dilation, layout, output_size)
