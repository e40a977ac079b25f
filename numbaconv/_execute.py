"""Running a plan: the gather kernels feed NumPy's BLAS-backed matmul.

Every GEMM writes straight into a view of the output (``np.matmul(out=...)``)
unless the plan batches images into one GEMM, and every weight is used
through a reshaped view of the caller's layout (OIHW or HWIO), never repacked.

Runners receive arrays that are C-contiguous, native-endian and of the
compute dtype; they treat the inputs as read-only.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading

import numba
import numpy as np

from . import _threads, config, kernels
from ._args import ceil_div
from ._plan import Plan, indirect_padded, panel_shape


def _view(a: np.ndarray, shape) -> np.ndarray:
    """``a.reshape(shape)`` that must not copy (we write through it)."""
    v = a.reshape(shape)
    if v.size and not np.may_share_memory(v, a):  # pragma: no cover - a planning bug
        raise AssertionError(f"reshape of {a.shape} to {shape} copied")
    return v


_local = threading.local()

# packed_gemm kernels of at least this much work stop OpenBLAS's spinning
# threads first (``_threads.quiet_blas``; indirect_gemm always does, see
# ``run_indirect_gemm``).  OpenBLAS then restarts them on
# its next threaded call, which cost more than it saved on batch-1 layers
# (ResNet-50 NHWC, 12 layers back to back: 27-31 vs 23-26 ms), while at
# batch 8 (1.9 GFLOP layers) it saved a quarter (131-151 vs 181-193 ms).
QUIET_BLAS_FLOPS = 10**9


def workspace(nbytes: int, dtype: np.dtype) -> np.ndarray:
    """This thread's scratch buffer, grown on demand and kept between calls.

    Reusing it saves the page faults of a fresh multi-MB allocation on every
    call (~1 ms for a 7 MB buffer here).  One buffer per Python thread keeps
    concurrent calls apart; each is at most ``config.max_workspace_bytes``
    (plus one output row, see ``_plan._chunking``).
    """
    buf = getattr(_local, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        _local.buf = buf = None  # free the old one before allocating the new
        _local.buf = buf = np.empty(nbytes, np.uint8)
    return buf[:nbytes].view(dtype)


def release_workspace() -> None:
    """Free the calling thread's scratch buffer (up to ``config.max_workspace_bytes``).

    conv2d keeps it between calls to save a fresh allocation each time; call
    this when a thread is done convolving but goes on living.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> _ = numbaconv.conv2d(np.ones((1, 2, 6, 6)), np.ones((3, 2, 3, 3)))
    >>> numbaconv.release_workspace()
    """
    _local.buf = None


def weight_matrices(plan: Plan, w: np.ndarray) -> np.ndarray:
    """The weight as (groups, ...) matrices for the GEMMs, as a view.

    NCHW: OIHW -> (G, Og, Cg*KH*KW), the left operand of W @ cols.
    NHWC: HWIO -> (G, KH*KW*Cg, Og), the right operand of cols @ W.
    """
    g = plan.geometry
    kk = g.kh * g.kw
    if plan.layout == "NCHW":
        return _view(w, (g.groups, g.og, g.cg * kk))
    return _view(w, (kk * g.cg, g.groups, g.og)).transpose(1, 0, 2)


# --------------------------------------------------------------------------
# gather / scatter: the only doors to the im2col/col2im kernels
# --------------------------------------------------------------------------
def _nchw_strides(cols: np.ndarray, nb: int, row_major: bool) -> tuple[int, int, int]:
    """(pb*Q, image stride, row stride) of a 3-d NCHW column buffer."""
    length = cols.shape[2]
    if row_major:  # (C*KH*KW, nb, pb*Q)
        return length, length, nb * length
    return length, cols.shape[1] * length, length  # (nb, C*KH*KW, pb*Q)


@contextlib.contextmanager
def serial_below(nbytes: int):
    """Kernels launched inside run on the calling thread alone if ``nbytes`` is small.

    Small means at most ``config.serial_kernel_bytes``: then OpenBLAS's worker,
    spinning after the last GEMM, keeps the other core to itself (see
    ``config``).  ``numba.set_num_threads`` is per calling thread, so
    concurrent callers keep their own counts.
    """
    if nbytes > config.serial_kernel_bytes:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def gather(plan: Plan, x: np.ndarray, cols: np.ndarray, n0: int = 0, p0: int = 0,
           nb: int | None = None, row_major: bool = False) -> None:
    """im2col of images ``n0:n0+nb``, output rows ``p0:p0+pb``, into ``cols``.

    NCHW ``cols`` is (nb, C*KH*KW, pb*Q), or (C*KH*KW, nb, pb*Q) with
    ``row_major`` (the operand of one GEMM over all nb images).  NHWC ``cols``
    is (nb*pb*Q, KH*KW*C) with group-major columns (see ``kernels.im2col``).
    ``x`` is C-contiguous in the plan's dtype; ``cols`` C-contiguous.
    """
    g, t = plan.geometry, plan.tables
    nb = g.n - n0 if nb is None else nb
    kernel = kernels.get("im2col", plan.layout, plan.dtype)
    with serial_below(cols.nbytes):
        if plan.layout == "NCHW":
            length, bstride, rstride = _nchw_strides(cols, nb, row_major)
            kernel(x, n0, p0, nb, length // g.q, cols.reshape(-1), bstride, rstride, t.htab,
                   t.wtab, t.hint, t.wint, t.sh, t.sw)
        else:
            kernel(x, n0, p0, nb, g.groups, cols, t.htab, t.wtab, t.wint)


def scatter(plan: Plan, cols: np.ndarray, x: np.ndarray, n0: int = 0, p0: int = 0,
            nb: int | None = None, row_major: bool = False) -> None:
    """col2im: ``x[n0:n0+nb] +=`` the columns of output rows ``p0..``; gather's adjoint.

    Same ``cols`` layouts as :func:`gather`.  ``x`` must hold zeros (or values
    to add to).  Race-free in parallel.
    """
    g, t = plan.geometry, plan.tables
    nb = g.n - n0 if nb is None else nb
    kernel = kernels.get("col2im", plan.layout, plan.dtype)
    with serial_below(cols.nbytes):
        if plan.layout == "NCHW":
            length, bstride, rstride = _nchw_strides(cols, nb, row_major)
            kernel(cols.reshape(-1), n0, p0, nb, length // g.q, bstride, rstride, x, t.htab,
                   t.wtab, t.wint, t.sw)
        else:
            kernel(cols, n0, p0, nb, g.groups, x, t.htab, t.wtab)


def channel_block(channels: int, images: int, threads: int, lanes: int = 8) -> int:
    """Channels per task of the NHWC depthwise input gradient (image x channel block).

    Enough blocks for every thread, but blocks of at least one vector's
    ``lanes`` channels, so that the innermost loop, over channels, still
    vectorises.
    """
    blocks = ceil_div(4 * threads, max(images, 1))
    return max(ceil_div(channels, blocks), min(channels, lanes))


# --------------------------------------------------------------------------
# The algorithms
# --------------------------------------------------------------------------
def _unbatch(plan: Plan, tmp: np.ndarray, out: np.ndarray, n0: int, nb: int, bias) -> None:
    """Copy a batched GEMM's (G, Og, nb*L) result into out[n0:n0+nb] (NCHW), adding bias."""
    g = plan.geometry
    length = g.p * g.q
    src = tmp.reshape(g.groups, g.og, nb, length).transpose(2, 0, 1, 3)
    dst = _view(out[n0 : n0 + nb], (nb, g.groups, g.og, length))
    if bias is None:
        np.copyto(dst, src)
    else:
        np.add(src, bias.reshape(g.groups, g.og, 1), out=dst)


