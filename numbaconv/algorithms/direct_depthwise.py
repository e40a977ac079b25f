"""direct_depthwise: groups == C, a direct multiply-add kernel per channel.

A depthwise layer's GEMMs would be one (pixels x KH*KW) product per
channel, far too thin for BLAS (its backward measured 7-8x slower than
PyTorch's); direct kernels read through the index tables instead.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .._args import ceil_div, check_fits, physical_memory
from .._execute import bias_arg, channel_block, serial_below
from .._tables import IndexTables
from ._base import Algorithm, Plan, Problem, is_depthwise, register


def unsupported(problem: Problem) -> str | None:
    g = problem.geometry
    if not is_depthwise(g):
        return f"needs groups == input channels > 1, got groups={g.groups} with {g.c} channels"
    return None


def scratch_bytes(problem: Problem) -> int:
    """The NCHW forward kernel's scratch: one padded plane and accumulator per thread."""
    g = problem.geometry
    if problem.layout.channels_last:
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
    return problem.plan("direct_depthwise", tables=IndexTables.build(problem.geometry))


def run(plan: Plan, x: np.ndarray, w: np.ndarray, bias, out: np.ndarray, panels=None,
        act: int = 0) -> None:
    g, t = plan.geometry, plan.tables
    kernel = kernels.get("depthwise", plan.layout.name, plan.dtype)
    b, has_bias = bias_arg(bias, x.dtype)
    with serial_below(x.nbytes + out.nbytes):
        if plan.layout.channels_last:
            kernel(x, w, b, has_bias, out, t.htab, t.wtab, act)
        else:  # reads a padded plane of each channel (_tables.padded_axis)
            dh, dw = g.dilation
            kernel(x, w, b, has_bias, out, t.prow, t.pcol, g.pads[2], t.sh, t.sw, dh, dw, act)


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
    "direct_depthwise", plan=plan, run=run, unsupported=unsupported,
    grad_input=grad_input, grad_weight=grad_weight))
