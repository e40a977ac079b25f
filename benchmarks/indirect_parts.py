"""Where an indirect_gemm call's time goes: the kernel, the padding, the packing, the rest.

Times the whole runner, then each of its launches alone (the weight's
packing, the padded copy, ``conv_indirect``), medians of ``--calls``, at
each thread count.  What is left is Python and the launches themselves.

    python benchmarks/indirect_parts.py                  # 56x56x64 3x3, batch 1
    python benchmarks/indirect_parts.py --shape 8,3,224,224 --weight 64,3,7,7 \\
        --stride 2 --padding 3 --layout NHWC
"""

from __future__ import annotations

import argparse

import numpy as np

import numbaconv
from numbaconv._execute import bias_arg, workspace
from numbaconv.algorithms import REGISTRY
from numbaconv.bench import measure


def median_time(call, calls: int) -> float:
    return measure(call, calls).median  # the bench's rule: first call, warm-up, then calls


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=_ints, default=(1, 64, 56, 56), help="N,C,H,W")
    parser.add_argument("--weight", type=_ints, default=(64, 64, 3, 3), help="O,C,KH,KW")
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--padding", type=int, default=1)
    parser.add_argument("--layout", default="NCHW", choices=["NCHW", "NHWC"])
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--calls", type=int, default=21)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal(args.shape, dtype=np.float32)
    w = rng.standard_normal(args.weight, dtype=np.float32)
    layout = numbaconv._args.layout_of(args.layout)  # x and w made in NCHW/OIHW order
    x = np.ascontiguousarray(x.transpose(layout.from_nchw))
    w = np.ascontiguousarray(w.transpose(tuple(layout.w_axes.index(a) for a in range(4))))
    kw = dict(stride=args.stride, padding=args.padding, layout=args.layout)
    print(f"# {numbaconv.machine.describe()}")
    for threads in args.threads:
        with numbaconv.threads(threads):
            print(f"{args.layout} {threads} thread(s), " + parts(x, w, kw, args.calls))


def parts(x, w, kw: dict, calls: int) -> str:
    """The whole runner's time and its launches' times, as one line."""
    plan = numbaconv.explain(x, w, algorithm="indirect_gemm", **kw)
    out = np.empty(numbaconv.conv2d(x, w, **kw).shape, np.float32)
    whole = median_time(lambda: REGISTRY["indirect_gemm"].run(plan, x, w, None, out), calls)
    launch, tile = plan.launch, plan.tile
    buf = workspace(plan.workspace_bytes, x.dtype)
    wf, wpk = w.reshape(-1), buf[:launch.npanel]
    t_pack = median_time(lambda: launch.pack(wf, tile.dims.w_k, tile.dims.w_o,
                                             wpk.reshape(launch.pshape)),
                         calls) if tile.pack_once else 0.0
    nb = plan.batch_chunk
    xp, t_pad = x[:nb], 0.0
    if launch.pad is not None:
        kernel, size, shape, tables = launch.pad
        xp = buf[launch.npanel : launch.npanel + nb * size].reshape((nb, *shape))
        t_pad = median_time(lambda: kernel(x[:nb], xp, *tables), calls)
    b, has_bias = bias_arg(None, x.dtype)
    dims = tile.dims.vector  # a whole chunk of nb images
    t_conv = median_time(lambda: launch.conv(xp.reshape(-1), wf, wpk, b, has_bias,
                                             out[:nb].reshape(-1), tile.offsets, dims, tile.kc,
                                             tile.tiles, tile.panels, 0), calls)
    chunks = -(-plan.geometry.n // nb)
    rest = whole - chunks * (t_pad + t_conv) - t_pack
    kernel_time = chunks * t_conv
    return (f"tile {plan.tile}: whole {whole * 1e3:.3f} ms ({plan.flops / whole / 1e9:.0f} "
            f"GFLOP/s); kernel {kernel_time * 1e3:.3f} ms "
            f"({plan.flops / kernel_time / 1e9:.0f} GFLOP/s), padding {chunks * t_pad * 1e3:.3f}, "
            f"packing {t_pack * 1e3:.3f}, the rest {rest * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
