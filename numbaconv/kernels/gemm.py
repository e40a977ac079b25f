"""A register-tiled GEMM micro-kernel, and the packed NCHW convolution built on it.

Why not always NumPy's BLAS: an NCHW convolution's GEMM is thin (M = output
channels, often 64-256) and OpenBLAS runs it at 53-69 GFLOP/s per core here,
after an im2col that writes the whole column matrix to memory and reads it
back.  ONNX Runtime (MLAS) instead packs a small tile of the column matrix
per thread, into cache, and multiplies it there; that is what
``conv_nchw`` does (algorithm ``"packed_gemm"``).  One Numba parallel loop
runs both the packing and the multiply: one thread pool, no hand-off.

The micro-kernel is written in LLVM IR through a Numba intrinsic, because
LLVM's vectorisers did not turn the equivalent Python loops into a register
tile (measured: 4-14 GFLOP/s from Python loops against 76-97 GFLOP/s per
core from the intrinsic, on packed panels in cache).  It computes an
``MR x NR`` tile, ``C[i, j] += sum_k A[i, k] * B[k, j]``, keeping the
``MR * NR / VW`` accumulators in vector registers (12 of AVX2's 16):

* ``A`` is read in place, row ``i`` at ``a[a0 + i*lda + k]`` (the weight
  matrix itself, so weights are never repacked);
* ``B`` row ``k`` is at ``b[b0 + k*ldb]`` (``ldb = NR`` for the packed
  panels that ``_pack_nchw`` writes: one contiguous stream per panel; a
  strided B measured 10-25% slower);
* ``C`` rows are ``ldc`` apart (the output itself, or a small tile).

``NR`` is one 64-byte cache line: 16 float32 or 8 float64.  On a CPU
without FMA, LLVM lowers ``llvm.fma`` to a correct but slow library call.
"""

import functools

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

MR = 6  # rows of the register tile (with NR this uses 12 vector registers)
LINE = 64  # bytes of one packed-panel row: NR = LINE // itemsize


def _vector_width(dtype) -> int:
    return 32 // np.dtype(str(dtype)).itemsize  # one 256-bit AVX register


def _tile_codegen(context, builder, dtype, a_rows, a_at, b_row, k_n, c_ptr, c_ld,
                  overwrite=False):
    """LLVM IR of the MR x NR register tile, ``C += A @ B`` (``C = A @ B`` to overwrite).

    ``a_rows``: MR base pointers; ``a_at(row, k)``: pointer to A[i, k] from
    row i's base; ``b_row(k)``: pointer to row k of B.  The accumulators live
    in allocas that LLVM promotes to vector registers.
    """
    vw = _vector_width(dtype)
    item = np.dtype(str(dtype)).itemsize
    nv = LINE // (vw * item)  # vectors per tile row
    vec = ir.VectorType(context.get_value_type(dtype), vw)
    vptr = vec.as_pointer()
    i64 = ir.IntType(64)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                         f"llvm.fma.v{vw}f{8 * item}")
    acc = [[cgutils.alloca_once_value(builder, ir.Constant(vec, None)) for _ in range(nv)]
           for _ in range(MR)]
    splat = ir.Constant(ir.VectorType(ir.IntType(32), vw), [0] * vw)
    with cgutils.for_range(builder, k_n) as loop:
        at = a_at(loop.index)
        brow = b_row(loop.index)
        bv = [builder.load(builder.bitcast(builder.gep(brow, [ir.Constant(i64, j * vw)]), vptr),
                           align=item) for j in range(nv)]
        for i in range(MR):
            av = builder.insert_element(ir.Constant(vec, ir.Undefined),
                                        builder.load(at(a_rows[i])),
                                        ir.Constant(ir.IntType(32), 0))
            av = builder.shuffle_vector(av, ir.Constant(vec, ir.Undefined), splat)
            for j in range(nv):
                builder.store(builder.call(fma, [av, bv[j], builder.load(acc[i][j])]),
                              acc[i][j])
    for i in range(MR):
        crow = builder.gep(c_ptr, [builder.mul(c_ld, ir.Constant(i64, i))])
        for j in range(nv):
            p = builder.bitcast(builder.gep(crow, [ir.Constant(i64, j * vw)]), vptr)
            v = builder.load(acc[i][j])
            if not overwrite:
                v = builder.fadd(builder.load(p, align=item), v)
            builder.store(v, p, align=item)


def _data(context, builder, ty, val, off):
    """Pointer to element ``off`` of a 1-d array argument."""
    return builder.gep(context.make_array(ty)(context, builder, val).data, [off])


def _microkernel_codegen(overwrite: bool):
    def codegen(context, builder, sig, args):
        k_n, a_arr, a_off, a_ld, b_arr, b_off, b_ld, c_arr, c_off, c_ld = args
        i64 = ir.IntType(64)
        pa = _data(context, builder, sig.args[1], a_arr, a_off)
        pb = _data(context, builder, sig.args[4], b_arr, b_off)
        rows = [builder.gep(pa, [builder.mul(a_ld, ir.Constant(i64, i))]) for i in range(MR)]
        _tile_codegen(context, builder, sig.args[1].dtype, rows,
                      lambda k: (lambda row: builder.gep(row, [k])),
                      lambda k: builder.gep(pb, [builder.mul(k, b_ld)]), k_n,
                      _data(context, builder, sig.args[7], c_arr, c_off), c_ld, overwrite)
        return context.get_dummy_value()

    return codegen


