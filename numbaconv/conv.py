"""The public functions: conv2d, im2col, col2im and explain.

Each is plain Python: it normalises and validates the arguments
(``_args``), asks the dispatcher for a plan (``_plan``), and runs it with
the plan's algorithm (``algorithms.REGISTRY``) on the compiled kernels
(``kernels``).
"""

from __future__ import annotations

import numpy as np

from . import _args
from ._activation import activation_code
from ._execute import gather, scatter
from ._plan import Plan, get_plan, make_plan, plan_call
from .algorithms import REGISTRY
from .packed import PackedWeight

__all__ = ["col2im", "conv2d", "conv2d_with", "explain", "im2col"]


def _batched(arr: np.ndarray, name: str, layout: _args.Layout) -> tuple[np.ndarray, bool]:
    if arr.ndim not in (3, 4):  # the message is built only then: conv2d is called per layer
        desc = f"{layout.x_desc()} or unbatched {layout.x_desc().replace('N, ', '')}"
        _args.ensure_ndim(arr, name, (3, 4), desc)
    return (arr[None], True) if arr.ndim == 3 else (arr, False)


def _conv_inputs(x, weight, bias, layout):
    """Array-likes -> (x 4-d, unbatched?, weight, bias), validated but not copied."""
    x = _args.as_float_array(x, "x")
    weight = _args.as_float_array(weight, "weight")
    bias = None if bias is None else _args.as_float_array(bias, "bias")
    x, unbatched = _batched(x, "x", layout)
    _args.ensure_ndim(weight, "weight", (4,), f"in {layout.weight_name} order")
    return x, unbatched, weight, bias


def _check_bias(bias, o: int) -> None:
    if bias is not None and bias.shape != (o,):
        raise ValueError(f"bias: expected shape ({o},) (one per output channel), got "
                         f"{bias.shape}")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           layout="NCHW", padding_mode="zeros", activation=None):
    """2-D convolution (cross-correlation, as in PyTorch and TensorFlow).

    Parameters
    ----------
    x : array_like
        ``(N, C, H, W)`` for ``layout="NCHW"`` or ``(N, H, W, C)`` for
        ``layout="NHWC"``; a 3-d unbatched input gives a 3-d output.
    weight : array_like or PackedWeight
        ``(O, C/groups, KH, KW)`` (OIHW, PyTorch) for NCHW, or
        ``(KH, KW, C/groups, O)`` (HWIO, TensorFlow/JAX) for NHWC; or the
        result of :func:`pack_weight` (same layout and groups), for repeated
        calls with one weight.
    bias : array_like, optional
        ``(O,)``, added to every output position.
    stride, dilation : int or (int, int)
    padding : int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same"
        ``"same"`` gives ``ceil(input / stride)`` outputs, extra padding at
        the bottom/right (TensorFlow's rule; PyTorch's for stride 1).
    groups : int
        Channels are split into this many independent groups;
        ``groups == C`` is a depthwise convolution.
    layout : {"NCHW", "NHWC"}
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        PyTorch's padding modes, applied inside the gather (no padded copy).
    activation : {None, "relu", "relu6", "silu"}
        Applied to the result (after the bias) where the kernel writes it,
        with no second pass over the output: ``conv2d(..., activation="relu")``
        equals ``np.maximum(conv2d(...), 0)``.  ReLU6 clips to [0, 6]; SiLU is
        ``v * sigmoid(v)``.  NaN stays NaN.

    Returns
    -------
    numpy.ndarray
        ``(N, O, P, Q)`` or ``(N, P, Q, O)``, of dtype
        ``np.result_type(x, weight, bias)`` (float32 or float64).

    Raises
    ------
    TypeError
        For dtypes other than float32/float64, and non-int hyper-parameters.
    ValueError
        For inconsistent shapes or hyper-parameters; the message names the
        argument and gives the expected and the actual value.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2), np.float32)
    >>> numbaconv.conv2d(x, w)[0, 0]
    array([[10., 14., 18.],
           [26., 30., 34.],
           [42., 46., 50.]], dtype=float32)
    >>> numbaconv.conv2d(x, w, padding="same").shape
    (1, 1, 4, 4)
    >>> numbaconv.conv2d(x, w, -30.0 * np.ones(1, np.float32), activation="relu")[0, 0]
    array([[ 0.,  0.,  0.],
           [ 0.,  0.,  4.],
           [12., 16., 20.]], dtype=float32)
    >>> xt = x.transpose(0, 2, 3, 1)            # NHWC
    >>> wt = w.transpose(2, 3, 1, 0)            # HWIO
    >>> numbaconv.conv2d(xt, wt, layout="NHWC").shape
    (1, 3, 3, 1)
    """
    return conv2d_with(x, weight, bias, stride, padding, dilation, groups, layout=layout,
                       padding_mode=padding_mode, activation=activation)