def run_gemm_1x1(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray) -> None:
    g = plan.geometry
    wp = weight_matrices(plan, w)
    hw = g.h * g.w
    if plan.layout == "NHWC":
        # One GEMM over the whole batch per group: x[N*H*W, Cg] @ W[Cg, Og].
        rows = g.n * hw
        o = _view(out, (rows, g.groups, g.og)).transpose(1, 0, 2)
        np.matmul(_view(x, (rows, g.groups, g.cg)).transpose(1, 0, 2), wp, out=o)
        if bias is not None:
            out += bias
        return
    if not plan.gemm_batched:
        # One GEMM per image and group: W[Og, Cg] @ x[n, g][Cg, H*W].
        o = _view(out, (g.n, g.groups, g.og, hw))
        np.matmul(wp, _view(x, (g.n, g.groups, g.cg, hw)), out=o)
        if bias is not None:
            o += bias.reshape(g.groups, g.og, 1)
        return
    # Small images: x[n0:n0+nb] as (C, nb*H*W), one GEMM, then into place.
    buf = workspace(plan.workspace_bytes, x.dtype)
    for n0 in range(0, g.n, plan.batch_chunk):
        nb = min(plan.batch_chunk, g.n - n0)
        xt = _view(buf[: g.c * nb * hw], (g.c, nb, hw))
        np.copyto(xt, x[n0 : n0 + nb].reshape(nb, g.c, hw).transpose(1, 0, 2))
        tmp = _view(buf[g.c * nb * hw : (g.c + g.o) * nb * hw], (g.groups, g.og, nb * hw))
        np.matmul(wp, _view(xt, (g.groups, g.cg, nb * hw)), out=tmp)
        _unbatch(plan, tmp, out, n0, nb, bias)


