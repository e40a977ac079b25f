"""The register tile as a Numba type, and the micro-kernels generated for it.

A ``machine.RegisterTile`` passed to a kernel is typed as
``RegisterTileType``, whose attributes (``mr``, ``nr``, ``lg``, ``vw``,
``nv``) are compile-time constants.  So one kernel source serves every ISA
variant: each variant is its own specialisation, in memory and in Numba's
disk cache (the type's name, which holds the numbers, is in the key).

The micro-kernels are written in LLVM IR through Numba intrinsics, because
LLVM's vectorisers did not turn the equivalent Python loops into a register
tile (4-14 GFLOP/s from Python loops against 76-97 per core from the
intrinsic, AVX2).  They compute an ``MR x NR`` tile,
``C[i, j] += sum_k A[i, k] * B[k, j]``, with the ``MR * nv`` accumulators in
vector registers of ``vw`` lanes, A broadcast one element at a time:

* ``A`` row ``i`` is at ``a[a0 + i*lda + k]``, read in place (the weight
  itself, or the input through offset tables in ``microkernel_indirect``);
* ``B`` row ``k`` is at ``b[b0 + k*ldb]`` (``ldb = NR`` for packed panels:
  one contiguous stream per panel);
* ``C`` rows are ``ldc`` apart.

The multiply-adds are ``llvm.fmuladd``: fused where the CPU has FMA, a
multiply and an add where it has not (``llvm.fma`` would be a libm call).
"""

import hashlib
import pathlib

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import (
    NativeValue,
    intrinsic,
    models,
    overload_attribute,
    register_model,
    typeof_impl,
    unbox,
)

from ..machine import RegisterTile


def _source_tag() -> str:
    """A digest of every kernel source file, part of the tile type's name.

    Numba's disk cache checks only a kernel's own file, not the helpers
    inlined into it (this module's intrinsics, ``packing``): with the digest
    in the signature, an edited helper can never load a stale kernel.
    """
    digest = hashlib.sha1()
    for path in sorted(pathlib.Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


_SOURCE_TAG = _source_tag()


class RegisterTileType(types.Type):
    def __init__(self, tile: RegisterTile):
        self.tile = tile
        super().__init__(name=f"RegisterTile({tile.isa}, {tile.dtype}, {tile.mr}x{tile.nv}x"
                              f"{tile.vw}, src {_SOURCE_TAG})")


@typeof_impl.register(RegisterTile)
def _typeof_tile(val, c):
    return RegisterTileType(val)


register_model(RegisterTileType)(models.OpaqueModel)  # no run-time data: all in the type


@unbox(RegisterTileType)
def _unbox_tile(typ, obj, c):
    return NativeValue(c.context.get_dummy_value())


def _constant_attribute(name):
    @overload_attribute(RegisterTileType, name, inline="always")
    def _attr(tile):
        value = getattr(tile.tile, name)  # ``tile`` is the RegisterTileType here
        return lambda tile: value


for _name in ("mr", "nr", "lg", "vw", "nv"):
    _constant_attribute(_name)


def numba_type(tile: RegisterTile) -> RegisterTileType:
    return RegisterTileType(tile)


# --------------------------------------------------------------------------
# IR helpers
# --------------------------------------------------------------------------
def _data(context, builder, ty, val, off):
    """Pointer to element ``off`` of a 1-d array argument."""
    return builder.gep(context.make_array(ty)(context, builder, val).data, [off])


def _vec(context, tile: RegisterTile):
    return ir.VectorType(context.get_value_type(numba.from_dtype(np.dtype(tile.dtype))), tile.vw)


def _vector_types(context, tile: RegisterTile):
    """(vector type, pointer to it, element size in bytes) of one register of the tile."""
    vec = _vec(context, tile)
    return vec, vec.as_pointer(), np.dtype(tile.dtype).itemsize


def _fma(builder, vec, tile):
    """``llvm.fmuladd``: one FMA where the CPU has it (every AVX2 and AVX-512 CPU),
    else a multiply and an add; ``llvm.fma`` would call libm's ``fmaf`` per lane."""
    bits = 8 * np.dtype(tile.dtype).itemsize
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                          f"llvm.fmuladd.v{tile.vw}f{bits}")


