"""Float32 rounding error of Winograd against direct arithmetic, on a wide 3x3 layer.

    python benchmarks/winograd_error.py

One 256-channel 28x28 layer (unit-variance input, weights scaled so the
output has unit-order variance), computed in float32 by each algorithm and
compared with the float64 result: the RMS error and the largest error, both
over the output's RMS.
"""

import numpy as np

import numbaconv
from numbaconv import _args
from numbaconv._plan import problem_of
from numbaconv.algorithms import REGISTRY, winograd


def errors(y: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    d, scale = y.astype(np.float64) - ref, np.sqrt(np.mean(ref**2))
    return np.sqrt(np.mean(d**2)) / scale, np.max(np.abs(d)) / scale


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 256, 28, 28))
    w = rng.standard_normal((256, 256, 3, 3)) / 48  # 48 = sqrt(256 * 9)
    ref = numbaconv.conv2d(x, w, padding=1)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    print(f"{'algorithm':<16}{'RMS':>10}{'max':>10}")
    for name in ("indirect_gemm", "im2col_gemm"):
        y = numbaconv.conv2d_with(x32, w32, padding=1, algorithm=name)
        print(f"{name:<16}" + "".join(f"{e:>10.1e}" for e in errors(y, ref)))
    layout = _args.layout_of("NCHW")
    g = _args.conv_geometry(x32.shape, w32.shape, layout, 1, 1, 1, 1, "zeros")
    for m in (2, 4):  # each F(m x m) forced
        plan = winograd.plan(problem_of(g, layout, np.float32), m)
        y = np.empty_like(x32)
        REGISTRY["winograd"].run(plan, x32, w32, None, y)
        print(f"{f'F({m}x{m}, 3x3)':<16}" + "".join(f"{e:>10.1e}" for e in errors(y, ref)))


if __name__ == "__main__":
    main()