def run_im2col_gemm(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray) -> None:
    g = plan.geometry
    kk = g.kh * g.kw
    rows_k = g.c * kk  # column-matrix rows (NCHW) / columns (NHWC)
    wp = weight_matrices(plan, w)
    buf = workspace(plan.workspace_bytes, x.dtype)
    for n0 in range(0, g.n, plan.batch_chunk):
        nb = min(plan.batch_chunk, g.n - n0)
        for p0 in range(0, g.p, plan.row_chunk):
            pb = min(plan.row_chunk, g.p - p0)
            length = pb * g.q
            if plan.layout == "NHWC":
                rows = nb * length
                cols = _view(buf[: rows * rows_k], (rows, rows_k))
                gather(plan, x, cols, n0, p0, nb)
                o2 = _view(out[n0 : n0 + nb, p0 : p0 + pb], (rows, g.o))
                o = _view(o2, (rows, g.groups, g.og)).transpose(1, 0, 2)
                a = _view(cols, (rows, g.groups, kk * g.cg)).transpose(1, 0, 2)
                np.matmul(a, wp, out=o)
                if bias is not None:
                    o2 += bias
            elif plan.gemm_batched:  # whole small images: pb == P
                cols = _view(buf[: rows_k * nb * length], (rows_k, nb, length))
                gather(plan, x, cols, n0, p0, nb, row_major=True)
                tmp = _view(buf[rows_k * nb * length : (rows_k + g.o) * nb * length],
                            (g.groups, g.og, nb * length))
                np.matmul(wp, _view(cols, (g.groups, g.cg * kk, nb * length)), out=tmp)
                _unbatch(plan, tmp, out, n0, nb, bias)
            else:
                cols = _view(buf[: nb * rows_k * length], (nb, rows_k, length))
                gather(plan, x, cols, n0, p0, nb)
                o = _view(out[n0 : n0 + nb, :, p0 : p0 + pb], (nb, g.groups, g.og, length))
                np.matmul(wp, _view(cols, (nb, g.groups, g.cg * kk, length)), out=o)
                if bias is not None:
                    o += bias.reshape(g.groups, g.og, 1)


@functools.cache
def _no_bias(dtype: np.dtype) -> np.ndarray:
    zero = np.zeros(1, dtype)
    zero.flags.writeable = False  # shared by every call; kernels only read a bias
    return zero