def _tile_codegen(context, builder, tile, a_rows, a_at, b_row, k_n, c_ptr, c_ld, overwrite=False):
    """LLVM IR of the MR x NR register tile, ``C += A @ B`` (``C = A @ B`` to overwrite).

    ``a_rows``: MR base pointers; ``a_at(row, k)``: pointer to A[i, k] from
    row i's base; ``b_row(k)``: pointer to row k of B.  The accumulators live
    in allocas that LLVM promotes to vector registers.
    """
    vw, nv = tile.vw, tile.nv
    vec, vptr, item = _vector_types(context, tile)
    i64 = ir.IntType(64)
    fma = _fma(builder, vec, tile)
    acc = [[cgutils.alloca_once_value(builder, ir.Constant(vec, None)) for _ in range(nv)]
           for _ in range(tile.mr)]
    splat = ir.Constant(ir.VectorType(ir.IntType(32), vw), [0] * vw)
    with cgutils.for_range(builder, k_n) as loop:
        at = a_at(loop.index)
        brow = b_row(loop.index)
        bv = [builder.load(builder.bitcast(builder.gep(brow, [ir.Constant(i64, j * vw)]), vptr),
                           align=item) for j in range(nv)]
        for i in range(tile.mr):
            av = builder.insert_element(ir.Constant(vec, ir.Undefined),
                                        builder.load(at(a_rows[i])),
                                        ir.Constant(ir.IntType(32), 0))
            av = builder.shuffle_vector(av, ir.Constant(vec, ir.Undefined), splat)
            for j in range(nv):
                builder.store(builder.call(fma, [av, bv[j], builder.load(acc[i][j])]),
                              acc[i][j])
    for i in range(tile.mr):
        crow = builder.gep(c_ptr, [builder.mul(c_ld, ir.Constant(i64, i))])
        for j in range(nv):
            p = builder.bitcast(builder.gep(crow, [ir.Constant(i64, j * vw)]), vptr)
            v = builder.load(acc[i][j])
            if not overwrite:
                v = builder.fadd(builder.load(p, align=item), v)
            builder.store(v, p, align=item)


def _microkernel_codegen(overwrite: bool):
    def codegen(context, builder, sig, args):
        _, k_n, a_arr, a_off, a_ld, b_arr, b_off, b_ld, c_arr, c_off, c_ld = args
        tile = sig.args[0].tile
        i64 = ir.IntType(64)
        pa = _data(context, builder, sig.args[2], a_arr, a_off)
        pb = _data(context, builder, sig.args[5], b_arr, b_off)
        rows = [builder.gep(pa, [builder.mul(a_ld, ir.Constant(i64, i))]) for i in range(tile.mr)]
        _tile_codegen(context, builder, tile, rows,
                      lambda k: (lambda row: builder.gep(row, [k])),
                      lambda k: builder.gep(pb, [builder.mul(k, b_ld)]), k_n,
                      _data(context, builder, sig.args[8], c_arr, c_off), c_ld, overwrite)
        return context.get_dummy_value()

    return codegen


# --------------------------------------------------------------------------
# The intrinsics; every one takes the register tile first
# --------------------------------------------------------------------------
@intrinsic
def microkernel(typingctx, tile, kc, a, a0, lda, b, b0, ldb, c, c0, ldc):
    """C[c0 + i*ldc + j] += sum_k a[a0 + i*lda + k] * b[b0 + k*ldb + j], i < MR, j < NR."""
    return types.void(tile, kc, a, a0, lda, b, b0, ldb, c, c0, ldc), _microkernel_codegen(False)


@intrinsic
def microkernel_store(typingctx, tile, kc, a, a0, lda, b, b0, ldb, c, c0, ldc):
    """C[c0 + i*ldc + j] = sum_k a[a0 + i*lda + k] * b[b0 + k*ldb + j], i < MR, j < NR.

    ``microkernel`` for a GEMM's first K block: C is written, not read, so
    the output needs no zeroing pass first and each tile of C is stored
    once (``pointwise_gemm`` on ResNet-50's 1x1 layers at batch 1, AVX2:
    0.81-0.90x the time where K = 64, level where K >= 512).
    """
    return types.void(tile, kc, a, a0, lda, b, b0, ldb, c, c0, ldc), _microkernel_codegen(True)


