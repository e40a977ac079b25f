import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from numbaconv import machine

settings.register_profile(
    "default", max_examples=int(os.environ.get("NUMBACONV_HYPOTHESIS_EXAMPLES", "120")),
    deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def restore_config():
    import numbaconv

    yield numbaconv.config
    numbaconv.config.reset()


@pytest.fixture(scope="module", params=machine.runnable())
def isa(request):
    """Every ISA variant this host can run, in turn: the register-tiled kernels' tests."""
    before = machine.set_variant(request.param)
    yield request.param
    machine.set_variant(before)


@pytest.fixture
def zen3_avx2(monkeypatch):
    """The machine context the planning rules were first tuned on: AVX2, L1d 32 KiB, L2 512 KiB.

    For tests of planning arithmetic only (nothing runs), so on any host.
    """
    monkeypatch.setattr(machine, "_current", "avx2")
    monkeypatch.setattr(machine, "cache_sizes", lambda: (32 << 10, 512 << 10))
    machine.blocks.cache_clear()
    yield
    machine.blocks.cache_clear()