def _bias_arg(bias, dtype) -> tuple[np.ndarray, bool]:
    """(array, has_bias) for a kernel: kernels take an array even without a bias."""
    return (bias, True) if bias is not None else (_no_bias(np.dtype(dtype)), False)


def _quiet_blas_before(plan: Plan) -> None:
    """Stop OpenBLAS's spinning threads before a Numba GEMM kernel of QUIET_BLAS_FLOPS."""
    if plan.flops >= QUIET_BLAS_FLOPS:
        _threads.quiet_blas()


def run_packed_gemm(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray) -> None:
    g, t = plan.geometry, plan.tables
    kc, nc, mc = plan.tile
    kernel = kernels.get("packed_gemm", plan.layout, plan.dtype, plan.isa)
    b, has_bias = _bias_arg(bias, x.dtype)
    _quiet_blas_before(plan)
    kernel(x, _view(w, (g.o, g.cg * g.kh * g.kw)), b, has_bias, out, t.htab, t.wtab, t.hint,
           t.wint, t.sh, t.sw, g.groups, kc, nc, mc)


def _numba_only():
    """Before Numba kernels with no BLAS call between them: how to launch each.

    Stops OpenBLAS's idle, spinning threads (``_threads.quiet_blas``), so
    the kernels get every core.  Returns ``serial_below`` when it cannot
    (another Python thread exists): then small kernels stay on the calling
    thread; else a no-op for any size.
    """
    if _threads.quiet_blas():
        return lambda nbytes: contextlib.nullcontext()
    return serial_below


def _check_reshapable(algorithm: str, x: np.ndarray, out: np.ndarray) -> None:
    """x and out must be C-contiguous: the runners reshape them, and a copy would lose writes."""
    if not (out.flags.c_contiguous and x.flags.c_contiguous):  # pragma: no cover - a caller's bug
        raise AssertionError(f"{algorithm}: x and out must be C-contiguous (reshaped)")


_launches: dict[int, tuple] = {}  # id(plan) -> (plan, what run_indirect_gemm needs)


def _indirect_launch(plan: Plan) -> tuple:
    """What ``run_indirect_gemm`` needs beyond the arrays, worked out once per plan.

    After a large kernel, the interpreter's own data is out of the caches,
    and every Python step of a call runs slowly: at batch 1 a 3x3 call spent
    100-250 us outside its kernels (ResNet-50 run as a network).  So the
    per-plan part (kernels, shapes, table slices) is looked up, not rebuilt.
    """
    hit = _launches.get(id(plan))
    if hit is not None and hit[0] is plan:
        return hit[1]
    g, t = plan.geometry, plan.tables
    pshape = panel_shape(g.groups, g.og, g.cg * g.kh * g.kw, np.dtype(plan.dtype), plan.isa)
    nwp = math.prod(pshape) if plan.tile[3] else 0
    pack = kernels.get("pack_panels", "ANY", plan.dtype, plan.isa)
    padded = indirect_padded(g)
    pad = None
    if padded:  # else x is read in place
        hp, wp = padded
        pad_args = (t.prow[:hp], t.pcol[:wp]) + (
            (g.pads[2], g.pads[2] + g.w) if plan.layout == "NCHW" else ())
        pad = (kernels.get("pad", plan.layout, plan.dtype), hp * wp * g.c,
               (hp, wp, g.c) if plan.layout == "NHWC" else (g.c, hp, wp), pad_args)
    launch = (pshape, nwp, pack, pad, kernels.get("indirect_gemm", "ANY", plan.dtype, plan.isa))
    if len(_launches) >= 256:
        _launches.clear()
    _launches[id(plan)] = (plan, launch)  # the plan kept alive, so its id stays its own
    return launch


