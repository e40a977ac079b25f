"""Peak resident memory of one large conv2d, against the issue's bound.

    python benchmarks/peak_memory.py

Each case runs in a fresh child process: import, warm the kernels on a small
problem, record the RSS, allocate x and w, convolve, then read the peak
(ru_maxrss).  Bound: RSS before the call + input + output +
config.max_workspace_bytes + 100 MiB.  The plain-NumPy im2col baseline is
shown for contrast: its column matrix alone is C*9 x N*H*W floats.
"""

import json
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np, numbaconv
    from numbaconv.bench import numpy_conv2d
    impl, layout = sys.argv[1], sys.argv[2]
    n, c, hw, o = 64, 64, 56, 64
    small = (np.zeros((1, c, 8, 8), np.float32), np.zeros((o, c, 3, 3), np.float32))
    if layout == "NHWC":
        small = (small[0].transpose(0, 2, 3, 1).copy(), small[1].transpose(2, 3, 1, 0).copy())
    numbaconv.conv2d(*small, padding=1, layout=layout)  # load the kernels first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    xs = (n, c, hw, hw) if layout == "NCHW" else (n, hw, hw, c)
    ws = (o, c, 3, 3) if layout == "NCHW" else (3, 3, c, o)
    x = np.random.default_rng(0).standard_normal(xs, dtype=np.float32)
    w = np.random.default_rng(1).standard_normal(ws, dtype=np.float32)
    if impl == "numbaconv":
        y = numbaconv.conv2d(x, w, padding=1, layout=layout)
    else:
        y = numpy_conv2d(x, w, padding=1, layout=layout)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(before=before, peak=peak, x=x.nbytes, y=y.nbytes,
                          ws=numbaconv.config.max_workspace_bytes)))
""")


def measure(impl: str, layout: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, impl, layout], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def main() -> int:
    mib = 2**20
    ok = True
    for layout in ("NCHW", "NHWC"):
        for impl in ("numbaconv", "numpy"):
            r = measure(impl, layout)
            bound = r["before"] + r["x"] + r["y"] + r["ws"] + 100 * mib
            within = r["peak"] <= bound
            if impl == "numbaconv":
                ok &= within
            print(f"{layout} {impl:9s}: peak {r['peak'] / mib:7.1f} MiB, before x and w "
                  f"{r['before'] / mib:6.1f} MiB, grew {(r['peak'] - r['before']) / mib:6.1f} "
                  f"MiB (x {r['x'] / mib:.0f} + y {r['y'] / mib:.0f} MiB); bound "
                  f"{bound / mib:7.1f} MiB: {'within' if within else 'OVER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