def conv2d_with(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
                layout="NCHW", padding_mode="zeros", activation=None, algorithm="auto"):
    """:func:`conv2d` with the dispatcher's choice forced to ``algorithm``.

    For layout and algorithm experiments (``numbaconv bench --algorithm``).
    """
    layout = _args.layout_of(layout)
    act = activation_code(activation)
    packed = weight if isinstance(weight, PackedWeight) else None
    x, unbatched, weight, bias = _conv_inputs(x, weight, bias, layout)
    hyper = (stride, padding, dilation, groups, padding_mode, algorithm)

    def validate_and_plan():
        dtype = _args.result_dtype(x, weight, bias)
        # Before the shapes: a weight packed for another layout reads as another shape.
        prepacked = packed is not None and (
            packed.panels_for(layout, groups, dtype) is not None)
        g = _args.conv_geometry(x.shape, weight.shape, layout, stride, padding, dilation,
                                groups, padding_mode)
        _check_bias(bias, g.o)
        return g, dtype, get_plan(g, layout, dtype, algorithm, prepacked) if g.n else None

    if _plain(hyper):  # the same call again: its checks and plan are known
        signature = (layout.name, x.shape, x.dtype, weight.shape, weight.dtype,
                     None if bias is None else (bias.shape, bias.dtype),
                     None if packed is None else (packed.layout, packed.groups, packed.isa),
                     hyper)
        g, dtype, plan = plan_call(signature, validate_and_plan)
    else:
        g, dtype, plan = validate_and_plan()
    out = np.empty(layout.x_shape(g.n, g.o, g.p, g.q), dtype=dtype)
    if plan is not None:
        args = (plan, _args.contiguous(x, dtype), _args.contiguous(weight, dtype),
                None if bias is None else _args.contiguous(bias, dtype), out)
        algorithm = REGISTRY[plan.algorithm]
        algorithm.run(*args, None if packed is None else algorithm.from_packed(plan, packed),
                      act)
    return out[0] if unbatched else out


def _plain(value) -> bool:
    """Only ints, strs and tuples of them: arguments that equal only what validates alike.

    (``True == 1`` and ``1.0 == 1``, but conv2d refuses ``True`` and ``1.0``.)
    """
    kind = type(value)
    return kind is int or kind is str or value is None or (
        kind is tuple and all(_plain(v) for v in value))


def _shape_or_array(value, name):
    """explain() takes arrays or plain shapes."""
    if isinstance(value, tuple | list) and all(_args._is_int(v) for v in value):
        return tuple(int(v) for v in value), None
    arr = _args.as_float_array(value, name)
    return arr.shape, arr.dtype


