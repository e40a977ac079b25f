"""The depth fold: a 3-d convolution's depth taps gathered into channels, and its adjoint.

A 3-d convolution over (D, H, W) is a 2-d convolution over (H, W) of
``N * D_out`` images whose channels are the (channel, depth tap) pairs:
image (n, d) channel (c, kd) is the input plane at depth
``d * stride + kd * dilation - pad`` (``numbaconv._rank``).  ``fold_depth``
builds those images for a range of rows r = n * D_out + d; ``unfold_depth``
adds their gradient back into the input.

Both take x flat, as (N, A, D, B) when ``depth_major`` is 0 (NCDHW: A = C,
B = H*W) or (N, D, A, B) when it is 1 (NDHWC: A = H*W*groups, B = C/groups),
and the folded rows as (rows, A, KD, B).  ``dtab[d, kd]`` is the input depth
each tap reads, or -1 for a zero: the depth padding mode lives there.
"""

from numba import prange

from ._copy import add_run, copy_run, fill_zero
from ._registry import kernel


@kernel("fold_depth", "ANY", "c1_in", "c1_out", "i", "i", "i", "i", "i", "i", "t2")
def fold_depth(x, out, r0, nr, a_n, b_n, d_n, depth_major, dtab):
    """out[r - r0, a, kd, b] = x[n, a, dtab[d, kd], b] (or 0), r = n * D_out + d."""
    dp_n, kd_n = dtab.shape
    for task in prange(nr * a_n):
        rr = task // a_n
        a = task - rr * a_n
        img = (r0 + rr) // dp_n
        dp = r0 + rr - img * dp_n
        for kd in range(kd_n):
            z = dtab[dp, kd]
            dst = ((rr * a_n + a) * kd_n + kd) * b_n
            if z < 0:
                fill_zero(out, dst, b_n)
                continue
            if depth_major:
                src = ((img * d_n + z) * a_n + a) * b_n
            else:
                src = ((img * a_n + a) * d_n + z) * b_n
            copy_run(out, dst, x, src, b_n)


@kernel("unfold_depth", "ANY", "c1_in", "c1_out", "i", "i", "i", "i", "i", "i", "t2")
def unfold_depth(folded, x, r0, nr, a_n, b_n, d_n, depth_major, dtab):
    """x[n, a, dtab[d, kd], b] += folded[r - r0, a, kd, b]: the adjoint of fold_depth.

    Race-free: a task owns one (image, a) slice of x and walks every folded
    row of that image in the range, so no two tasks write one element.
    """
    dp_n, kd_n = dtab.shape
    first = r0 // dp_n
    images = (r0 + nr - 1) // dp_n - first + 1
    for task in prange(images * a_n):
        k = task // a_n
        a = task - k * a_n
        img = first + k
        for r in range(max(r0, img * dp_n), min(r0 + nr, (img + 1) * dp_n)):
            dp = r - img * dp_n
            for kd in range(kd_n):
                z = dtab[dp, kd]
                if z < 0:
                    continue
                if depth_major:
                    dst = ((img * d_n + z) * a_n + a) * b_n
                else:
                    dst = ((img * a_n + a) * d_n + z) * b_n
                add_run(x, dst, folded, (((r - r0) * a_n + a) * kd_n + kd) * b_n, b_n, 1)
