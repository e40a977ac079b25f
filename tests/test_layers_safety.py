"""Every threading layer: processes forked or spawned after the parent used numbaconv,
and Python threads calling it at once.

Each case runs ``layer_scenarios.py`` in a fresh interpreter under one
threading layer, so a child killed by OpenMP, or an aborted process, fails
the test (with a timeout) instead of taking the suite down.
"""

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from checks import torch

SCRIPT = Path(__file__).with_name("layer_scenarios.py")
LAYERS = ["default", "tbb", "omp", "workqueue"]


@functools.cache
def layer_loads(layer: str) -> bool:
    """Can Numba load this threading layer here (TBB and OpenMP are optional)?"""
    if layer == "default":
        return True
    code = ("import numba, numpy as np\n"
            "@numba.njit(parallel=True)\n"
            "def f(a):\n"
            "    for i in numba.prange(a.size): a[i] = i\n"
            "f(np.zeros(4)); print(numba.threading_layer())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "NUMBA_THREADING_LAYER": layer}, timeout=120)
    return proc.returncode == 0 and proc.stdout.strip() == layer


def run_scenario(scenario: str, layer: str) -> list[str]:
    env = dict(os.environ)
    env.pop("NUMBA_THREADING_LAYER", None)
    if layer != "default":
        env["NUMBA_THREADING_LAYER"] = layer
    proc = subprocess.run([sys.executable, str(SCRIPT), scenario], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout.split()


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("scenario", ["pool", "os_fork", "spawn", "threads"])
def test_children_and_threads_get_the_main_threads_results(scenario, layer):
    # "threads": 8 threads mixing forward, backward and transposed calls must
    # match the results computed one at a time bit for bit.
    if not layer_loads(layer):
        pytest.skip(f"Numba's {layer} layer does not load here")
    used, difference = run_scenario(scenario, layer)
    if layer != "default":
        assert used == layer
    assert float(difference) == 0.0


@pytest.mark.parametrize("layer", ["workqueue", "omp"])
def test_fork_while_another_thread_runs_kernels(layer):
    # The child must not inherit numbaconv's locks held by a thread it lacks
    # (20 forks).  TBB is left out: Numba's TBB pool itself cannot fork during
    # a parallel region of another thread (docs/threads.md).
    if not layer_loads(layer):
        pytest.skip(f"Numba's {layer} layer does not load here")
    used, difference = run_scenario("fork_busy", layer)
    assert used == layer and float(difference) == 0.0


@pytest.mark.skipif(torch is None, reason="PyTorch not installed")
@pytest.mark.parametrize("layer", ["default", "omp"])
def test_dataloader_fork_workers(layer):
    if not layer_loads(layer):
        pytest.skip(f"Numba's {layer} layer does not load here")
    assert float(run_scenario("dataloader", layer)[1]) == 0.0


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                    reason="the tbb dependency is for x86-64")
def test_the_default_layer_is_tbb_where_it_is_a_dependency():
    # pyproject's tbb marker: x86-64 installs get the fork-safe layer by default.
    assert run_scenario("os_fork", "default")[0] == "tbb"
