"""direct_depthwise: groups == C, a direct multiply-add kernel per channel.

A depthwise layer's GEMMs would be one (pixels x KH*KW) product per
channel, far too thin for BLAS (its backward measured 7-8x slower than
PyTorch's); direct kernels read through the index tables instead.  NCHW
layers with one output per channel run the channel-blocked kernel
(``kernels.direct.depthwise_blocked_nchw``), in bands of output rows
(``DepthwiseTile``); channel multipliers run the plane-by-plane one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels, machine
from .._args import ceil_div, check_fits, physical_memory
from .._execute import bias_arg, channel_block, numba_only, serial_below
from .._tables import IndexTables
from ._base import Algorithm, Plan, Problem, is_depthwise, register


@dataclass(frozen=True)
class DepthwiseTile:
    """The channel-blocked NCHW kernel's tasks: bands of ``band`` output rows, run in at
    most ``chunks`` chunks of consecutive tasks (8 per thread)."""

    band: int
    chunks: int


def blocked(problem: Problem) -> bool:
    """NCHW with one output channel per input channel: the channel-blocked kernel.

    Not where the stride skips input rows or columns the kernel never
    reads (it interleaves every row and column of its band), nor at stride
    1 on rows of more than 4 vectors, where the plane-by-plane kernel's
    flat passes are as fast without the transposes (docs/design/decisions.md,
    "Depthwise layers: direct_depthwise").
    """
    g = problem.geometry
    (sh, sw), (dh, dw) = g.stride, g.dilation
    if problem.layout.channels_last or g.o != g.c:
        return False
    if sh == sw == 1 and g.q > 4 * problem.tile.vw:
        return False
    return sh <= (g.kh - 1) * dh + 1 and sw <= (g.kw - 1) * dw + 1


def band_rows(problem: Problem) -> int:
    """Output rows per task: enough tasks for every thread, each band's input in L2.

    A task's scratch is the band's padded input rows for VW channels,
    interleaved; at least 4 tasks per thread keep the threads even.
    """
    g = problem.geometry
    vw = problem.tile.vw
    tasks = max(g.n, 1) * ceil_div(g.c, vw)
    band = ceil_div(g.p, min(g.p, ceil_div(4 * problem.threads, tasks))) if g.p else 1
    sh, dh = g.stride[0], g.dilation[0]
    row_bytes = (g.w + g.pads[2] + g.pads[3]) * vw * problem.dtype.itemsize
    budget = machine.cache_sizes()[1] // 2
    while band > 1 and ((band - 1) * sh + (g.kh - 1) * dh + 1) * row_bytes > budget:
        band = ceil_div(band, 2)
    return max(band, 1)


def unsupported(problem: Problem) -> str | None:
    g = problem.geometry
    if not is_depthwise(g):
        return f"needs groups == input channels > 1, got groups={g.groups} with {g.c} channels"
    return None


def scratch_bytes(problem: Problem) -> int:
    """The plane-by-plane NCHW kernel's scratch: one padded plane and accumulator per thread.

    (The channel-blocked kernel's bands are bounded by ``band_rows``.)
    """
    g = problem.geometry
    if problem.layout.channels_last or blocked(problem):
        return 0
    (sh, sw), dh = g.stride, g.dilation[0]
    rows = max(g.h + g.pads[0] + g.pads[1], sh * g.p + (g.kh - 1) * dh + 1)  # padded_axis
    wq = ceil_div(g.w + g.pads[2] + g.pads[3], sw)
    per_task = sw * rows * wq + g.p * max(wq, g.q)
    return problem.threads * per_task * problem.dtype.itemsize


def planes_fit(problem: Problem) -> bool:
    """Whether the forward kernel's planes take at most a quarter of the machine's memory.

    Not max_workspace_bytes: that bounds what scales with the batch, and a
    plane per thread does not (docs/design/decisions.md, depthwise layers).
    """
    memory = physical_memory()
    return memory is None or scratch_bytes(problem) <= memory // 4


def plan(problem: Problem) -> Plan:
    # Once per problem (plans are cached): a forced call whose planes cannot fit
    check_fits(scratch_bytes(problem), "direct_depthwise's padded planes (one per thread)")
    tile = DepthwiseTile(band_rows(problem), 8 * problem.threads) if blocked(problem) else None
    return problem.plan("direct_depthwise", tables=IndexTables.build(problem.geometry),
                        tile=tile)


def run(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray, panels=None,
        act: int = 0) -> None:
    g, t = plan.geometry, plan.tables
    b, has_bias = bias_arg(bias, x.dtype)
    dh, dw = g.dilation
    # No BLAS runs in here: stop OpenBLAS's spinning threads and use every
    # thread (docs/design/decisions.md, "Depthwise layers: direct_depthwise").
    with numba_only()(x.nbytes + out.nbytes):
        if plan.layout.channels_last:
            kernel = kernels.get("depthwise", plan.layout.name, plan.dtype)
            kernel(x, w, b, has_bias, out, t.htab, t.wtab, act)
        elif plan.tile is not None:  # channel-blocked
            kernel = kernels.get("depthwise_blocked", "NCHW", plan.dtype, plan.isa)
            kernel(x, w, b, has_bias, out, t.prow, t.pcol, g.pads[2], t.sh, t.sw, dh, dw,
                   plan.tile.band, plan.tile.chunks, act)
        else:  # reads a padded plane of each channel (_tables.padded_axis)
            kernel = kernels.get("depthwise", plan.layout.name, plan.dtype)
            kernel(x, w, b, has_bias, out, t.prow, t.pcol, g.pads[2], t.sh, t.sw, dh, dw, act)


def describe(plan: Plan) -> str:
    if plan.layout.channels_last:
        return "a direct multiply-add kernel, an output row a task, channels innermost"
    if plan.tile is None:
        return "a direct multiply-add kernel, plane by plane"
    return (f"a direct multiply-add kernel, channel-blocked ({plan.register_tile.vw} channels "
            f"a vector, bands of {plan.tile.band} output rows)")


def _grad(plan: Plan, kind: str, a: np.ndarray, b: np.ndarray, shape) -> np.ndarray:
    g, t = plan.geometry, plan.tables
    out = np.empty(shape, a.dtype)
    kernel = kernels.get(kind, plan.layout.name, plan.dtype)
    with serial_below(a.nbytes + b.nbytes + out.nbytes):
        if not plan.layout.channels_last:
            kernel(a, b, out, t.htab, t.wtab, t.wint, t.sw)
        elif kind == "depthwise_grad_input":  # tasks of image x channel block
            kernel(a, b, out, t.htab, t.wtab,
                   channel_block(g.c, g.n, plan.threads, plan.register_tile.vw))
        else:  # blocks of output channels, at least 4 per thread, of at least one vector
            kernel(a, b, out, t.htab, t.wtab,
                   max(ceil_div(g.o, 4 * plan.threads), plan.register_tile.vw))
    return out


def grad_input(plan: Plan, w: np.ndarray, gout: np.ndarray) -> np.ndarray:
    g = plan.geometry
    return _grad(plan, "depthwise_grad_input", gout, w, plan.layout.x_shape(g.n, g.c, g.h, g.w))


def grad_weight(plan: Plan, x: np.ndarray, gout: np.ndarray, cols=None) -> np.ndarray:
    g = plan.geometry
    return _grad(plan, "depthwise_grad_weight", x, gout,
                 plan.layout.w_shape(g.o, g.cg, g.kh, g.kw))


ALGORITHM = register(Algorithm(
    "direct_depthwise", plan=plan, run=run, describe=describe, unsupported=unsupported,
    grad_input=grad_input, grad_weight=grad_weight))
