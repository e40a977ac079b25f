"""Numba's on-disk kernel cache: reused by a new process, optional, and never fatal.

Each case runs a fresh Python on a copy of the package.  The read-only cases
put that copy (and, for the worst case, HOME) on a read-only bind mount made
inside a private mount namespace (``unshare -m``), so even root cannot write
there; they are skipped where that is not permitted.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import numbaconv

PROBE = textwrap.dedent("""
    import json, warnings
    import numpy as np
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        import numbaconv
        x = np.arange(2 * 3 * 6 * 5, dtype=np.float32).reshape(2, 3, 6, 5)
        w = np.ones((4, 3, 3, 3), np.float32)
        y = numbaconv.conv2d(x, w, padding=1)
    k = numbaconv.kernels.get("im2col", "NCHW", "float32").dispatcher
    print(json.dumps({
        "file": numbaconv.__file__,
        "sum": float(y.sum()),
        "cache_hits": sum(k.stats.cache_hits.values()),
        "cache_misses": sum(k.stats.cache_misses.values()),
        "warnings": [str(w.message) for w in caught],
    }))
""")


def _expected_sum():
    import numpy as np

    x = np.arange(2 * 3 * 6 * 5, dtype=np.float32).reshape(2, 3, 6, 5)
    return float(numbaconv.conv2d(x, np.ones((4, 3, 3, 3), np.float32), padding=1).sum())


@pytest.fixture
def site(tmp_path):
    """A private copy of the package, importable from tmp_path/site."""
    src = os.path.dirname(numbaconv.__file__)
    shutil.copytree(src, tmp_path / "site" / "numbaconv",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "home").mkdir()
    return tmp_path


def _env(site, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NUMBA_", "NUMBACONV_", "PYTHON"))}
    env.update(PYTHONPATH=str(site / "site"), HOME=str(site / "home"), **extra)
    return env


def _run(site, env, read_only=()):
    """Run the probe; ``read_only`` directories are bind-mounted read-only first."""
    cmd = [sys.executable, "-c", PROBE]
    if read_only:
        mounts = " && ".join(f"mount --bind {d} {d} && mount -o remount,bind,ro {d} {d}"
                             for d in read_only)
        cmd = ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$0" "$@"', *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                          cwd=str(site))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _can_mount_read_only(tmp_path) -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c",
         f"mount --bind {tmp_path} {tmp_path} && mount -o remount,bind,ro {tmp_path} {tmp_path}"
         f" && ! touch {tmp_path}/probe"], capture_output=True)
    return probe.returncode == 0


def test_second_process_loads_kernels_from_disk(site):
    first = _run(site, _env(site))
    second = _run(site, _env(site))
    assert first["file"].startswith(str(site / "site"))
    assert first["sum"] == second["sum"] == _expected_sum()
    assert first["cache_misses"] == 1 and first["cache_hits"] == 0
    assert second["cache_hits"] == 1 and second["cache_misses"] == 0


def test_env_var_turns_the_disk_cache_off(site):
    env = _env(site, NUMBACONV_CACHE="0")
    first, second = _run(site, env), _run(site, env)
    assert first["sum"] == second["sum"] == _expected_sum()
    assert second["cache_hits"] == 0
    cached = [f for _, _, files in os.walk(site) for f in files if f.endswith((".nbi", ".nbc"))]
    assert cached == []


def test_read_only_package_caches_under_home(site):
    if not _can_mount_read_only(site):
        pytest.skip("cannot make a read-only bind mount here")
    env = _env(site)
    first = _run(site, env, read_only=[site / "site"])
    second = _run(site, env, read_only=[site / "site"])
    assert first["sum"] == _expected_sum() and first["warnings"] == []
    assert second["cache_hits"] == 1
    assert not (site / "site" / "numbaconv" / "kernels" / "__pycache__").exists()
    assert any(f.endswith(".nbi") for _, _, files in os.walk(site / "home") for f in files)


def test_nothing_writable_still_works_with_a_warning(site):
    if not _can_mount_read_only(site):
        pytest.skip("cannot make a read-only bind mount here")
    result = _run(site, _env(site), read_only=[site / "site", site / "home"])
    assert result["sum"] == _expected_sum()
    assert any("no writable directory" in w for w in result["warnings"]), result["warnings"]


def test_kernels_known_to_load_slowly_stay_out_of_the_disk_cache():
    from numbaconv.kernels._registry import KERNELS

    assert not KERNELS["im2col", "NHWC"].disk_cache
    for (kind, layout), spec in KERNELS.items():
        dispatcher = numbaconv.kernels.get(kind, layout, "float64").dispatcher
        cached = dispatcher.stats.cache_path is not None
        assert cached == spec.disk_cache, (kind, layout)