@intrinsic
def microkernel_indirect(typingctx, tile, kc, a, rows, r0, koff, k0, b, b0, c, c0, ldc):
    """C[c0 + i*ldc + j] += sum_k a[rows[r0 + i] + koff[k0 + k]] * b[b0 + k*NR + j].

    A is read in place through two offset tables: ``rows`` (where output
    pixel i's receptive field starts) and ``koff`` (where tap k of it lies),
    so a convolution needs no column matrix.  B is a packed panel.
    """

    def codegen(context, builder, sig, args):
        _, k_n, a_arr, r_arr, r_off, t_arr, t_off, b_arr, b_off, c_arr, c_off, c_ld = args
        t = sig.args[0].tile
        i64 = ir.IntType(64)
        pa = _data(context, builder, sig.args[2], a_arr, ir.Constant(i64, 0))
        pr = _data(context, builder, sig.args[3], r_arr, r_off)
        pt = _data(context, builder, sig.args[5], t_arr, t_off)
        pb = _data(context, builder, sig.args[7], b_arr, b_off)
        bases = [builder.gep(pa, [builder.load(builder.gep(pr, [ir.Constant(i64, i)]))])
                 for i in range(t.mr)]

        def a_at(k):
            ko = builder.load(builder.gep(pt, [k]))
            return lambda row: builder.gep(row, [ko])

        _tile_codegen(context, builder, t, bases, a_at,
                      lambda k: builder.gep(pb, [builder.mul(k, ir.Constant(i64, t.nr))]), k_n,
                      _data(context, builder, sig.args[9], c_arr, c_off), c_ld)
        return context.get_dummy_value()

    return types.void(tile, kc, a, rows, r0, koff, k0, b, b0, c, c0, ldc), codegen


@intrinsic
def dot_rows(typingctx, tile, kc, a, a0, lda, b, b0, c, c0, ldc):
    """c[c0 + i*ldc] += sum_k a[a0 + i*lda + k] * b[b0 + k], i < MR: one column of a tile.

    For a GEMM's last few columns (fewer than half a panel), where a whole
    register tile would be mostly padding: MR dot products along K, VW
    lanes at a time (A's rows and B's column both contiguous in K), then one
    horizontal sum each.  The ``kc % VW`` taps left over are summed one by one.
    """

    def codegen(context, builder, sig, args):
        _, k_n, a_arr, a_off, a_ld, b_arr, b_off, c_arr, c_off, c_ld = args
        t = sig.args[0].tile
        vw = t.vw
        vec, vptr, item = _vector_types(context, t)
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        fma = _fma(builder, vec, t)
        pa = _data(context, builder, sig.args[2], a_arr, a_off)
        pb = _data(context, builder, sig.args[5], b_arr, b_off)
        rows = [builder.gep(pa, [builder.mul(a_ld, ir.Constant(i64, i))]) for i in range(t.mr)]
        acc = [cgutils.alloca_once_value(builder, ir.Constant(vec, None)) for _ in range(t.mr)]
        whole = builder.udiv(k_n, ir.Constant(i64, vw))
        with cgutils.for_range(builder, whole) as loop:
            k = builder.mul(loop.index, ir.Constant(i64, vw))
            bv = builder.load(builder.bitcast(builder.gep(pb, [k]), vptr), align=item)
            for i in range(t.mr):
                av = builder.load(builder.bitcast(builder.gep(rows[i], [k]), vptr), align=item)
                builder.store(builder.call(fma, [av, bv, builder.load(acc[i])]), acc[i])
        sums = []
        for i in range(t.mr):
            v = builder.load(acc[i])
            s = builder.extract_element(v, ir.Constant(i32, 0))
            for lane in range(1, vw):
                s = builder.fadd(s, builder.extract_element(v, ir.Constant(i32, lane)))
            sums.append(cgutils.alloca_once_value(builder, s))
        done = builder.mul(whole, ir.Constant(i64, vw))
        with cgutils.for_range(builder, builder.sub(k_n, done)) as loop:
            k = builder.add(done, loop.index)
            bk = builder.load(builder.gep(pb, [k]))
            for i in range(t.mr):
                prod = builder.fmul(builder.load(builder.gep(rows[i], [k])), bk)
                builder.store(builder.fadd(builder.load(sums[i]), prod), sums[i])
        pc = _data(context, builder, sig.args[7], c_arr, c_off)
        for i in range(t.mr):
            p = builder.gep(pc, [builder.mul(c_ld, ir.Constant(i64, i))])
            builder.store(builder.fadd(builder.load(p), builder.load(sums[i])), p)
        return context.get_dummy_value()

    return types.void(tile, kc, a, a0, lda, b, b0, c, c0, ldc), codegen