def explain(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
            layout="NCHW", padding_mode="zeros", dtype=None, algorithm="auto") -> Plan:
    """The plan conv2d (or conv1d, conv3d) would use for these arguments, without running it.

    ``x`` and ``weight`` may be arrays or shapes.  A 3-d or 5-d weight
    explains a conv1d or conv3d (``layout`` then one of that rank's, or
    "NCHW"/"NHWC" for channels first/last): the result is an ``NdPlan``
    whose ``lowered`` is the 2-d plan it runs on.  With shapes, ``dtype``
    (default float32) gives the compute dtype.  ``algorithm`` forces one of
    the registered algorithms (``numbaconv.algorithms``: ``"gemm_1x1"``,
    ``"pointwise_gemm"``, ``"im2col_gemm"``, ``"packed_gemm"``,
    ``"indirect_gemm"``, ``"direct_depthwise"``, ``"winograd"``).  Along an
    axis with one output pixel, ``plan.geometry.stride`` is capped at the
    smallest stride that gives that pixel: a larger one is never applied.

    Examples
    --------
    >>> import numbaconv
    >>> plan = numbaconv.explain((1, 128, 14, 14), (128, 128, 3, 3), padding=1)
    >>> plan.algorithm, (plan.gemm_m, plan.gemm_n, plan.gemm_k)
    ('im2col_gemm', (128, 196, 1152))
    >>> numbaconv.explain((8, 64, 56, 56), (256, 64, 1, 1)).algorithm
    'gemm_1x1'
    >>> numbaconv.explain((1, 64, 16, 56, 56), (64, 64, 3, 3, 3), padding=1).lowered.geometry.c
    192
    """
    if not isinstance(weight, PackedWeight):
        w_shape, w_dtype = _shape_or_array(weight, "weight")
        if len(w_shape) in (3, 5):  # conv1d or conv3d (convnd imports this module)
            from .convnd import explain_nd

            x_shape, x_dtype = _shape_or_array(x, "x")
            b_shape, b_dtype = (None, None) if bias is None else _shape_or_array(bias, "bias")
            if dtype is None:
                known = [d for d in (x_dtype, w_dtype, b_dtype) if d is not None]
                dtype = np.result_type(*known) if known else np.float32
            return explain_nd(x_shape, w_shape, b_shape, stride, padding, dilation, groups,
                              layout, padding_mode, _args.dtype_of(dtype), algorithm)
    layout = _args.layout_of(layout)
    if isinstance(weight, PackedWeight):
        weight.panels_for(layout, groups, weight.dtype)  # the same checks as conv2d
    x_shape, x_dtype = _shape_or_array(x, "x")
    w_shape, w_dtype = _shape_or_array(weight, "weight")
    if len(x_shape) == 3:
        x_shape = (1, *x_shape)
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"x, weight: expected 4-d shapes (x may be 3-d), or a 3-d or 5-d "
                         f"weight for conv1d or conv3d, got {x_shape} and {w_shape}")
    g = _args.conv_geometry(x_shape, w_shape, layout, stride, padding, dilation, groups,
                            padding_mode)
    b_dtype = None
    if bias is not None:
        b_shape, b_dtype = _shape_or_array(bias, "bias")
        if b_shape != (g.o,):
            raise ValueError(f"bias: expected shape ({g.o},), got {b_shape}")
    if dtype is None:  # as conv2d's result: every array's dtype counts
        known = [d for d in (x_dtype, w_dtype, b_dtype) if d is not None]
        dtype = np.result_type(*known) if known else np.float32
    dtype = _args.dtype_of(dtype)
    prepacked = isinstance(weight, PackedWeight) and (
        weight.panels_for(layout, groups, dtype) is not None)
    return make_plan(g, layout, dtype, algorithm, prepacked)


# --------------------------------------------------------------------------
# im2col / col2im
# --------------------------------------------------------------------------
def _patch_geometry(x_shape, kernel_size, stride, padding, dilation, layout, padding_mode,
                    x_name="x"):
    """Geometry of an im2col/col2im problem (a conv with one output channel)."""
    kh, kw = _args.int_pair(kernel_size, "kernel_size", 1)
    n, c, h, w = layout.x_dims(x_shape)
    return _args.conv_geometry(x_shape, layout.w_shape(1, c, kh, kw), layout, stride, padding,
                               dilation, 1, padding_mode, names=(x_name, "kernel_size"))


