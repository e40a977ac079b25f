"""What every algorithm shares: the problem it is given, the plan it makes, the registry.

An algorithm is one module of this package that registers an
:class:`Algorithm`: which problems it can run, how it plans one (its own
typed tile), how it runs a plan, how it describes itself in ``explain()``,
and, optionally, how it computes the gradients.  The dispatcher's rules
(``algorithms.RULES``) say which one runs a problem.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .. import machine
from .._args import Geometry, Layout, ceil_div
from .._tables import IndexTables
from ..machine import RegisterTile


@dataclass(frozen=True)
class Problem:
    """One conv2d problem as the planners see it."""

    geometry: Geometry
    layout: Layout
    dtype: np.dtype
    isa: str  # the ISA variant whose register tile the kernels will use
    threads: int
    limit: int  # config.max_workspace_bytes
    prepacked: bool = False  # a PackedWeight brings indirect_gemm's weight panels

    @cached_property
    def tile(self) -> RegisterTile:
        return machine.register_tile(self.isa, self.dtype)

    def plan(self, algorithm: str, **fields) -> Plan:
        """A plan of this problem; ``fields`` are the algorithm's own (GEMM shape, tile...)."""
        g = self.geometry
        base = dict(gemm_m=0, gemm_n=0, gemm_k=0, gemm_calls=0, gemm_batched=False,
                    batch_chunk=max(g.n, 1), row_chunk=g.p, workspace_bytes=0)
        return Plan(algorithm, layout=self.layout, dtype=self.dtype.name, geometry=g,
                    max_workspace_bytes=self.limit, threads=self.threads, isa=self.isa,
                    **{**base, **fields})


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.2f} MiB"


@dataclass(frozen=True)
class Plan:
    """How one conv2d problem is computed.  ``print(plan)`` reads it aloud.

    Attributes
    ----------
    algorithm : str
        The registered algorithm that runs it (``numbaconv.algorithms``):
        ``"gemm_1x1"``, ``"pointwise_gemm"``, ``"im2col_gemm"``,
        ``"indirect_gemm"``, ``"packed_gemm"``, ``"direct_depthwise"`` or
        ``"winograd"``.
    layout : Layout
        NCHW or NHWC (equal to its name, ``plan.layout == "NHWC"``).
    dtype : str
        ``"float32"`` or ``"float64"``.
    geometry : Geometry
        Sizes, stride, dilation, explicit padding, groups, padding_mode.  Along
        an axis of one output pixel the stride shown is capped at the
        smallest that gives that pixel (the result is the same).
    gemm_m, gemm_n, gemm_k : int
        The shape of one GEMM call (M x K times K x N); 0 for direct_depthwise.
    gemm_calls : int
        GEMM calls per convolution (images or chunks, times groups).
    gemm_batched : bool
        NCHW only: one GEMM over all the images of a chunk instead of one per
        image, for small images where a per-image GEMM is too thin for BLAS
        to run at speed; the result is copied into place.
    batch_chunk, row_chunk : int
        Images, and output rows of an image, per chunk.
    workspace_bytes : int
        Scratch memory of one call.
    threads : int
        Numba threads the kernels run on.
    tables : IndexTables or None
        What the gather and direct kernels read (``_tables``).
    tile : dataclass or None
        The algorithm's own plan: task sizes and the layout as data for its
        kernel (e.g. ``algorithms.indirect_gemm.IndirectTile``).
    prepacked : bool
        The weight's panels come ready from a ``PackedWeight``
        (``pack_weight``) instead of being built per call.
    isa : str
        The ISA variant whose register tile the kernels use (``machine``).
    reason : str
        Why this algorithm: the dispatcher's rule that chose it (its
        condition and the heading of its evidence in docs/design/decisions.md),
        or that it was forced.
    """

    algorithm: str
    layout: Layout
    dtype: str
    geometry: Geometry
    gemm_m: int
    gemm_n: int
    gemm_k: int
    gemm_calls: int
    gemm_batched: bool
    batch_chunk: int
    row_chunk: int
    workspace_bytes: int
    max_workspace_bytes: int
    threads: int
    tables: IndexTables | None = field(default=None, repr=False, compare=False)
    tile: object | None = None
    prepacked: bool = False
    isa: str = field(default_factory=machine.variant)
    reason: str = field(default="", compare=False)

    @property
    def register_tile(self) -> RegisterTile:
        return machine.register_tile(self.isa, self.dtype)

    @cached_property
    def launch(self):
        """What the algorithm's runner needs beyond the arrays, worked out once per plan."""
        return REGISTRY[self.algorithm].prepare(self)

    @property
    def chunks(self) -> int:
        g = self.geometry
        return ceil_div(g.n, self.batch_chunk) * ceil_div(g.p, self.row_chunk) if g.n else 0

    @property
    def flops(self) -> int:
        return self.geometry.flops

    def __str__(self) -> str:
        g = self.geometry
        pt, pb, pl, pr = g.pads
        algorithm = REGISTRY[self.algorithm]
        gemm = (f"  GEMM   M x N x K = {self.gemm_m} x {self.gemm_n} x {self.gemm_k}, "
                f"{self.gemm_calls} call(s), {algorithm.describe(self)}" if self.gemm_calls else
                f"  GEMM   none: {algorithm.describe(self) or 'a direct multiply-add kernel'}")
        lines = [
            f"conv2d plan: {self.algorithm} ({self.layout}, {self.dtype})",
            f"  input  N={g.n} C={g.c} H={g.h} W={g.w} -> output O={g.o} P={g.p} Q={g.q}",
            f"  kernel {g.kh}x{g.kw}, stride {g.stride}, dilation {g.dilation}, "
            f"padding (top={pt}, bottom={pb}, left={pl}, right={pr}) {g.padding_mode}, "
            f"groups {g.groups}",
            f"{gemm}, {self.flops / 1e9:.3f} GFLOP",
            f"  chunks {self.chunks} of {self.batch_chunk} image(s) x {self.row_chunk} "
            f"output row(s)",
            f"  workspace {_mib(self.workspace_bytes)} (limit "
            f"{_mib(self.max_workspace_bytes)}), threads {self.threads}",
        ]
        if algorithm.tiled:
            lines.append(f"  tile   {self.register_tile}")
        if self.reason:
            lines.append(textwrap.fill(self.reason, 100, initial_indent="  why    ",
                                       subsequent_indent=" " * 9))
        return "\n".join(lines)


