"""The bench's comparison implementations agree with the reference too.

A benchmark that compares against a wrong baseline flags good results as
mismatches (or hides bad ones), so the baseline and every peer get the same
check.  Peers that are not installed are skipped; a peer that cannot run a
problem (ONNX Runtime has no float64 Conv) raises ``PeerUnsupported``.
"""

import importlib.util

import numpy as np
import pytest
from naive import assert_close, conv2d_ref, convnd_ref, to_hwio, to_last, to_nhwc, weight_to_last

from numbaconv import bench

PROBLEMS = [
    bench.Layer("plain", 3, 9, 8, 5, 3, 1, 1),
    bench.Layer("strided", 4, 11, 11, 6, 3, 2, 0),
    bench.Layer("grouped-dilated", 6, 10, 9, 4, 3, 1, 2, dilation=2, groups=2),
    bench.Layer("depthwise", 4, 7, 7, 8, 3, 1, 1, groups=4),
    bench.Layer("pointwise", 5, 6, 7, 3, 1),
]


PEER_PARAMS = [pytest.param(name, marks=pytest.mark.skipif(not peer.installed(),
                                                           reason=f"{name} is not installed"))
               for name, peer in bench.PEERS.items()]


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


ND_PROBLEMS = [
    bench.Layer("1d", 4, 1, 13, 6, 3, 2, 1, dilation=2, groups=2, rank=1),
    bench.Layer("3d", 4, 6, 5, 6, 3, 2, 1, d=4, groups=2, rank=3),
]


@pytest.mark.parametrize("peer", PEER_PARAMS)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("layer", ND_PROBLEMS, ids=lambda layer: layer.name)
def test_peer_matches_reference_in_1d_and_3d(peer, layer, layout):
    x, w = bench._rng_arrays(layer, 2, "NCHW", np.float32)
    r, p, s, d = layer.rank, layer.padding, layer.stride, layer.dilation
    ref = convnd_ref(x, w, None, (s,) * r, (p,) * (2 * r), (d,) * r, layer.groups)
    if layout == "NHWC":
        x, w, ref = to_last(x), weight_to_last(w), to_last(ref)
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    try:
        call = bench.PEERS[peer](layer, x, w, layout)
    except bench.PeerUnsupported as err:
        pytest.skip(str(err))
    assert_close(call(), ref, np.float32)


@pytest.mark.skipif(not bench.PEERS["onnxruntime"].installed(),
                    reason="onnxruntime is not installed")
@pytest.mark.parametrize("peer", ["onnxruntime", "onnxruntime_gemm"])
def test_onnxruntime_has_no_float64(peer):
    layer = PROBLEMS[0]
    x, w = bench._rng_arrays(layer, 1, "NCHW", np.float64)
    with pytest.raises(bench.PeerUnsupported, match="float64"):
        bench.PEERS[peer](layer, x, w, "NCHW")


def _fake(monkeypatch, name, modules=("numpy",), **kw):
    """Register a peer that computes with the NumPy baseline and needs ``modules``."""
    monkeypatch.setitem(bench.PEERS, name, bench.Peer(name, bench.PEERS["numpy"].setup, modules,
                                                      **kw))


def test_available_peers_are_the_installed_ones_in_registry_order():
    assert {"numpy", "torch", "onnxruntime", "jax", "onnxruntime_gemm"} <= set(bench.PEERS)
    installed = bench.available_peers()
    assert installed[0] == "numpy"  # the baseline needs nothing but NumPy
    assert installed == [name for name in bench.PEERS
                         if all(importlib.util.find_spec(m) for m in bench.PEERS[name].modules)]


def test_a_missing_module_makes_a_peer_unavailable(monkeypatch, capsys):
    _fake(monkeypatch, "needs_nothing_more")
    _fake(monkeypatch, "needs_a_missing_module", ("numpy", "no_such_module_for_numbaconv"))
    installed = bench.available_peers()
    assert installed[-1] == "needs_nothing_more" and "needs_a_missing_module" not in installed
    # Named, it is left out with a note; by default it is not chosen at all.
    assert bench.choose_peers(["needs_a_missing_module", "numpy"]) == ["numpy"]
    assert "needs_a_missing_module is not installed" in capsys.readouterr().err
    assert "needs_a_missing_module" not in bench.choose_peers(None)


def test_asked_only_peers_run_only_when_named(monkeypatch):
    _fake(monkeypatch, "diagnostic", asked_only=True)
    default = bench.choose_peers(None)
    assert "numpy" in default and "diagnostic" not in default
    assert [name for name, peer in bench.PEERS.items() if peer.asked_only] == [
        "onnxruntime_gemm", "diagnostic"]
    assert "onnxruntime_gemm" not in default
    assert bench.choose_peers(["diagnostic", "numpy", "diagnostic"]) == ["diagnostic", "numpy"]


def test_an_unknown_peer_is_an_error_naming_the_known_ones():
    with pytest.raises(ValueError, match="--compare: unknown peer 'mxnet'; known: numpy, torch"):
        bench.choose_peers(["mxnet"])


def test_a_peer_is_called_like_its_setup():
    layer = PROBLEMS[0]
    x, w = bench._rng_arrays(layer, 1, "NHWC", np.float64)
    peer = bench.PEERS["numpy"]
    np.testing.assert_array_equal(peer(layer, x, w, "NHWC")(),
                                  peer.setup(layer, x, w, "NHWC", threads=1)())
