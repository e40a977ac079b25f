import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

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