@intrinsic
def microkernel(typingctx, kc, a, a0, lda, b, b0, ldb, c, c0, ldc):
    """C[c0 + i*ldc + j] += sum_k a[a0 + i*lda + k] * b[b0 + k*ldb + j], i < MR, j < NR."""
    return types.void(kc, a, a0, lda, b, b0, ldb, c, c0, ldc), _microkernel_codegen(False)


@intrinsic
def microkernel_store(typingctx, kc, a, a0, lda, b, b0, ldb, c, c0, ldc):
    """C[c0 + i*ldc + j] = sum_k a[a0 + i*lda + k] * b[b0 + k*ldb + j], i < MR, j < NR.

    ``microkernel`` for a GEMM's first K block: C is written, not read, so
    the output needs no zeroing pass first and each tile of C is stored
    once (``pointwise_gemm`` on ResNet-50's 1x1 layers at batch 1: 0.81-0.90x
    the time where K = 64 is one short block, level where K >= 512).
    """
    return types.void(kc, a, a0, lda, b, b0, ldb, c, c0, ldc), _microkernel_codegen(True)


@intrinsic
def microkernel_indirect(typingctx, kc, a, rows, r0, koff, k0, b, b0, c, c0, ldc):
    """C[c0 + i*ldc + j] += sum_k a[rows[r0 + i] + koff[k0 + k]] * b[b0 + k*NR + j].

    A is read in place through two offset tables: ``rows`` (where output
    pixel i's receptive field starts) and ``koff`` (where tap k of it lies),
    so a convolution needs no column matrix.  B is a packed panel.
    """

    def codegen(context, builder, sig, args):
        k_n, a_arr, r_arr, r_off, t_arr, t_off, b_arr, b_off, c_arr, c_off, c_ld = args
        i64 = ir.IntType(64)
        nr = LINE // np.dtype(str(a.dtype)).itemsize
        pa = _data(context, builder, sig.args[1], a_arr, ir.Constant(i64, 0))
        pr = _data(context, builder, sig.args[2], r_arr, r_off)
        pt = _data(context, builder, sig.args[4], t_arr, t_off)
        pb = _data(context, builder, sig.args[6], b_arr, b_off)
        bases = [builder.gep(pa, [builder.load(builder.gep(pr, [ir.Constant(i64, i)]))])
                 for i in range(MR)]

        def a_at(k):
            ko = builder.load(builder.gep(pt, [k]))
            return lambda row: builder.gep(row, [ko])

        _tile_codegen(context, builder, a.dtype, bases, a_at,
                      lambda k: builder.gep(pb, [builder.mul(k, ir.Constant(i64, nr))]), k_n,
                      _data(context, builder, sig.args[8], c_arr, c_off), c_ld)
        return context.get_dummy_value()

    return types.void(kc, a, rows, r0, koff, k0, b, b0, c, c0, ldc), codegen


@intrinsic
def dot_rows(typingctx, kc, a, a0, lda, b, b0, c, c0, ldc):
    """c[c0 + i*ldc] += sum_k a[a0 + i*lda + k] * b[b0 + k], i < MR: one column of a tile.

    For a GEMM's last few columns (fewer than half a panel), where a whole
    ``MR x NR`` register tile would be mostly padding: MR dot products along
    K, VW lanes at a time (A's rows and B's column both contiguous in K),
    then one horizontal sum each.  The ``kc % VW`` taps left over are summed
    one by one.
    """

    def codegen(context, builder, sig, args):
        k_n, a_arr, a_off, a_ld, b_arr, b_off, c_arr, c_off, c_ld = args
        dtype = sig.args[1].dtype
        vw = _vector_width(dtype)
        item = np.dtype(str(dtype)).itemsize
        scalar = context.get_value_type(dtype)
        vec = ir.VectorType(scalar, vw)
        vptr = vec.as_pointer()
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                             f"llvm.fma.v{vw}f{8 * item}")
        pa = _data(context, builder, sig.args[1], a_arr, a_off)
        pb = _data(context, builder, sig.args[4], b_arr, b_off)
        rows = [builder.gep(pa, [builder.mul(a_ld, ir.Constant(i64, i))]) for i in range(MR)]
        acc = [cgutils.alloca_once_value(builder, ir.Constant(vec, None)) for _ in range(MR)]
        whole = builder.udiv(k_n, ir.Constant(i64, vw))
        with cgutils.for_range(builder, whole) as loop:
            k = builder.mul(loop.index, ir.Constant(i64, vw))
            bv = builder.load(builder.bitcast(builder.gep(pb, [k]), vptr), align=item)
            for i in range(MR):
                av = builder.load(builder.bitcast(builder.gep(rows[i], [k]), vptr), align=item)
                builder.store(builder.call(fma, [av, bv, builder.load(acc[i])]), acc[i])
        sums = []
        for i in range(MR):
            v = builder.load(acc[i])
            s = builder.extract_element(v, ir.Constant(i32, 0))
            for lane in range(1, vw):
                s = builder.fadd(s, builder.extract_element(v, ir.Constant(i32, lane)))
            sums.append(cgutils.alloca_once_value(builder, s))
        done = builder.mul(whole, ir.Constant(i64, vw))
        with cgutils.for_range(builder, builder.sub(k_n, done)) as loop:
            k = builder.add(done, loop.index)
            bk = builder.load(builder.gep(pb, [k]))
            for i in range(MR):
                prod = builder.fmul(builder.load(builder.gep(rows[i], [k])), bk)
                builder.store(builder.fadd(builder.load(sums[i]), prod), sums[i])
        pc = _data(context, builder, sig.args[6], c_arr, c_off)
        for i in range(MR):
            p = builder.gep(pc, [builder.mul(c_ld, ir.Constant(i64, i))])
            builder.store(builder.fadd(builder.load(p), builder.load(sums[i])), p)
        return context.get_dummy_value()

    return types.void(kc, a, a0, lda, b, b0, c, c0, ldc), codegen


