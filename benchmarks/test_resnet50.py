"""pytest-benchmark: ResNet-50 conv shapes, numbaconv against the NumPy baseline and peers.

Off in the default test run (testpaths is tests/ and --benchmark-disable);
run on purpose with

    python -m pytest benchmarks --benchmark-enable --benchmark-columns=median,ops \
        --benchmark-group-by=param:layer

Each benchmark stores GFLOP/s and the fraction of the OpenBLAS sgemm rate
measured at the start of the same session in ``extra_info``.
"""

import numpy as np
import pytest

from numbaconv import bench, conv2d, explain, pack_weight

LAYERS = bench.load_suite("resnet50")
# numbaconv-packed: the weight packed once beforehand (pack_weight), untimed,
# as ONNX Runtime's session does with its weights.  Every installed peer,
# onnxruntime_gemm too (ONNX Runtime's own im2col + GEMM, which the command
# line times only when asked).
IMPLS = ["numbaconv", "numbaconv-packed", *bench.available_peers()]


@pytest.fixture(scope="session")
def sgemm():
    return bench.sgemm_gflops()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.name)
def test_conv2d(benchmark, sgemm, layer, batch, layout, dtype, impl):
    x, w = bench._rng_arrays(layer, batch, layout, np.dtype(dtype))
    kw = layer.conv_kwargs()
    if impl.startswith("numbaconv"):
        wp = pack_weight(w, layer.groups, layout=layout) if impl == "numbaconv-packed" else w
        fn = lambda: conv2d(x, wp, layout=layout, **kw)  # noqa: E731
    else:
        try:
            fn = bench.PEERS[impl](layer, x, w, layout)
        except bench.PeerUnsupported as err:  # e.g. ONNX Runtime has no float64 Conv
            pytest.skip(str(err))
    fn()  # compile / warm up outside the timing
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    flops = explain(x, w, layout=layout, **kw).flops
    if benchmark.stats is not None:  # None when run with --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info["gflops"] = flops / median / 1e9
        benchmark.extra_info["pct_sgemm"] = 100 * flops / median / 1e9 / sgemm
