"""The bench's comparison implementations agree with the reference too.

A benchmark that compares against a wrong baseline flags good results as
mismatches (or hides bad ones), so the baseline gets the same check.
"""

import numpy as np
import pytest
from naive import assert_close, conv2d_ref, to_hwio, to_nhwc

from numbaconv import bench

PROBLEMS = [
    bench.Layer("plain", 3, 9, 8, 5, 3, 1, 1),
    bench.Layer("strided", 4, 11, 11, 6, 3, 2, 0),
    bench.Layer("grouped-dilated", 6, 10, 9, 4, 3, 1, 2, dilation=2, groups=2),
    bench.Layer("depthwise", 4, 7, 7, 8, 3, 1, 1, groups=4),
]


@pytest.mark.parametrize("peer", bench.available_peers())
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("layer", PROBLEMS, ids=lambda layer: layer.name)
def test_peer_matches_reference(peer, layer, layout):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, layer.c, layer.h, layer.w))
    w = rng.standard_normal((layer.o, layer.c // layer.groups, layer.kernel, layer.kernel))
    p, s, d = layer.padding, layer.stride, layer.dilation
    ref = conv2d_ref(x, w, None, (s, s), (p,) * 4, (d, d), layer.groups)
    if layout == "NHWC":
        x, w, ref = to_nhwc(x), to_hwio(w), to_nhwc(ref)
    got = bench.PEERS[peer](layer, np.ascontiguousarray(x), np.ascontiguousarray(w), layout)()
    assert_close(got, ref, np.float64)
