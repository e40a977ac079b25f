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
    import json, sys, warnings
    import numpy as np
    warnings.simplefilter("always")
    algorithm = sys.argv[1] if len(sys.argv) > 1 else "im2col_gemm"
    with warnings.catch_warnings(record=True) as caught:
        import numbaconv
        x = np.arange(2 * 3 * 6 * 5, dtype=np.float32).reshape(2, 3, 6, 5)
        w = np.ones((4, 3, 3, 3), np.float32)
        y = numbaconv.conv2d_with(x, w, padding=1, algorithm=algorithm)
    if algorithm == "im2col_gemm":
        k = numbaconv.kernels.get("im2col", "NCHW", "float32").dispatcher
    else:  # a kernel compiled per ISA variant
        k = numbaconv.kernels.get("indirect_gemm", "ANY", "float32").dispatcher
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


def _run(site, env, read_only=(), algorithm="im2col_gemm"):
    """Run the probe; ``read_only`` directories are bind-mounted read-only first."""
    cmd = [sys.executable, "-c", PROBE, algorithm]
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


def _cache_files(site, suffix):
    return [os.path.join(d, f) for d, _, files in os.walk(site / "site") for f in files
            if f.endswith(suffix)]


def test_two_processes_compiling_into_one_empty_cache(site):
    # Numba writes each cache file to a temporary name, then renames it.
    env = _env(site)
    procs = [subprocess.Popen([sys.executable, "-c", PROBE], env=env, cwd=str(site),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["sum"] == _expected_sum() and result["warnings"] == []
    third = _run(site, env)
    assert third["sum"] == _expected_sum() and third["cache_hits"] == 1


@pytest.mark.parametrize("damage", ["truncated data", "garbage data", "truncated index"])
def test_a_damaged_cache_file_is_recompiled_and_rewritten(site, damage):
    env = _env(site)
    _run(site, env)
    suffix = ".nbi" if damage == "truncated index" else ".nbc"
    files = _cache_files(site, suffix)
    assert files
    for path in files:
        with open(path, "r+b") as f:
            if damage == "garbage data":
                f.write(os.urandom(64))
            else:
                f.truncate(20)
    damaged = _run(site, env)
    assert damaged["sum"] == _expected_sum()
    assert len(damaged["warnings"]) == 1 and "compiled again" in damaged["warnings"][0]
    healed = _run(site, env)
    assert healed["sum"] == _expected_sum() and healed["warnings"] == []
    assert healed["cache_hits"] == 1


def test_another_numba_version_is_never_loaded(site):
    import pickle

    env = _env(site)
    _run(site, env)
    for path in _cache_files(site, ".nbi"):  # the index starts with the Numba version
        with open(path, "rb") as f:
            version = pickle.load(f)
            rest = f.read()
        with open(path, "wb") as f:
            pickle.dump("0.0.0-" + version, f)
            f.write(rest)
    other = _run(site, env)
    assert other["sum"] == _expected_sum()
    assert other["cache_hits"] == 0 and other["cache_misses"] == 1


def test_another_isa_variant_is_never_loaded(site):
    from numbaconv import machine

    if len(machine.runnable()) < 2:
        pytest.skip("this CPU runs one variant")
    first, second = machine.runnable()[:2]
    runs = [_run(site, _env(site, NUMBACONV_ISA=isa), algorithm="indirect_gemm")
            for isa in (first, second, first)]
    assert [r["sum"] for r in runs] == [_expected_sum()] * 3
    assert [r["cache_misses"] for r in runs] == [1, 1, 0]  # each variant its own entry
    assert runs[2]["cache_hits"] == 1


KERNELS_SOURCE = textwrap.dedent("""
    def fill(a):
        for i in range(a.size):
            a[i] = i

    def untypable(a):
        a[0] = "a string"
""")


@pytest.fixture
def cached_module(tmp_path, monkeypatch):
    """A module of small kernels, cached under tmp_path; dropping a cache index fails."""
    import importlib

    from numba.core.caching import Cache

    def no_flush(self):
        raise AssertionError("the index of a readable cache must be kept")

    (tmp_path / "cached_kernels.py").write_text(KERNELS_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))  # its cache: tmp_path/__pycache__
    monkeypatch.setattr(numbaconv.config, "disk_cache", True)
    monkeypatch.setattr(Cache, "flush", no_flush)
    sys.modules.pop("cached_kernels", None)
    yield importlib.import_module("cached_kernels")
    sys.modules.pop("cached_kernels", None)


def test_a_compile_error_is_not_taken_for_a_damaged_cache(cached_module, recwarn):
    import numba

    from numbaconv.kernels._factory import _compile

    with pytest.raises(numba.core.errors.TypingError):
        _compile(cached_module.untypable, "void(float64[::1])", parallel=False)
    assert not [w for w in recwarn if "numbaconv" in str(w.message)]


def test_a_failed_save_keeps_the_compiled_kernel(cached_module, monkeypatch):
    import numpy as np
    from numba.core.caching import Cache

    from numbaconv.kernels._factory import _compile

    def full_disk(self, sig, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Cache, "save_overload", full_disk)
    with pytest.warns(RuntimeWarning, match="could not be written to the disk cache"):
        kernel = _compile(cached_module.fill, "void(float64[::1])", parallel=False)
    a = np.zeros(4)
    kernel(a)
    assert a.tolist() == [0, 1, 2, 3]