def _no_gradients(plan, *arrays):  # pragma: no cover - guarded by Algorithm.has_gradients
    raise NotImplementedError(f"{plan.algorithm} computes no gradients")


@dataclass(frozen=True)
class Algorithm:
    """One way to compute a convolution, as the dispatcher sees it.

    ``unsupported(problem)`` says why it cannot run a problem (a message
    for the ValueError of a forced ``algorithm=``), or None.
    ``plan(problem)`` builds its plan, ``run(plan, x, w, bias, out, packed)``
    computes ``out`` (``packed``: what ``from_packed(plan, weight)`` takes
    from a PackedWeight, such as indirect_gemm's panels or Winograd's
    transformed weight; None without one), and ``describe(plan)`` is the
    how-clause of explain()'s GEMM line.
    ``grad_input(plan, w, grad_out)`` and ``grad_weight(plan, x, grad_out,
    cols)`` are its gradients, for the algorithms the backward rules pick.
    ``prepare(plan)`` works out once per plan what ``run`` needs beyond the
    arrays (``plan.launch``).
    Arrays are C-contiguous, native-endian and of the plan's dtype; inputs
    are read-only.
    """

    name: str
    plan: Callable[[Problem], Plan]
    run: Callable
    describe: Callable[[Plan], str] = lambda plan: ""
    unsupported: Callable[[Problem], str | None] = lambda problem: None
    tiled: bool = False  # runs on the ISA variant's register tile
    grad_input: Callable = _no_gradients
    grad_weight: Callable = _no_gradients
    prepare: Callable[[Plan], object] = lambda plan: None  # -> Plan.launch
    from_packed: Callable[[Plan, object], object] = lambda plan, packed: None

    @property
    def has_gradients(self) -> bool:
        return self.grad_input is not _no_gradients


REGISTRY: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    """Make ``algorithm`` known to the dispatcher (forced by name; chosen by a rule)."""
    REGISTRY[algorithm.name] = algorithm
    return algorithm


# --------------------------------------------------------------------------
# What the rules and several planners ask of a problem
# --------------------------------------------------------------------------
def is_pointwise(g: Geometry) -> bool:
    return g.kh == g.kw == 1 and g.stride == (1, 1) and g.pads == (0, 0, 0, 0)


def is_depthwise(g: Geometry) -> bool:
    return g.groups == g.c > 1


def tile_for(dtype, isa: str | None = None) -> RegisterTile:
    """The register tile of ``isa`` (default: the variant in use) for ``dtype``."""
    return machine.register_tile(isa or machine.variant(), np.dtype(dtype))


def k_blocks(k: int, kc_max: int) -> int:
    """The K block: at most ``kc_max``, in even blocks rather than a thin remainder."""
    return ceil_div(k, ceil_div(k, kc_max))
