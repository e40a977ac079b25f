"""The bench's comparison implementations agree with the reference too.

A benchmark that compares against a wrong baseline flags good results as
mismatches (or hides bad ones), so the baseline and every peer get the same
check.  Peers that are not installed are skipped; a peer that cannot run a
problem (ONNX Runtime has no float64 Conv) raises ``PeerUnsupported``.
"""

import importlib.util

import numpy as np
import pytest
from naive import assert_close, conv2d_ref, to_hwio, to_nhwc

from numbaconv import bench

PROBLEMS = [
    bench.Layer("plain", 3, 9, 8, 5, 3, 1, 1),
    bench.Layer("strided", 4, 11, 11, 6, 3, 2, 0),
    bench.Layer("grouped-dilated", 6, 10, 9, 4, 3, 1, 2, dilation=2, groups=2),
    bench.Layer("depthwise", 4, 7, 7, 8, 3, 1, 1, groups=4),
    bench.Layer("pointwise", 5, 6, 7, 3, 1),
]


def _installed(peer):
    return all(importlib.util.find_spec(m) is not None for m in bench.PEER_MODULES[peer])


PEER_PARAMS = [pytest.param(p, marks=pytest.mark.skipif(not _installed(p),
                                                        reason=f"{p} is not installed"))
               for p in bench.PEERS]


@pytest.mark.parametrize("peer", PEER_PARAMS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("layer", PROBLEMS, ids=lambda layer: layer.name)
def test_peer_matches_reference(peer, layer, layout, dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, layer.c, layer.h, layer.w))
    w = rng.standard_normal((layer.o, layer.c // layer.groups, layer.kernel, layer.kernel))
    p, s, d = layer.padding, layer.stride, layer.dilation
    ref = conv2d_ref(x, w, None, (s, s), (p,) * 4, (d, d), layer.groups)
    if layout == "NHWC":
        x, w, ref = to_nhwc(x), to_hwio(w), to_nhwc(ref)
    x, w = np.ascontiguousarray(x, dtype), np.ascontiguousarray(w, dtype)
    try:
        call = bench.PEERS[peer](layer, x, w, layout)
    except bench.PeerUnsupported as err:
        pytest.skip(str(err))
    got = call()
    assert isinstance(got, np.ndarray) and got.dtype == dtype
    assert_close(got, ref, dtype)
    assert_close(call(), ref, dtype)  # a second (timed-style) call gives the same


def test_registry_is_consistent():
    assert set(bench.PEERS) == set(bench.PEER_MODULES)
    assert {"numpy", "torch", "onnxruntime", "jax"} <= set(bench.PEERS)
    installed = bench.available_peers()
    assert installed[0] == "numpy"
    assert installed == [p for p in bench.PEERS if _installed(p)]


@pytest.mark.skipif(not _installed("onnxruntime"), reason="onnxruntime is not installed")
@pytest.mark.parametrize("peer", ["onnxruntime", "onnxruntime_gemm"])
def test_onnxruntime_has_no_float64(peer):
    layer = PROBLEMS[0]
    x, w = bench._rng_arrays(layer, 1, "NCHW", np.float64)
    with pytest.raises(bench.PeerUnsupported, match="float64"):
        bench.PEERS[peer](layer, x, w, "NCHW")


def test_asked_only_peers_are_left_out_by_default():
    from numbaconv.cli import _choose_peers

    installed = ["numpy", "onnxruntime", "onnxruntime_gemm"]
    assert set(bench.ASKED_ONLY_PEERS) <= set(bench.PEERS)
    assert _choose_peers(None, list(bench.PEERS), installed, bench.ASKED_ONLY_PEERS) == [
        "numpy", "onnxruntime"]
    assert _choose_peers(["onnxruntime_gemm"], list(bench.PEERS), installed,
                         bench.ASKED_ONLY_PEERS) == ["onnxruntime_gemm"]