def run_indirect_gemm(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray,
                      panels: np.ndarray | None = None) -> None:
    """``panels``: a ``PackedWeight``'s, when ``plan.prepacked`` (then none are built)."""
    pshape, nwp, pack, pad, conv = _indirect_launch(plan)
    kc, per, per_task, prepack = plan.tile
    buf = workspace(plan.workspace_bytes, x.dtype)
    wf = w.reshape(-1)
    if plan.prepacked != (panels is not None):  # pragma: no cover - a caller's bug
        raise AssertionError("indirect_gemm: panels must come with a prepacked plan, only")
    _check_reshapable("indirect_gemm", x, out)
    wpk = buf[:nwp] if panels is None else panels.reshape(-1)
    # At any size: no BLAS runs from here to the last chunk.  With OpenBLAS's
    # threads stopped, the packing and padding kernels get both cores too.
    launch = _numba_only()
    if prepack:
        with launch(wpk.nbytes):
            pack(wf, plan.dims[10], plan.dims[11], wpk.reshape(pshape))
    b, has_bias = _bias_arg(bias, x.dtype)
    n_n, chunk = plan.geometry.n, plan.batch_chunk
    # (Plain reshapes: every array here is C-contiguous, so none copies.)
    for n0 in range(0, n_n, chunk):
        nb = min(chunk, n_n - n0)
        xp = x[n0 : n0 + nb]
        if pad is not None:
            kernel, size, shape, tables = pad
            xp = buf[nwp : nwp + nb * size].reshape((nb, *shape))
            with launch(xp.nbytes):
                kernel(x[n0 : n0 + nb], xp, *tables)
        dims = plan.dims
        if nb != chunk:
            dims = dims.copy()
            dims[0] = nb
        conv(xp.reshape(-1), wf, wpk, b, has_bias, out[n0 : n0 + nb].reshape(-1),
             plan.offsets, dims, kc, per, per_task)


def run_pointwise_gemm(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray) -> None:
    kernel = kernels.get("pointwise_gemm", "ANY", plan.dtype, plan.isa)
    b, has_bias = _bias_arg(bias, x.dtype)
    if plan.layout == "NHWC":  # C = x @ W: A is the input
        a, bm = x, w
    else:  # C = W @ x: A is the weight
        a, bm = w, x
    _check_reshapable("pointwise_gemm", x, out)
    with _numba_only()(x.nbytes + out.nbytes):  # no BLAS runs in here
        kernel(a.reshape(-1), bm.reshape(-1), b, has_bias, out.reshape(-1), plan.dims,
               *plan.tile)


def run_direct_depthwise(plan: Plan, x: np.ndarray, w: np.ndarray, bias,
                         out: np.ndarray) -> None:
    t = plan.tables
    kernel = kernels.get("depthwise", plan.layout, plan.dtype)
    b, has_bias = _bias_arg(bias, x.dtype)
    with serial_below(x.nbytes + out.nbytes):
        if plan.layout == "NCHW":
            dh, dw = plan.geometry.dilation
            kernel(x, w, b, has_bias, out, t.prow, t.pcol, plan.geometry.pads[2], t.sh, t.sw,
                   dh, dw)
        else:
            kernel(x, w, b, has_bias, out, t.htab, t.wtab)


def quiet_fp(func):
    """Run ``func`` without NumPy's floating-point warnings.

    A NaN or inf in the input gives NaN or inf in the output, as a direct
    convolution does; it must not also raise ``RuntimeWarning: invalid value
    encountered in matmul`` from the GEMMs inside (``np.errstate`` is per
    thread, so concurrent callers keep their own settings).
    """

    @functools.wraps(func)
    def quiet(*args, **kwargs):
        with np.errstate(all="ignore"):
            return func(*args, **kwargs)

    return quiet


# Only the runners with NumPy arithmetic (BLAS, bias adds) need quiet_fp:
# Numba kernels raise no floating-point warnings, and a small layer's call
# should not pay for np.errstate (~2 us).
RUNNERS = {"gemm_1x1": quiet_fp(run_gemm_1x1), "pointwise_gemm": run_pointwise_gemm,
           "im2col_gemm": quiet_fp(run_im2col_gemm), "packed_gemm": run_packed_gemm,
           "indirect_gemm": run_indirect_gemm, "direct_depthwise": run_direct_depthwise}