def _other_rank(layout) -> bool:
    """A 1-d or 3-d layout name (NCW, NWC, NCDHW, NDHWC)."""
    return (isinstance(layout, str) and layout.upper() in _args.RANK_LAYOUTS
            and _args.RANK_LAYOUTS[layout.upper()].rank != 2)


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, *, layout="NCHW",
           padding_mode="zeros"):
    """Gather every receptive field of ``x`` into a column matrix.

    ``layout`` may also be a 1-d or 3-d one ("NCW", "NWC", "NCDHW",
    "NDHWC"), with ``kernel_size``, ``stride``, ``padding`` and
    ``dilation`` per axis as in :func:`numbaconv.conv1d` /
    :func:`numbaconv.conv3d`.

    Returns
    -------
    numpy.ndarray
        NCHW: ``(N, C*KH*KW, P*Q)``, rows in ``torch.nn.functional.unfold``
        order (c, kh, kw).  NHWC: ``(N, P*Q, KH*KW*C)``, columns in
        (kh, kw, c) order.  Unbatched input drops the leading N.  In 1-d and
        3-d the same: rows (c, kd, kh, kw) channels first, columns (kd, kh,
        kw, c) channels last, output positions depth-major.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    >>> numbaconv.im2col(x, 2)[0]
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])
    """
    if _other_rank(layout):  # convnd imports this module
        from .convnd import im2col_nd

        return im2col_nd(x, kernel_size, stride, padding, dilation,
                         _args.RANK_LAYOUTS[layout.upper()], padding_mode)
    layout = _args.layout_of(layout)
    x = _args.as_float_array(x, "x")
    x, unbatched = _batched(x, "x", layout)
    g = _patch_geometry(x.shape, kernel_size, stride, padding, dilation, layout, padding_mode)
    dtype = _args.native(x.dtype)
    plan = make_plan(g, layout, dtype, "im2col_gemm")
    length, rows = g.p * g.q, g.c * g.kh * g.kw
    _args.check_fits(g.n * length * rows * dtype.itemsize,
                     f"im2col's column matrix of {g.n}x{rows}x{length}")
    # The gather writes (N*L, rows) channels last, which reshapes to (N, L, rows).
    cols = np.empty((g.n, length, rows) if layout.channels_last else (g.n, rows, length),
                    dtype=dtype)
    if g.n:
        flat = cols.reshape(g.n * length, rows) if layout.channels_last else cols
        gather(plan, _args.contiguous(x, dtype), flat)
    return cols[0] if unbatched else cols


def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1, *, layout="NCHW",
           padding_mode="zeros"):
    """Sum column entries back into an image: the adjoint of :func:`im2col`.

    Overlapping entries are summed (``torch.nn.functional.fold``).  With a
    non-zero ``padding_mode`` the entry of a padded position is added to the
    input element it was copied from, so this stays the exact adjoint.

    Parameters
    ----------
    cols : array_like
        NCHW: ``(N, C*KH*KW, L)``; NHWC: ``(N, L, KH*KW*C)``; the leading N
        may be dropped.  ``L`` must equal the number of patches.
    output_size : int or (int, int)
        The image height and width (H, W); one size per axis with a 1-d or
        3-d ``layout`` (see :func:`im2col`).

    Returns
    -------
    numpy.ndarray
        ``(N, C, H, W)`` or ``(N, H, W, C)``.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> cols = np.ones((1, 4, 4))
    >>> numbaconv.col2im(cols, (3, 3), 2)[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    if _other_rank(layout):
        from .convnd import col2im_nd

        return col2im_nd(cols, output_size, kernel_size, stride, padding, dilation,
                         _args.RANK_LAYOUTS[layout.upper()], padding_mode)
    layout = _args.layout_of(layout)
    cols = _args.as_float_array(cols, "cols")
    if cols.ndim not in (2, 3):
        raise ValueError(f"cols: expected a 3-d array {layout.cols_desc()} or 2-d unbatched, "
                         f"got shape {cols.shape}")
    unbatched = cols.ndim == 2
    if unbatched:
        cols = cols[None]
    h, w = _args.int_pair(output_size, "output_size", 1)
    kh, kw = _args.int_pair(kernel_size, "kernel_size", 1)
    n = cols.shape[0]
    rows_axis, length_axis = layout.cols_axes
    if cols.shape[rows_axis] % (kh * kw):
        raise ValueError(f"cols: expected axis {rows_axis} to be a multiple of KH*KW = "
                         f"{kh * kw}, got shape {cols.shape}")
    c = cols.shape[rows_axis] // (kh * kw)
    x_shape = layout.x_shape(n, c, h, w)
    g = _patch_geometry(x_shape, (kh, kw), stride, padding, dilation, layout, padding_mode,
                        x_name="output_size")
    if cols.shape[length_axis] != g.p * g.q:
        raise ValueError(f"cols: expected {g.p * g.q} patches ({g.p}x{g.q}) on axis "
                         f"{length_axis} for output_size {(h, w)}, got shape {cols.shape}")
    dtype = _args.native(cols.dtype)
    x = np.zeros(x_shape, dtype=dtype)
    if n:
        cols = _args.contiguous(cols, dtype)
        if layout.channels_last:  # the kernel reads (N*L, KH*KW*C)
            cols = cols.reshape(n * g.p * g.q, cols.shape[-1])
        scatter(make_plan(g, layout, dtype, "im2col_gemm"), cols, x)
    return x[0] if unbatched else x