# The shuffle network of ``transpose_block``: per stage, output i is
# ``shuffle(v[a], v[b], mask)`` for row i = (a, b, mask); mask values >= VW
# pick lanes of v[b].  8 and 4 lanes use the networks tuned for AVX2's
# shuffles (rows interleaved one lane at a time, then two, then 128-bit
# halves: unpcklps/unpckhps, shufps, vperm2f128); any other width (AVX-512's
# 16 float32 lanes, where every two-source shuffle is one vpermt2ps) the
# butterfly of ``_butterfly``.  ``tests/test_indirect.py`` checks each one.
_TUNED = {
    8: [
        [(2 * (i // 2), 2 * (i // 2) + 1,
          [0, 8, 1, 9, 4, 12, 5, 13] if i % 2 == 0 else [2, 10, 3, 11, 6, 14, 7, 15])
         for i in range(8)],
        [(4 * (i // 4) + (i % 4) // 2, 4 * (i // 4) + (i % 4) // 2 + 2,
          [0, 1, 8, 9, 4, 5, 12, 13] if i % 2 == 0 else [2, 3, 10, 11, 6, 7, 14, 15])
         for i in range(8)],
        [(i % 4, i % 4 + 4,
          [0, 1, 2, 3, 8, 9, 10, 11] if i < 4 else [4, 5, 6, 7, 12, 13, 14, 15])
         for i in range(8)],
    ],
    4: [
        [(2 * (i // 2), 2 * (i // 2) + 1, [0, 4, 2, 6] if i % 2 == 0 else [1, 5, 3, 7])
         for i in range(4)],
        [(i % 2, i % 2 + 2, [0, 1, 4, 5] if i < 2 else [2, 3, 6, 7]) for i in range(4)],
    ],
}


def _butterfly(vw: int) -> list:
    """log2(vw) stages; stage d swaps the off-diagonal d x d blocks of each 2d x 2d block.

    Element (row r, lane l) moves to (r ^ d, l ^ d) where bit d of r and l
    differ, so after every d the element at (r, l) stands at (l, r).
    """
    stages = []
    d = 1
    while d < vw:
        stage = []
        for i in range(vw):
            lo, hi = (i, i + d) if i & d == 0 else (i - d, i)
            if i & d == 0:  # keep lanes without bit d, take hi's lanes shifted down
                mask = [lane if lane & d == 0 else vw + lane - d for lane in range(vw)]
            else:
                mask = [lane + d if lane & d == 0 else vw + lane for lane in range(vw)]
            stage.append((lo, hi, mask))
        stages.append(stage)
        d *= 2
    return stages


def transpose_stages(vw: int) -> list:
    return _TUNED[vw] if vw in _TUNED else _butterfly(vw)


def transpose_network(vw: int, rows: list) -> list:
    """Run ``transpose_stages(vw)`` on ``rows`` with ``shuffle(a, b, mask)`` = lanes of a + b.

    Python lists here (what the test checks); LLVM vectors in ``transpose_block``.
    """
    for stage in transpose_stages(vw):
        rows = [[(rows[a] + rows[b])[m] for m in mask] for a, b, mask in stage]
    return rows


# Output pixels per group of depthwise_pixels: each tap's weight vector is
# loaded once for them all.
DW_PIXELS = 4


@intrinsic
def depthwise_pixels(typingctx, tile, npix, ntaps, x, x0, step, toff, w, c, c0):
    """c[c0 + i*VW + l] += sum_t w[t*VW + l] * x[x0 + i*step + toff[t] + l], i < npix, l < VW.

    The channel-blocked depthwise kernel's inner loop: VW channels in the
    lanes of one register, ``toff`` the taps' offsets in the interleaved
    input.  Groups of ``DW_PIXELS`` output pixels keep their sums in
    registers over every tap, so each tap costs one weight load for the
    group and one input load per pixel (not a load and a store of the sum).
    """

    def codegen(context, builder, sig, args):
        _, n_pix, n_taps, x_arr, x_off, step_, t_arr, w_arr, c_arr, c_off = args
        t = sig.args[0].tile
        vw = t.vw
        vec, vptr, item = _vector_types(context, t)
        i64 = ir.IntType(64)
        fma = _fma(builder, vec, t)
        px = _data(context, builder, sig.args[3], x_arr, x_off)
        pt = _data(context, builder, sig.args[6], t_arr, ir.Constant(i64, 0))
        pw = _data(context, builder, sig.args[7], w_arr, ir.Constant(i64, 0))
        pc = _data(context, builder, sig.args[8], c_arr, c_off)
        acc = [cgutils.alloca_once_value(builder, ir.Constant(vec, None))
               for _ in range(DW_PIXELS)]

        def group(first, count):
            """Pixels first .. first+count-1: sums in registers over every tap."""
            outs = [builder.bitcast(builder.gep(pc, [builder.mul(
                builder.add(first, ir.Constant(i64, r)), ir.Constant(i64, vw))]), vptr)
                for r in range(count)]
            bases = [builder.gep(px, [builder.mul(builder.add(first, ir.Constant(i64, r)),
                                                  step_)]) for r in range(count)]
            for r in range(count):
                builder.store(builder.load(outs[r], align=item), acc[r])
            with cgutils.for_range(builder, n_taps) as loop:
                off = builder.load(builder.gep(pt, [loop.index]))
                wv = builder.load(builder.bitcast(builder.gep(pw, [builder.mul(
                    loop.index, ir.Constant(i64, vw))]), vptr), align=item)
                for r in range(count):
                    xv = builder.load(builder.bitcast(builder.gep(bases[r], [off]), vptr),
                                      align=item)
                    builder.store(builder.call(fma, [wv, xv, builder.load(acc[r])]), acc[r])
            for r in range(count):
                builder.store(builder.load(acc[r]), outs[r], align=item)

        whole = builder.udiv(n_pix, ir.Constant(i64, DW_PIXELS))
        with cgutils.for_range(builder, whole) as loop:
            group(builder.mul(loop.index, ir.Constant(i64, DW_PIXELS)), DW_PIXELS)
        done = builder.mul(whole, ir.Constant(i64, DW_PIXELS))
        with cgutils.for_range(builder, builder.sub(n_pix, done)) as loop:
            group(builder.add(done, loop.index), 1)
        return context.get_dummy_value()

    return types.void(tile, npix, ntaps, x, x0, step, toff, w, c, c0), codegen


@intrinsic
def transpose_block(typingctx, tile, src, s0, ld_s, dst, d0, ld_d):
    """dst[d0 + k*ld_d + j] = src[s0 + j*ld_s + k] for j, k < VW: one block, in registers.

    VW loads, the shuffles of ``transpose_stages``, VW stores, instead of
    VW*VW scalar moves.
    """

    def codegen(context, builder, sig, args):
        _, s_arr, s_off, s_ld, d_arr, d_off, d_ld = args
        t = sig.args[0].tile
        vw = t.vw
        _, vptr, item = _vector_types(context, t)
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        ps = _data(context, builder, sig.args[1], s_arr, s_off)
        pd = _data(context, builder, sig.args[4], d_arr, d_off)
        rows = [builder.load(builder.bitcast(builder.gep(ps, [builder.mul(s_ld, ir.Constant(
            i64, j))]), vptr), align=item) for j in range(vw)]
        for stage in transpose_stages(vw):
            rows = [builder.shuffle_vector(rows[a], rows[b], ir.Constant(ir.VectorType(i32, vw),
                                                                           mask))
                    for a, b, mask in stage]
        for k in range(vw):
            p = builder.bitcast(builder.gep(pd, [builder.mul(d_ld, ir.Constant(i64, k))]), vptr)
            builder.store(rows[k], p, align=item)
        return context.get_dummy_value()

    return types.void(tile, src, s0, ld_s, dst, d0, ld_d), codegen


@intrinsic
def copy_line(typingctx, tile, src, s0, dst, d0):
    """dst[d0 : d0 + NR] = src[s0 : s0 + NR]: one panel row, as ``nv`` vector moves.

    The equivalent loop cannot be vectorised without a run-time check that
    the arrays do not overlap, which cost more than the copy for one row.
    """

    def codegen(context, builder, sig, args):
        _, s_arr, s_off, d_arr, d_off = args
        t = sig.args[0].tile
        _, vptr, item = _vector_types(context, t)
        ps = _data(context, builder, sig.args[1], s_arr, s_off)
        pd = _data(context, builder, sig.args[3], d_arr, d_off)
        steps = [ir.Constant(ir.IntType(64), j) for j in range(0, t.nr, t.vw)]
        parts = [builder.load(builder.bitcast(builder.gep(ps, [j]), vptr), align=item)
                 for j in steps]  # every load first: the two rows may overlap in principle
        for j, v in zip(steps, parts, strict=True):
            builder.store(v, builder.bitcast(builder.gep(pd, [j]), vptr), align=item)
        return context.get_dummy_value()

    return types.void(tile, src, s0, dst, d0), codegen


if numba.config.DISABLE_JIT:  # an intrinsic cannot run as Python: the same sums, slowly
    def microkernel(tile, kc, a, a0, lda, b, b0, ldb, c, c0, ldc):  # noqa: F811
        for i in range(tile.mr):
            for j in range(tile.nr):
                total = 0.0
                for k in range(kc):
                    total += a[a0 + i * lda + k] * b[b0 + k * ldb + j]
                c[c0 + i * ldc + j] += total

    def microkernel_store(tile, kc, a, a0, lda, b, b0, ldb, c, c0, ldc):  # noqa: F811
        for i in range(tile.mr):
            for j in range(tile.nr):
                c[c0 + i * ldc + j] = 0
        microkernel(tile, kc, a, a0, lda, b, b0, ldb, c, c0, ldc)

    def microkernel_indirect(tile, kc, a, rows, r0, koff, k0, b, b0, c, c0, ldc):  # noqa: F811
        for i in range(tile.mr):
            for j in range(tile.nr):
                total = 0.0
                for k in range(kc):
                    total += a[rows[r0 + i] + koff[k0 + k]] * b[b0 + k * tile.nr + j]
                c[c0 + i * ldc + j] += total

    def dot_rows(tile, kc, a, a0, lda, b, b0, c, c0, ldc):  # noqa: F811
        for i in range(tile.mr):
            c[c0 + i * ldc] += np.dot(a[a0 + i * lda : a0 + i * lda + kc], b[b0 : b0 + kc])

    def depthwise_pixels(tile, npix, ntaps, x, x0, step, toff, w, c, c0):  # noqa: F811
        for i in range(npix):
            for t in range(ntaps):
                for lane in range(tile.vw):
                    c[c0 + i * tile.vw + lane] += (w[t * tile.vw + lane]
                                                   * x[x0 + i * step + toff[t] + lane])

    def transpose_block(tile, src, s0, ld_s, dst, d0, ld_d):  # noqa: F811
        for j in range(tile.vw):
            for k in range(tile.vw):
                dst[d0 + k * ld_d + j] = src[s0 + j * ld_s + k]

    def copy_line(tile, src, s0, dst, d0):  # noqa: F811
        dst[d0 : d0 + tile.nr] = src[s0 : s0 + tile.nr]
