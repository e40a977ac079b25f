"""The algorithms, one module each, and the dispatcher's rules that pick among them.

Each module registers an :class:`Algorithm` (``_base``): which problems it
can run, how it plans and runs one, and how ``explain()`` describes it.
``RULES`` is the forward dispatcher, ``BACKWARD_RULES`` the gradients' (and
so the transposed convolution's): the first rule that applies picks the
algorithm.  Each rule names the entry of docs/design/decisions.md that
holds its evidence.  Adding an algorithm is one module here plus, if the
dispatcher should choose it, one rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from .. import config
from .._args import ceil_div

# Imported (so registered) in the order algorithm_names() lists them.
# isort: off
from . import gemm_1x1, pointwise_gemm, im2col_gemm  # noqa: F401
from . import indirect_gemm, packed_gemm, direct_depthwise, winograd  # noqa: F401
# isort: on
from . import _adjoint
from ._adjoint import ADJOINT_MIN_PIXELS
from ._base import REGISTRY, Algorithm, Plan, Problem, is_depthwise, is_pointwise, register
from .direct_depthwise import planes_fit
from .indirect_gemm import (
    enough_work,
    few_pixels,
    fits,
    many_pixels,
    small_images,
    wide_panels,
)
from .winograd import tile_size

# 1x1 layers below this much work run on Numba's threads (pointwise_gemm),
# above it on OpenBLAS's (gemm_1x1): one thread pool across a network of
# small layers beats OpenBLAS's faster GEMM layer by layer.
POINTWISE_MAX_FLOPS = 2 * 10**8

# Deeper layers than this pack too large a weight per indirect_gemm call.
INDIRECT_MAX_K = 2304

# Winograd pays where its transforms (per channel) and its weight transform
# (per call) are small against the GEMMs they save: both groups' channels,
# the output pixels, and each of its alpha^2 GEMMs' work at least these.
WINOGRAD_MIN_CHANNELS = 128
WINOGRAD_MIN_PIXELS = 784
WINOGRAD_MIN_GEMM_FLOPS = 10**7


@dataclass(frozen=True)
class Rule:
    """``algorithm`` runs the problems ``applies`` accepts; ``why``: its decisions.md entry."""

    algorithm: str
    when: str
    applies: Callable[[Problem], bool]
    why: str


def _pointwise_one_block(p: Problem) -> bool:
    g, dtype, isa = p.geometry, p.dtype, p.isa
    return (is_pointwise(g) and wide_panels(dtype, isa) and few_pixels(g, dtype, isa)
            and fits(g, dtype, p.prepacked, isa))


def _indirect(p: Problem) -> bool:
    g, dtype, isa = p.geometry, p.dtype, p.isa
    channels_first = not p.layout.channels_last
    one_block = few_pixels(g, dtype, isa) and (channels_first or wide_panels(dtype, isa))
    deep_ok = (p.prepacked or g.cg * g.kh * g.kw <= INDIRECT_MAX_K or one_block
               or many_pixels(g, dtype, isa) or (channels_first and small_images(g, dtype)))
    return deep_ok and enough_work(g) and fits(g, dtype, p.prepacked, isa)


def _winograd(p: Problem) -> bool:
    g = p.geometry
    if not config.winograd or winograd.unsupported(p) is not None:
        return False
    m = tile_size(g)
    tiles = g.n * ceil_div(g.p, m) * ceil_div(g.q, m)
    return (min(g.cg, g.og) >= WINOGRAD_MIN_CHANNELS and g.n * g.p * g.q >= WINOGRAD_MIN_PIXELS
            and 2 * g.cg * g.og * tiles >= WINOGRAD_MIN_GEMM_FLOPS)


def _adjoint_takes(name: str) -> Callable[[Problem], bool]:
    """A backward rule's test: grad_input is a forward convolution (``_adjoint.transposed``)
    of at least ADJOINT_MIN_PIXELS output pixels, which the forward rules give to ``name``."""

    def applies(p: Problem) -> bool:
        tg = _adjoint.transposed(p.geometry)
        return (tg is not None and tg.n * tg.p * tg.q >= ADJOINT_MIN_PIXELS
                and choose_rule(dataclasses.replace(p, geometry=tg)).algorithm == name)

    return applies


RULES: tuple[Rule, ...] = (
    Rule("direct_depthwise", "depthwise: groups == C > 1, its padded planes (NCHW, one per "
         "thread) take at most a quarter of the memory",
         lambda p: is_depthwise(p.geometry) and planes_fit(p),
         "Depthwise layers: direct_depthwise"),
    Rule("indirect_gemm", "1x1 whose output pixels make one block of tiles, on a wide tile "
         "(wide_panels), and one padded image and the packed weight fit the workspace",
         _pointwise_one_block, "1x1 layers with few pixels: indirect_gemm on wide tiles"),
    Rule("pointwise_gemm", "1x1 below POINTWISE_MAX_FLOPS",
         lambda p: is_pointwise(p.geometry) and p.geometry.flops < POINTWISE_MAX_FLOPS,
         "1x1 layers: pointwise_gemm below POINTWISE_MAX_FLOPS, else gemm_1x1"),
    Rule("gemm_1x1", "other 1x1 layers", lambda p: is_pointwise(p.geometry),
         "1x1 layers: pointwise_gemm below POINTWISE_MAX_FLOPS, else gemm_1x1"),
    Rule("winograd", "3x3, stride 1, dilation 1, config.winograd, at least WINOGRAD_MIN_CHANNELS "
         "input and output channels per group, WINOGRAD_MIN_PIXELS output pixels and "
         "WINOGRAD_MIN_GEMM_FLOPS per transform-domain GEMM",
         _winograd, "Winograd: F(4x4) and F(2x2)"),
    Rule("indirect_gemm",
         "K <= INDIRECT_MAX_K (any K with a PackedWeight, or whose pixels make one block in "
         "NCHW or on a wide tile, or at least four blocks, or NCHW float32 images of at most "
         "64 pixels), at least "
         "INDIRECT_MIN_FLOPS (NARROW_MIN_FLOPS with at most NARROW_MAX_CHANNELS output channels "
         "per group), and "
         "one padded image (and the weight panels it packs) fits "
         "the workspace",
         _indirect, "3x3 and other layers: indirect_gemm"),
    Rule("im2col_gemm", "everything else", lambda p: True, "Everything else: im2col_gemm"),
)

_GRADIENTS = "Gradients: direct_depthwise, gemm_1x1, a forward convolution, else im2col_gemm"
BACKWARD_RULES: tuple[Rule, ...] = (
    Rule("direct_depthwise", "depthwise: groups == C > 1", lambda p: is_depthwise(p.geometry),
         _GRADIENTS),
    Rule("gemm_1x1", "1x1 layers: no col2im", lambda p: is_pointwise(p.geometry), _GRADIENTS),
    Rule("winograd", "3x3 stride-1 layers with zero padding of at most 2 a side, whose "
         "grad_input convolution Winograd's forward rule takes (grad_weight: im2col_gemm's)",
         _adjoint_takes("winograd"), _GRADIENTS),
    Rule("indirect_gemm", "stride-1 layers with zero padding of at most dilation*(K-1) a side "
         "and at least ADJOINT_MIN_PIXELS input pixels, whose grad_input convolution "
         "indirect_gemm's forward rule takes (grad_weight: im2col_gemm's)",
         _adjoint_takes("indirect_gemm"), _GRADIENTS),
    Rule("im2col_gemm", "everything else", lambda p: True, _GRADIENTS),
)


def choose_rule(problem: Problem, rules: tuple[Rule, ...] = RULES) -> Rule:
    """The first rule that applies to ``problem``."""
    for rule in rules:
        if rule.applies(problem):
            return rule
    raise AssertionError("the last rule applies to every problem")  # pragma: no cover


def reason(rule: Rule, rules: tuple[Rule, ...]) -> str:
    """explain()'s why-line for a plan the dispatcher chose by ``rule``."""
    table = "BACKWARD_RULES" if rules is BACKWARD_RULES else "RULES"
    return (f"{table} #{rules.index(rule) + 1}, {rule.when} (docs/design/decisions.md: "
            f"\"{rule.why}\")")


__all__ = ["BACKWARD_RULES", "REGISTRY", "RULES", "Algorithm", "Plan", "Problem", "Rule",
           "choose_rule", "reason", "register"]
