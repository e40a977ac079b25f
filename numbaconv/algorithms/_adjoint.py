"""grad_input of a stride-1 layer as a forward convolution of grad_out.

With stride 1 and zero padding, the adjoint of a convolution is itself a
convolution: of grad_out, with each filter turned round, its input and
output channels swapped within each group, and the padding that makes the
result the input's size, ``dilation * (K - 1) - pad`` a side.  So a
forward algorithm (``winograd``, ``indirect_gemm``) computes grad_input
with no column matrix and no col2im, and its grad_weight stays
``im2col_gemm``'s.  Evidence: docs/design/decisions.md, "Gradients:
direct_depthwise, gemm_1x1, a forward convolution, else im2col_gemm".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from .. import kernels
from .._args import Geometry
from ._base import REGISTRY, Plan

# At least this many input pixels (N*H*W) per call: the weight is flipped
# per call (O*C*KH*KW moves) against N*H*W times as many multiply-adds;
# below it, ResNet-50's 14x14 and 7x7 layers at batch 1 ran 1.2-1.7x slower.
ADJOINT_MIN_PIXELS = 784


def transposed(g: Geometry) -> Geometry | None:
    """The forward problem whose result is ``g``'s grad_input, or None if there is none.

    None for a stride above 1, a padding mode other than zeros (its adjoint
    folds the border back onto the input, which no convolution does), or a
    pad wider than the dilated kernel's reach (grad_out would need cropping).
    """
    if g.stride != (1, 1) or g.padding_mode != "zeros":
        return None
    reach = [(g.kh - 1) * g.dilation[0]] * 2 + [(g.kw - 1) * g.dilation[1]] * 2
    if any(pad > r for pad, r in zip(g.pads, reach, strict=True)):
        return None
    return dataclasses.replace(g, c=g.o, h=g.p, w=g.q, o=g.c, p=g.h, q=g.w,
                               pads=tuple(r - pad for pad, r in zip(g.pads, reach, strict=True)))


def flipped(w: np.ndarray, layout, groups: int) -> np.ndarray:
    """The weight of ``transposed``: each filter turned round, C and O swapped per group.

    OIHW (O, Cg, KH, KW) becomes (C, Og, KH, KW); HWIO (KH, KW, Cg, O) becomes
    (KH, KW, Og, C).  One parallel pass (``kernels.packing.flip_weight``).
    """
    if layout.channels_last:
        kh, kw, cg, o = w.shape
        og = o // groups
        out = np.empty((kh, kw, og, groups * cg), w.dtype)
        ws = (og, cg * o, o, 1)  # strides of (group, tap, c, o)
        os = (cg, og * groups * cg, groups * cg, 1)  # of (group, tap, o, c)
    else:
        o, cg, kh, kw = w.shape
        og = o // groups
        out = np.empty((groups * cg, og, kh, kw), w.dtype)
        ws = (og * cg * kh * kw, 1, kh * kw, cg * kh * kw)
        os = (cg * og * kh * kw, 1, kh * kw, og * kh * kw)
    flip = kernels.get("flip_weight", "ANY", w.dtype.name)
    flip(w.reshape(-1), out.reshape(-1), groups, kh * kw, cg, og, np.array(ws, np.int64),
         np.array(os, np.int64))
    return out


def grad_input_by(name: str) -> Callable[[Plan, np.ndarray, np.ndarray], np.ndarray]:
    """An algorithm's ``grad_input``: the forward ``name`` convolution of ``transposed``."""

    def grad_input(plan: Plan, w: np.ndarray, gout: np.ndarray) -> np.ndarray:
        from .._plan import get_plan  # here: _plan imports the algorithms

        g, layout = plan.geometry, plan.layout
        tplan = get_plan(transposed(g), layout, plan.dtype, name)
        gx = np.empty(layout.x_shape(g.n, g.c, g.h, g.w), gout.dtype)
        REGISTRY[name].run(tplan, gout, flipped(w, layout, g.groups), None, gx)
        return gx

    grad_input.__doc__ = f"grad_x as the forward {name} convolution of ``transposed``."
    return grad_input


def grad_weight(plan: Plan, x: np.ndarray, gout: np.ndarray, cols=None) -> np.ndarray:
    """im2col_gemm's (the columns a layer kept, or gathered here)."""
    from .._plan import get_plan

    iplan = get_plan(plan.geometry, plan.layout, plan.dtype, "im2col_gemm")
    return REGISTRY["im2col_gemm"].grad_weight(iplan, x, gout, cols)