# The shuffle network of ``transpose_block``: per stage, output i is
# ``shuffle(v[a], v[b], mask)`` for row i = (a, b, mask); mask values >= VW
# pick lanes of v[b].  8 lanes (float32): rows interleaved one lane at a
# time, then two, then 128-bit halves (unpcklps/unpckhps, shufps,
# vperm2f128); 4 lanes (float64): two lanes at a time, then halves.
# ``tests/test_indirect.py`` checks that each network transposes.
_TRANSPOSE = {
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


def transpose_network(vw: int, rows: list) -> list:
    """Run ``_TRANSPOSE[vw]`` on ``rows`` with ``shuffle(a, b, mask)`` = lanes of a + b.

    Python lists here (what the test checks); LLVM vectors in ``transpose_block``.
    """
    for stage in _TRANSPOSE[vw]:
        rows = [[(rows[a] + rows[b])[m] for m in mask] for a, b, mask in stage]
    return rows


@intrinsic
def transpose_block(typingctx, src, s0, ld_s, dst, d0, ld_d):
    """dst[d0 + k*ld_d + j] = src[s0 + j*ld_s + k] for j, k < VW: one block, in registers.

    VW is one 256-bit register's lanes (8 float32, 4 float64): VW loads,
    the shuffles of ``_TRANSPOSE``, VW stores, instead of VW*VW scalar moves.
    """

    def codegen(context, builder, sig, args):
        s_arr, s_off, s_ld, d_arr, d_off, d_ld = args
        vw = _vector_width(src.dtype)
        item = np.dtype(str(src.dtype)).itemsize
        vec = ir.VectorType(context.get_value_type(src.dtype), vw)
        vptr = vec.as_pointer()
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        ps = _data(context, builder, sig.args[0], s_arr, s_off)
        pd = _data(context, builder, sig.args[3], d_arr, d_off)
        rows = [builder.load(builder.bitcast(builder.gep(ps, [builder.mul(s_ld, ir.Constant(
            i64, j))]), vptr), align=item) for j in range(vw)]
        for stage in _TRANSPOSE[vw]:
            rows = [builder.shuffle_vector(rows[a], rows[b], ir.Constant(ir.VectorType(i32, vw),
                                                                           mask))
                    for a, b, mask in stage]
        for k in range(vw):
            p = builder.bitcast(builder.gep(pd, [builder.mul(d_ld, ir.Constant(i64, k))]), vptr)
            builder.store(rows[k], p, align=item)
        return context.get_dummy_value()

    return types.void(src, s0, ld_s, dst, d0, ld_d), codegen


@intrinsic
def copy_line(typingctx, src, s0, dst, d0):
    """dst[d0 : d0 + NR] = src[s0 : s0 + NR]: one 64-byte panel row, as two vector moves.

    The equivalent loop cannot be vectorised without a run-time check that
    the arrays do not overlap, which cost more than the copy for one row.
    """

    def codegen(context, builder, sig, args):
        s_arr, s_off, d_arr, d_off = args
        vw = _vector_width(src.dtype)
        item = np.dtype(str(src.dtype)).itemsize
        vptr = ir.VectorType(context.get_value_type(src.dtype), vw).as_pointer()
        ps = _data(context, builder, sig.args[0], s_arr, s_off)
        pd = _data(context, builder, sig.args[2], d_arr, d_off)
        steps = [ir.Constant(ir.IntType(64), j) for j in range(0, LINE // item, vw)]
        parts = [builder.load(builder.bitcast(builder.gep(ps, [j]), vptr), align=item)
                 for j in steps]  # both loads first: the two rows may overlap in principle
        for j, v in zip(steps, parts, strict=True):
            builder.store(v, builder.bitcast(builder.gep(pd, [j]), vptr), align=item)
        return context.get_dummy_value()

    return types.void(src, s0, dst, d0), codegen


if numba.config.DISABLE_JIT:  # an intrinsic cannot run as Python: the same sums, slowly
    def microkernel(kc, a, a0, lda, b, b0, ldb, c, c0, ldc):  # noqa: F811
        for i in range(MR):
            for j in range(LINE // c.itemsize):
                total = 0.0
                for k in range(kc):
                    total += a[a0 + i * lda + k] * b[b0 + k * ldb + j]
                c[c0 + i * ldc + j] += total

    def microkernel_store(kc, a, a0, lda, b, b0, ldb, c, c0, ldc):  # noqa: F811
        for i in range(MR):
            for j in range(LINE // c.itemsize):
                c[c0 + i * ldc + j] = 0
        microkernel(kc, a, a0, lda, b, b0, ldb, c, c0, ldc)

    def microkernel_indirect(kc, a, rows, r0, koff, k0, b, b0, c, c0, ldc):  # noqa: F811
        nr = LINE // c.itemsize
        for i in range(MR):
            for j in range(nr):
                total = 0.0
                for k in range(kc):
                    total += a[rows[r0 + i] + koff[k0 + k]] * b[b0 + k * nr + j]
                c[c0 + i * ldc + j] += total

    def dot_rows(kc, a, a0, lda, b, b0, c, c0, ldc):  # noqa: F811
        for i in range(MR):
            c[c0 + i * ldc] += np.dot(a[a0 + i * lda : a0 + i * lda + kc], b[b0 : b0 + kc])

    def transpose_block(src, s0, ld_s, dst, d0, ld_d):  # noqa: F811
        vw = 32 // src.itemsize
        for j in range(vw):
            for k in range(vw):
                dst[d0 + k * ld_d + j] = src[s0 + j * ld_s + k]

    def copy_line(src, s0, dst, d0):  # noqa: F811
        n = LINE // src.itemsize
        dst[d0 : d0 + n] = src[s0 : s0 + n]


@functools.cache
def panel_width(dtype) -> int:
    """NR: columns of a packed panel and of the register tile (``dtype``: any dtype-like).

    Pass the dtype itself on hot paths: numpy's ``dtype.name`` is a slow
    Python property (~3 us), the cached lookup ~0.1 us.
    """
    return LINE // np.dtype(dtype).itemsize


U = np.uint64


@numba.njit(inline="always")
def _pixel(j, lg, pstride, k):
    """Index in the packed panels of tile column j >= 0, tile row k (nr == 1 << lg).

    Shifts, not ``//``: nr is not a compile-time constant here, and a 64-bit
    division per element cost more than the copy.
    """
    return (j >> lg) * pstride + (k << lg) + (j & ((1 << lg) - 1))


@numba.njit(inline="always")
def _copy_to_panels(bp, j, n, lg, pstride, k, xf, s, step):
    """Tile columns j .. j+n-1 of row k = xf[s], xf[s + step], ...: straight loops per panel."""
    nr = 1 << lg
    while n > 0:
        jj = j & (nr - 1)
        m = min(n, nr - jj)
        d = (j >> lg) * pstride + (k << lg) + jj
        if step == 1 and m == 16:  # a whole float32 panel row: two vector moves
            for i in range(16):
                bp[U(d + i)] = xf[U(s + i)]
        elif step == 1 and m == 8:  # a whole float64 one
            for i in range(8):
                bp[U(d + i)] = xf[U(s + i)]
        elif step == 1:
            for i in range(m):
                bp[U(d + i)] = xf[U(s + i)]
        else:
            for i in range(m):
                bp[U(d + i)] = xf[U(s + i * step)]
        j += m
        s += m * step
        n -= m


@numba.njit(inline="always")
def _pack_nchw(xf, plane0, hw, w_n, q_n, pc, kc, j0, jn, t0, lg, bp, htab, wtab, hint, wint, sw,
               band_ok, kw_n, khw):
    """Pixels j0 .. j0+jn-1 of one image into tile columns t0 .. t0+jn-1 of packed panels.

    Tile column t of row k is ``bp[(t // nr)*kc*nr + k*nr + t % nr]`` and
    holds ``cols[pc + k, j0 + t - t0]``, where row r = (c, kh, kw) of the
    column matrix and column j = (oh, ow) of the image; ``plane0`` is the
    offset of the image's first channel of the group in ``xf``.

    With unit strides and Q == W ('same' padding, stride 1: most 3x3
    layers), the interior of consecutive output rows is consecutive in the
    input too, so one straight copy per panel fills a whole tile row (the
    ``band``); the few positions it wrapped over a row edge are rewritten
    from the tables afterwards.  Otherwise each output row is copied as its
    interior run plus table look-ups at the padded edges.  Divisions are per
    tile row and per panel, not per element.
    """
    nr = 1 << lg
    pstride = kc * nr
    oh0 = j0 // q_n
    ow0 = j0 - oh0 * q_n
    c = pc // khw  # (c, kh, kw) of row pc, then stepped without dividing
    kh = (pc - c * khw) // kw_n
    kw = pc - c * khw - kh * kw_n
    for k in range(kc):
        if k:
            kw += 1
            if kw == kw_n:
                kw = 0
                kh += 1
                if kh * kw_n == khw:
                    kh = 0
                    c += 1
        src_c = plane0 + c * hw
        lo, hi, off = wint[kw, 0], wint[kw, 1], wint[kw, 2]
        hlo, hhi, hoff = hint[kh, 0], hint[kh, 1], hint[kh, 2]
        # The band: tile columns ja .. jz-1 straight from the input.
        ja = 0
        jz = 0
        if band_ok and hhi > hlo and hi > lo:
            ja = max(hlo * q_n + lo - j0, 0)
            jz = min((hhi - 1) * q_n + hi - j0, jn)
        if jz > ja:  # input of pixel j0 + ja onwards
            _copy_to_panels(bp, t0 + ja, jz - ja, lg, pstride, k, xf,
                            src_c + (j0 + ja) + hoff * w_n + off, 1)
        # Every output row the tile touches, outside the band.
        j = 0
        oh = oh0
        ow = ow0
        while j < jn:
            end = min(q_n, ow + jn - j)  # this row's columns ow .. end-1
            jrow = t0 + j - ow  # tile column of (oh, 0)
            ih = htab[kh, oh]
            if ih < 0:
                for q in range(ow, end):
                    bp[U(_pixel(jrow + q, lg, pstride, k))] = 0
            else:
                row = src_c + ih * w_n
                a = min(max(lo, ow), end)
                z = max(min(hi, end), a)
                if not (jz > ja and hlo <= oh < hhi):  # not in the band: copy the interior
                    _copy_to_panels(bp, jrow + a, z - a, lg, pstride, k, xf, row + off + a * sw, sw)
                for q in range(ow, a):  # left padding (or a padding mode's remap)
                    iw = wtab[kw, q]
                    bp[U(_pixel(jrow + q, lg, pstride, k))] = xf[U(row + iw)] if iw >= 0 else 0
                for q in range(z, end):  # right padding
                    iw = wtab[kw, q]
                    bp[U(_pixel(jrow + q, lg, pstride, k))] = xf[U(row + iw)] if iw >= 0 else 0
            j += end - ow
            ow = 0
            oh += 1


def conv_nchw(x, w, bias, has_bias, out, htab, wtab, hint, wint, sh, sw, groups, kc_blk, nc_blk,
              mc_blk):
    """out = conv(x, w) (+ bias), NCHW/OIHW, by packed column tiles and the micro-kernel.

    ``w`` is the OIHW weight as (O, Cg*KH*KW).  The GEMM's N dimension runs
    over the pixels of all the images, J = n*P*Q + pixel, so that small
    images (7x7 = 49 pixels) still fill whole register tiles.  Tasks are
    (group, block of ``nc_blk`` columns J, block of ``mc_blk`` output
    channels), and each task writes only its own block of ``out``, so the
    parallel loop is race-free.  Per task, a tile of ``kc_blk`` column-matrix
    rows by ``nc_blk`` columns is packed into a buffer that stays in L2, then
    every row panel of the weight is multiplied against it, straight into
    ``out`` where a register tile lies in one image, else through a scratch
    tile.  Needs og >= MR.
    """
    n_n, c_n, h_n, w_n = x.shape
    o_n, p_n, q_n = out.shape[1], out.shape[2], out.shape[3]
    kh_n, kw_n = htab.shape[0], wtab.shape[0]
    cg = c_n // groups
    og = o_n // groups
    khw = kh_n * kw_n
    k_n = cg * khw
    pix = p_n * q_n
    hw = h_n * w_n
    lg = 4 if x.itemsize == 4 else 3  # nr = 1 << lg: one 64-byte line per panel row
    nr = 1 << lg
    band_ok = sh == 1 and sw == 1 and q_n == w_n
    total = n_n * pix
    nj = (total + nc_blk - 1) // nc_blk
    ni = (og + mc_blk - 1) // mc_blk
    xf = x.reshape(x.size)
    of = out.reshape(out.size)
    wf = w.reshape(w.size)
    for task in prange(groups * nj * ni):
        ic = task % ni
        rest = task // ni
        jc = rest % nj
        g = rest // nj
        c0 = jc * nc_blk  # first column J of the tile
        cn = min(nc_blk, total - c0)
        npan = (cn + nr - 1) // nr
        i0 = ic * mc_blk
        i1 = min(og, i0 + mc_blk)
        bp = np.empty(kc_blk * npan * nr, x.dtype)
        tile = np.empty(MR * nr, x.dtype)
        # out[n, g*og + i, j] for column J = n*pix + j is of[obase(n) + i*pix + j]
        for t in range(cn):  # start from the bias (or zero)
            n = (c0 + t) // pix
            j = c0 + t - n * pix
            obase = (n * o_n + g * og) * pix + j
            for i in range(i0, i1):
                of[U(obase + i * pix)] = bias[g * og + i] if has_bias else 0
        abase = g * og * k_n
        for pc in range(0, k_n, kc_blk):
            kc = min(kc_blk, k_n - pc)
            t = 0
            while t < cn:  # one image's pixels at a time
                n = (c0 + t) // pix
                j = c0 + t - n * pix
                run = min(pix - j, cn - t)
                _pack_nchw(xf, (n * c_n + g * cg) * hw, hw, w_n, q_n, pc, kc, j, run, t, lg, bp,
                           htab, wtab, hint, wint, sw, band_ok, kw_n, khw)
                t += run
            for k in range(kc):  # the last panel's missing columns
                for t in range(cn, npan * nr):
                    bp[U(_pixel(t, lg, kc * nr, k))] = 0
            for r0 in range(i0, i1, MR):
                full_m = r0 + MR <= i1
                ar = r0 if full_m else i1 - MR  # overlapping rows: read-only on A
                a0 = abase + ar * k_n + pc
                for p in range(npan):
                    cp = c0 + p * nr  # column J of the panel's first column
                    n = cp // pix
                    j = cp - n * pix
                    cols = min(nr, cn - p * nr)
                    b0 = p * kc * nr
                    if full_m and cols == nr and j + nr <= pix:
                        microkernel(kc, wf, a0, k_n, bp, b0, nr, of,
                                    (n * o_n + g * og + r0) * pix + j, pix)
                    else:  # an edge tile: through a scratch tile, keep our rows/columns
                        for e in range(MR * nr):
                            tile[e] = 0
                        microkernel(kc, wf, a0, k_n, bp, b0, nr, tile, 0, nr)
                        for jj in range(cols):
                            n = (cp + jj) // pix
                            obase = (n * o_n + g * og) * pix + cp + jj - n * pix
                            for i in range(r0, min(r0 + MR, i1)):
                                of[U(obase + i * pix)] += tile[(i - ar) * nr + jj]


# --------------------------------------------------------------------------
# indirect GEMM, both layouts (algorithm "indirect_gemm")
# --------------------------------------------------------------------------
def pad_nhwc(x, xp, prow, pcol):
    """xp[n, i, j, :] = x[n, prow[i], pcol[j], :], or 0 where either is -1.

    The padded input of ``conv_indirect``; the tables are
    ``_plan.padded_axis`` (so every padding mode works), and x is 1x the
    input, not the 9x of a 3x3 column matrix.
    """
    n_n, h_n, w_n, c_n = x.shape
    hp, wp = xp.shape[1], xp.shape[2]
    xf = x.reshape(x.size)
    pf = xp.reshape(xp.size)
    for task in prange(n_n * hp):
        n = task // hp
        i = task - n * hp
        r = prow[i]
        for j in range(wp):
            col = pcol[j]
            d = (task * wp + j) * c_n
            if r < 0 or col < 0:
                for c in range(c_n):
                    pf[U(d + c)] = 0
            else:
                s = ((n * h_n + r) * w_n + col) * c_n
                for c in range(c_n):
                    pf[U(d + c)] = xf[U(s + c)]


def pad_nchw(x, xp, prow, pcol, lo, hi):
    """xp[n, c, i, j] = x[n, c, prow[i], pcol[j]], or 0 where either is -1.

    Columns ``lo .. hi-1`` of the padded plane are the input row itself
    (``pcol[j] == j - lo``): a straight copy; only the edges use the table.
    """
    n_n, c_n, h_n, w_n = x.shape
    hp, wp = xp.shape[2], xp.shape[3]
    xf = x.reshape(x.size)
    pf = xp.reshape(xp.size)
    for task in prange(n_n * c_n):
        for i in range(hp):
            r = prow[i]
            d = (task * hp + i) * wp
            if r < 0:
                for j in range(wp):
                    pf[U(d + j)] = 0
            else:
                s = (task * h_n + r) * w_n
                for j in range(lo):
                    col = pcol[j]
                    pf[U(d + j)] = xf[U(s + col)] if col >= 0 else 0
                for j in range(lo, hi):
                    pf[U(d + j)] = xf[U(s + j - lo)]
                for j in range(hi, wp):
                    col = pcol[j]
                    pf[U(d + j)] = xf[U(s + col)] if col >= 0 else 0


@numba.njit(inline="always")
def _panel(wf, w_k, w_o, k0, kc, o0, cols, nr, dst, d0):
    """dst[d0 + k*nr + j] = W[k0 + k, o0 + j] for j < cols, else 0 (k < kc).

    W[k, o] is ``wf[k*w_k + o*w_o]``: HWIO as (K, O) has w_o == 1, OIHW as
    (O, K) has w_k == 1.  The loop runs along whichever is contiguous.
    """
    if w_o == 1:
        for k in range(kc):
            s = (k0 + k) * w_k + o0
            d = d0 + k * nr
            if cols == nr:
                copy_line(wf, s, dst, d)
                continue
            for j in range(cols):
                dst[U(d + j)] = wf[U(s + j)]
            for j in range(cols, nr):
                dst[U(d + j)] = 0
    else:
        kb = 0
        vw = nr >> 1  # lanes of one register: a panel row is two
        if cols == nr and w_k == 1:
            # Blocks of vw channels x vw taps, transposed in registers.
            # Channel by channel (a run of kc taps into every nr-th slot)
            # took twice as long on one thread, and indirect_gemm on the
            # 7x7x512 layer at batch 1 (which packs per task) 1.3x as long.
            while kb + vw <= kc:
                for jb in range(0, nr, vw):
                    transpose_block(wf, (o0 + jb) * w_o + k0 + kb, w_o, dst, d0 + kb * nr + jb,
                                    nr)
                kb += vw
        for j in range(nr):  # the taps left over, and a last panel's missing channels
            s = (o0 + j) * w_o + k0 * w_k
            if j < cols:
                for k in range(kb, kc):
                    dst[U(d0 + k * nr + j)] = wf[U(s + k * w_k)]
            else:
                for k in range(kb, kc):
                    dst[U(d0 + k * nr + j)] = 0


def pack_panels(wf, w_k, w_o, wpk):
    """wpk[g, ob, k, j] = W[k, g*og + ob*NR + j] (0 past og): the weight as panels.

    ``W[k, o] = wf[k*w_k + o*w_o]`` (see ``_panel``).  A panel row is one
    cache line, read by the micro-kernel as one stream; read in place, the
    rows of a wide layer's HWIO weight (O = 512: 2 KiB apart) fell into the
    same few L1 sets and the layer ran 2-3x slower.
    """
    groups, nob, k_n, nr = wpk.shape
    og = wf.size // (groups * k_n)
    pf = wpk.reshape(wpk.size)
    if w_o == 1:
        # HWIO: a K row's channels are contiguous, so tasks take runs of whole
        # rows and deal each row out to every panel.  Panel by panel, each
        # row was read as 64-byte pieces 2 KiB apart (O = 512): the 512x4608
        # weight took 1.7 ms against 0.7 ms from OIHW.
        nkb = (k_n + 63) // 64
        for task in prange(groups * nkb):
            g = task // nkb
            k0 = (task - g * nkb) * 64
            for k in range(k0, min(k_n, k0 + 64)):
                for ob in range(nob):
                    _panel(wf, w_k, w_o, k, 1, g * og + ob * nr, min(nr, og - ob * nr), nr, pf,
                           ((g * nob + ob) * k_n + k) * nr)
        return
    for task in prange(groups * nob):
        g = task // nob
        ob = task - g * nob
        o0 = g * og + ob * nr
        for k0 in range(0, k_n, 64):  # 64 panel rows (4 KiB) stay in L1 while OIHW fills them
            _panel(wf, w_k, w_o, k0, min(64, k_n - k0), o0, min(nr, og - ob * nr), nr, pf,
                   (task * k_n + k0) * nr)


def conv_indirect(xf, wf, wpk, bias, has_bias, of, koff, dims, kc_blk, mt_blk, ob_blk):
    """out = conv(x, w) (+ bias) from the padded input, with no column matrix.

    GEMM view: out[m, o] = sum_k A[m, k] * W[k, o] over output pixels
    m = (n, p, q) and taps k.  A is never built: pixel m's receptive field
    starts at ``xf`` offset ``rows[m]`` and tap k lies ``koff[k]`` past it, so
    the micro-kernel reads A in place through those two tables
    (``microkernel_indirect``), with MR output pixels as the tile's rows and
    NR output channels (one weight panel) as its columns.

    The layout is data, in ``dims`` (``_plan.indirect_dims``): n, P*Q, Q,
    groups, og, K; then the padded input's strides per image, per group,
    per output row (times the stride) and per output column (likewise);
    W[k, o] = ``wf[k*w_k + o*w_o]``; and out[n, o, pixel] is at
    ``n*o_n + o*o_o + pixel*o_m``; last, 1 for NHWC (0 for NCHW), whose
    output rows are the tiles' rows.  NHWC has taps (kh, kw, c), NCHW
    (c, kh, kw): ``koff`` and the weight strides say which.

    Tasks: (group, block of ``mt_blk`` tiles of MR pixels, block of
    ``ob_blk`` weight panels); each writes only its own block of ``out``.
    Each task sums into a scratch block of whole tiles, then writes its
    real pixels and channels out: NHWC as runs of a pixel's channels, NCHW
    (a tile's channels are a plane apart) as register transposes along
    the output's pixels.  The weight is read from
    ``wpk`` when the runner packed it once (many tasks share each panel),
    else packed per task: then each panel is read once from the caller's
    weight, which halves the memory traffic of a deep layer at batch 1.
    """
    n_n, pq, q_n, groups, og, k_n = dims[0], dims[1], dims[2], dims[3], dims[4], dims[5]
    xs_n, xs_g, xs_p, xs_q = dims[6], dims[7], dims[8], dims[9]
    w_k, w_o, o_n, o_o, o_m = dims[10], dims[11], dims[12], dims[13], dims[14]
    lg = 4 if of.itemsize == 4 else 3
    nr = 1 << lg
    nob = (og + nr - 1) // nr
    npix = n_n * pq
    ntile = (npix + MR - 1) // MR
    nblk = (ntile + mt_blk - 1) // mt_blk
    nobc = (nob + ob_blk - 1) // ob_blk
    prepacked = wpk.size > 0
    direct = dims[15] == 1  # NHWC: pixel m's channels are out[m*o_m:]
    for task in prange(groups * nblk * nobc):
        obc = task % nobc
        rest = task // nobc
        blk = rest % nblk
        g = rest // nblk
        t0 = blk * mt_blk
        nt = min(ntile, t0 + mt_blk) - t0
        ob0 = obc * ob_blk
        nb = min(nob, ob0 + ob_blk) - ob0
        j0 = g * og + ob0 * nr  # this task's first output channel
        jn = min(nb * nr, og - ob0 * nr)
        mn = min(nt * MR, npix - t0 * MR)  # its real pixels
        rows = np.empty(nt * MR, np.int64)
        # The task's sums, panel by panel, each a block of whole tiles, so
        # that a register tile's rows are contiguous (NR apart).  Rows as long
        # as the task's channels (NCHW; 256-512 bytes apart) took 1.05-1.10x
        # as long, and tiles straight into an NHWC output (rows O apart)
        # 1.01-1.07x, on ResNet-50's 3x3 layers at batch 1 and 8.
        pst = nt * MR * nr  # one panel's block of acc
        acc = np.empty(nb * pst, of.dtype)
        own = np.empty(0 if prepacked else kc_blk * nr, of.dtype)  # this task's panel
        bp = wpk if prepacked else own  # read-only either way (wpk may be a PackedWeight's)
        for e in range(nt * MR):
            m = min(t0 * MR + e, npix - 1)  # a last, partial tile repeats its last pixel
            n = m // pq
            r = m - n * pq
            p = r // q_n
            rows[e] = n * xs_n + g * xs_g + p * xs_p + (r - p * q_n) * xs_q
        # Start from the bias (or zero), so that the write-out is a copy.
        if has_bias:  # (two plain loops: a test per element kept them scalar)
            for p in range(nb):
                cols = min(nr, jn - p * nr)
                for e in range(nt * MR):
                    d = p * pst + e * nr
                    for j in range(cols):
                        acc[U(d + j)] = bias[U(j0 + p * nr + j)]
                    for j in range(cols, nr):
                        acc[U(d + j)] = 0
        else:
            for e in range(acc.size):
                acc[U(e)] = 0
        # K blocks outermost: the tiles' part of the input stays in L2 while
        # every weight panel of the task passes over it.
        for pc in range(0, k_n, kc_blk):
            kc = min(kc_blk, k_n - pc)
            for ob in range(ob0, ob0 + nb):
                cols = min(nr, og - ob * nr)
                b0 = ((g * nob + ob) * k_n + pc) * nr
                if not prepacked:
                    _panel(wf, w_k, w_o, pc, kc, g * og + ob * nr, cols, nr, own, 0)
                    b0 = 0
                for t in range(nt):
                    microkernel_indirect(kc, xf, rows, t * MR, koff, pc, bp, b0, acc,
                                         (ob - ob0) * pst + t * MR * nr, nr)
        if direct:  # NHWC: each pixel's channels are a run of the output row
            for p in range(nb):
                cols = min(nr, jn - p * nr)
                for e in range(mn):
                    d = (t0 * MR + e) * o_m + j0 + p * nr
                    if cols == nr:
                        copy_line(acc, p * pst + e * nr, of, d)
                    else:
                        for j in range(cols):
                            of[U(d + j)] = acc[U(p * pst + e * nr + j)]
            continue
        # NCHW: into place, a run of pixels of one image at a time, in
        # blocks of VW pixels x VW channels transposed in registers
        # (``transpose_block``); the block's rows of ``acc`` stay in L1 while
        # it is read.  Channel by channel over the whole run took 3x longer
        # (192 pixels x 64 channels: rows 256 bytes apart evict each other),
        # a fifth of the stem layer's time; blocks of 8 pixels with scalar
        # moves still took 15-19% of it.
        vw = nr >> 1
        e = 0
        while e < mn:
            n = (t0 * MR + e) // pq
            pix0 = t0 * MR + e - n * pq
            run = min(mn - e, pq - pix0)
            d = n * o_n + j0 * o_o + pix0 * o_m
            for i0 in range(0, run, vw):
                ni = min(vw, run - i0)
                a0 = (e + i0) * nr
                dj = d + i0 * o_m
                j = 0
                if ni == vw and o_m == 1:
                    while j + vw <= jn:
                        transpose_block(acc, a0 + (j >> lg) * pst + (j & (nr - 1)), nr, of,
                                        dj + j * o_o, o_o)
                        j += vw
                for jj in range(j, jn):  # the channels left over, or a short run
                    for i in range(ni):
                        of[U(dj + jj * o_o + i * o_m)] = acc[U(a0 + (jj >> lg) * pst + i * nr
                                                               + (jj & (nr - 1)))]
            e += run
