"""What the two BLAS algorithms share (gemm_1x1 and im2col_gemm): chunks and GEMM views.

Both run NumPy's BLAS-backed matmul straight into views of the output.
Their column buffer (im2col_gemm) or batching copy (gemm_1x1) is chunked
over images and output rows to stay under ``config.max_workspace_bytes``.
"""

from __future__ import annotations

import numpy as np

from .. import _activation, config
from .._args import Geometry, Layout, ceil_div
from .._execute import view
from .._tables import IndexTables
from ._base import Plan, Problem, is_pointwise


def gemm_batched(g: Geometry, layout: Layout) -> bool:
    """Whether NCHW runs one GEMM over a chunk of images instead of one per image.

    Channels-last layouts always have the batch in M.  Thin per-image GEMMs
    run far below BLAS speed; a 1x1 layer batches only below an eighth of
    ``config.gemm_batch_below`` (docs/design/decisions.md, "Batched GEMMs
    for small NCHW images").
    """
    below = config.gemm_batch_below // 8 if is_pointwise(g) else config.gemm_batch_below
    return not layout.channels_last and g.n > 1 and g.p * g.q < below


def chunking(g: Geometry, row_bytes: int, limit: int) -> tuple[int, int]:
    """(images, output rows) per chunk so the workspace stays under ``limit``.

    ``row_bytes`` is the scratch one output row of one image needs.  Whole
    images are batched while they fit; an image too big on its own is split
    into bands of output rows.  The smallest chunk is one output row.
    """
    n = max(g.n, 1)  # an empty batch still gets a well-formed plan
    image_bytes = row_bytes * g.p
    if image_bytes <= limit:
        per = max(1, min(n, limit // image_bytes))
        return ceil_div(n, ceil_div(n, per)), g.p  # balanced chunks
    rows = max(1, limit // row_bytes)
    return 1, ceil_div(g.p, ceil_div(g.p, rows))


def plan_gemm(problem: Problem, algorithm: str, columns: bool) -> Plan:
    """The chunked plan of a BLAS algorithm; ``columns``: it gathers a column matrix."""
    g, layout = problem.geometry, problem.layout
    item = problem.dtype.itemsize
    batched = gemm_batched(g, layout)
    kk = g.kh * g.kw

    def scratch_per_row(batched: bool) -> int:
        if not columns:
            # Batched NCHW needs x as (C, images*H*W) and the output before the copy.
            return (g.c + g.o) * g.q * item if batched else 0
        return (g.c * kk + (g.o if batched else 0)) * g.q * item

    def chunk_sizes(batched: bool) -> tuple[int, int, int]:
        row_bytes = scratch_per_row(batched)
        bc, rc = chunking(g, row_bytes, problem.limit) if row_bytes else (max(g.n, 1), g.p)
        return row_bytes, bc, rc

    row_bytes, bc, rc = chunk_sizes(batched)
    if batched and rc < g.p:  # batching needs whole images; a band does not fit
        batched = False
        row_bytes, bc, rc = chunk_sizes(False)
    nchunks = ceil_div(g.n, bc) * ceil_div(g.p, rc) if g.n else 0
    k = g.cg * kk
    if layout.channels_last:
        mnk, calls = (bc * rc * g.q, g.og, k), g.groups * nchunks
    elif batched:
        mnk, calls = (g.og, bc * rc * g.q, k), g.groups * nchunks
    else:
        mnk, calls = (g.og, rc * g.q, k), g.n * g.groups * ceil_div(g.p, rc)
    return problem.plan(algorithm, gemm_m=mnk[0], gemm_n=mnk[1], gemm_k=mnk[2],
                        gemm_calls=calls, gemm_batched=batched, batch_chunk=bc, row_chunk=rc,
                        workspace_bytes=bc * rc * row_bytes if g.n else 0,
                        tables=IndexTables.build(g) if columns else None)


def describe_gemm(plan: Plan) -> str:
    batched = plan.gemm_batched or plan.layout.channels_last
    return "one GEMM per chunk" if batched else "one GEMM per image"


def weight_matrices(plan: Plan, w: np.ndarray) -> np.ndarray:
    """The weight as (groups, ...) matrices for the GEMMs, as a view.

    Channels first: OIHW -> (G, Og, Cg*KH*KW), the left operand of W @ cols.
    Channels last: HWIO -> (G, KH*KW*Cg, Og), the right operand of cols @ W.
    """
    g = plan.geometry
    kk = g.kh * g.kw
    if plan.layout.channels_last:
        return view(w, (kk * g.cg, g.groups, g.og)).transpose(1, 0, 2)
    return view(w, (g.groups, g.og, g.cg * kk))


def unbatch(plan: Plan, tmp: np.ndarray, out: np.ndarray, n0: int, nb: int, bias,
            act: int = 0) -> None:
    """Copy a batched GEMM's (G, Og, nb*L) result into out[n0:n0+nb] (NCHW), adding bias
    and applying the activation ``act``."""
    g = plan.geometry
    length = g.p * g.q
    src = tmp.reshape(g.groups, g.og, nb, length).transpose(2, 0, 1, 3)
    dst = view(out[n0 : n0 + nb], (nb, g.groups, g.og, length))
    if bias is None:
        np.copyto(dst, src)
    else:
        np.add(src, bias.reshape(g.groups, g.og, 1), out=dst)
    _activation.apply(dst, act)


def chunks(plan: Plan):
    """(n0, nb, p0, pb) of each chunk: images n0:n0+nb, output rows p0:p0+pb."""
    g = plan.geometry
    for n0 in range(0, g.n, plan.batch_chunk):
        nb = min(plan.batch_chunk, g.n - n0)
        for p0 in range(0, g.p, plan.row_chunk):
            yield n0, nb, p0, min(plan.row_chunk, g.p - p0)


def channel_major(dst: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Copy NCHW images ``src`` (nb, C, ...) into ``dst`` as (C, nb, H*W).

    The batched NCHW GEMMs need the batch next to the spatial axis; this copy
    is activation-sized, KH*KW times smaller than the columns.
    """
    nb, c = src.shape[:2]
    out = dst.reshape(c, nb, -1)
    np.copyto(out, src.reshape(nb, c, -1).transpose(1, 0, 2))
    return out


class Accumulator:
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
