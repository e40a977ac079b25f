"""The machine context: ISA variants, their register tiles, detection, override, cache blocks."""

import os
import pickle
import re
import subprocess
import sys

import numba
import numpy as np
import pytest

import numbaconv
from numbaconv import kernels, machine
from numbaconv.kernels.registers import microkernel, microkernel_indirect, numba_type

AVX512 = frozenset({"avx512f", "avx2", "fma", "sse4.2"})
AVX2 = frozenset({"avx2", "fma", "sse4.2"})


@pytest.mark.parametrize("name", sorted(machine.VARIANTS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_tile_fits_its_register_file(name, dtype):
    t = machine.register_tile(name, dtype)
    v = machine.VARIANTS[name]
    assert t.nr == t.nv * t.vw and t.nr == 1 << t.lg  # panel indices by shifts
    # Accumulators, one row of B and a broadcast, in vector registers.
    assert t.mr * t.nv + t.nv + 1 <= v.registers
    assert t.vw * np.dtype(dtype).itemsize * 8 == max(v.vector_bits, 8 * np.dtype(dtype).itemsize)


def test_avx512_tile_leaves_room_for_every_broadcast():
    # LLVM hoists a K step's MR broadcasts above its FMAs (decisions.md):
    # with 12 rows they spilled, so the AVX-512 tile must fit them all.
    t = machine.register_tile("avx512", "float32")
    assert t.mr * t.nv + t.nv + t.mr <= machine.VARIANTS["avx512"].registers


@pytest.mark.parametrize(("features", "arch", "best", "runs"), [
    (AVX512, "x86", "avx512", ("avx512", "avx2", "neon", "generic")),
    (AVX2, "x86", "avx2", ("avx2", "neon", "generic")),
    (frozenset({"avx512f"}), "x86", "generic", ("neon", "generic")),  # no FMA: no AVX tile
    (frozenset({"sse4.2"}), "x86", "generic", ("neon", "generic")),
    (frozenset({"neon", "fp-armv8"}), "arm", "neon", ("neon", "generic")),
    (frozenset(), "other", "generic", ("neon", "generic")),
])
def test_detection_reads_features_not_names(features, arch, best, runs):
    assert machine.detect(features, arch) == best
    assert machine.runnable(features, arch) == runs


def test_numba_cpu_features_decide(monkeypatch):
    # Numba compiles for NUMBA_CPU_FEATURES when it is set: so do we.
    from numba.core import config as numba_config

    monkeypatch.setattr(numba_config, "CPU_FEATURES", "+avx2,+fma,-avx512f")
    machine.host_features.cache_clear()
    try:
        features = machine.host_features()
        assert {"avx2", "fma"} <= features and "avx512f" not in features
        if machine._arch() == "x86":
            assert machine.detect() == "avx2"
    finally:
        monkeypatch.undo()
        machine.host_features.cache_clear()


def _run(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_numbaconv_isa_forces_a_variant_in_info_and_explain():
    code = ("import numbaconv, numbaconv.bench as b; print(b.machine_info()['isa']); "
            "print(numbaconv.explain((1, 64, 56, 56), (64, 64, 3, 3), padding=1))")
    out = _run(code, NUMBACONV_ISA="generic")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("generic (scalar fallback): tile 4x4 float32")
    assert "tile   generic 4x4 float32" in out.stdout


@pytest.mark.parametrize(("value", "words"), [
    ("bogus", ["NUMBACONV_ISA", "'bogus'", "avx2", "generic"]),
    ("avx512" if "avx512" not in machine.runnable() else "", ["NUMBACONV_ISA", "cannot run"]),
])
def test_bad_numbaconv_isa_is_a_clear_error(value, words, monkeypatch):
    if not value:
        pytest.skip("this host runs every x86 variant")
    monkeypatch.setenv("NUMBACONV_ISA", value)
    monkeypatch.setattr(machine, "_current", None)
    with pytest.raises(ValueError) as err:
        machine.variant()
    for word in words:
        assert word in str(err.value)


def test_set_variant_refuses_what_the_host_cannot_run():
    other = next((v for v in machine.VARIANTS if v not in machine.runnable()), None)
    if other is None:
        pytest.skip("this host runs every variant")
    with pytest.raises(ValueError, match="isa"):
        machine.set_variant(other)


def test_plans_and_kernels_are_cached_per_variant(rng):
    x = rng.standard_normal((1, 16, 9, 9)).astype(np.float32)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    plans, results = {}, {}
    before = machine.variant()
    try:
        for name in machine.runnable():
            machine.set_variant(name)
            plans[name] = numbaconv.explain(x, w, padding=1, algorithm="indirect_gemm")
            results[name] = numbaconv.conv2d_with(x, w, padding=1, algorithm="indirect_gemm")
            assert kernels.get("indirect_gemm", "ANY", "float32").tile.isa == name
    finally:
        machine.set_variant(before)
    assert {p.isa for p in plans.values()} == set(machine.runnable())
    assert len({str(p.register_tile) for p in plans.values()}) == len(plans)
    first = next(iter(results.values()))
    for y in results.values():
        np.testing.assert_allclose(y, first, rtol=1e-5, atol=1e-5)


def test_the_tile_type_names_the_variant_and_pickles():
    # Numba's disk cache keys (and pickles) the signature: every variant its own entry.
    names = {numba_type(machine.register_tile(v, "float32")).name for v in machine.VARIANTS}
    assert len(names) == len(machine.VARIANTS)
    t = numba_type(machine.register_tile("avx2", "float64"))
    assert pickle.loads(pickle.dumps(t)) == t
    # Once the factory has attached the type to its tile (the dispatcher's fast
    # path), the pair refers to itself; the index must still unpickle.
    kernel = kernels.get("pointwise_gemm", "ANY", "float64", machine.variant())
    typ = kernel.tile._numba_type_
    again = pickle.loads(pickle.dumps((typ,)))[0]
    assert again == typ and again.tile == kernel.tile


def test_cache_blocks_come_from_the_caches(monkeypatch):
    monkeypatch.setattr(machine, "cache_sizes", lambda: (32 << 10, 512 << 10))
    machine.blocks.cache_clear()
    try:
        # Half of a 32 KiB L1 holds 256 rows of a 64-byte panel: the K block the
        # AVX2 kernels were tuned with; AVX-512's 128-byte rows get half as many.
        assert machine.blocks(machine.register_tile("avx2", "float32")).kc == 256
        assert machine.blocks(machine.register_tile("avx2", "float64")).kc == 256
        assert machine.blocks(machine.register_tile("avx512", "float32")).kc == 128
        assert machine.blocks(machine.register_tile("avx2", "float32")).l2_share == 128 << 10
        # A larger L1 grows the block only up to KC_MAX (A's share grows with it).
        monkeypatch.setattr(machine, "cache_sizes", lambda: (48 << 10, 2 << 20))
        machine.blocks.cache_clear()
        assert machine.blocks(machine.register_tile("avx2", "float32")).kc == machine.KC_MAX
        assert machine.blocks(machine.register_tile("avx512", "float32")).kc == 192
    finally:
        machine.blocks.cache_clear()
    l1, l2 = machine.cache_sizes()
    assert 4 << 10 <= l1 < l2


def _tile_asm(name: str, dtype: str, indirect: bool) -> str:
    """Assembly of a function that runs one register tile of variant ``name``."""
    if indirect:
        @numba.njit(cache=False)
        def run(tile, a, rows, koff, b, c):
            microkernel_indirect(tile, koff.size, a, rows, 0, koff, 0, b, 0, c, 0, tile.nr)
    else:
        @numba.njit(cache=False)
        def run(tile, a, rows, koff, b, c):
            microkernel(tile, koff.size, a, 0, koff.size, b, 0, tile.nr, c, 0, tile.nr)

    t = machine.register_tile(name, dtype)
    k = 37
    a = np.ones(t.mr * k, dtype)
    b = np.ones(k * t.nr, dtype)
    c = np.zeros(t.mr * t.nr, dtype)
    run(t, a, np.arange(t.mr) * k, np.arange(k), b, c)
    np.testing.assert_array_equal(c, k)  # every accumulator summed its k products
    return run.inspect_asm(run.signatures[0])


@pytest.mark.parametrize("indirect", [False, True], ids=["microkernel", "indirect"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_avx512_tile_is_zmm_code_without_spills(indirect, dtype):
    if "avx512" not in machine.runnable():
        pytest.skip("this host has no AVX-512")
    asm = _tile_asm("avx512", dtype, indirect)
    suffix = "ps" if dtype == "float32" else "pd"
    fmas = re.findall(rf"vfmadd\w*{suffix}\s+[^\n]*%zmm", asm)
    t = machine.register_tile("avx512", dtype)
    assert len(fmas) >= t.mr * t.nv
    assert not re.search(r"%zmm\d+, -?\d*\(%rsp\)", asm), "a zmm accumulator spilled"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_avx2_tile_is_ymm_code(dtype):
    if "avx2" not in machine.runnable():
        pytest.skip("this host has no AVX2")
    asm = _tile_asm("avx2", dtype, indirect=False)
    suffix = "ps" if dtype == "float32" else "pd"
    assert re.search(rf"vfmadd\w*{suffix}\s+[^\n]*%ymm", asm)
    assert not re.search(rf"vfmadd\w*{suffix}\s+[^\n]*%zmm", asm)


@pytest.mark.parametrize("name", machine.runnable())
def test_every_runnable_tile_sums_right(name):
    for dtype in ("float32", "float64"):
        _tile_asm(name, dtype, indirect=True)  # asserts the sums


def test_the_tile_type_changes_with_the_kernel_sources(monkeypatch):
    # Numba's disk cache checks a kernel's own file only; the digest of every
    # kernel source in the signature keeps an edited helper from a stale kernel.
    from numbaconv.kernels import registers

    tile = machine.register_tile("generic", "float32")
    before = numba_type(tile).name
    monkeypatch.setattr(registers, "_SOURCE_TAG", "0" * 12)
    assert numba_type(tile).name != before and "0" * 12 in numba_type(tile).name


def test_a_weight_packed_under_another_variant_runs_as_a_plain_weight(rng):
    # The call cache keys a PackedWeight by the variant that cut its panels:
    # the same shapes packed under another variant must not reuse a
    # "prepacked" plan (that raised), nor the reverse (that repacked).
    names = machine.runnable()[:2]
    x = rng.standard_normal((1, 14, 14, 64)).astype(np.float32)
    w = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    want = numbaconv.conv2d(x, w, padding=1, layout="NHWC")
    before = machine.set_variant(names[0])
    try:
        here = numbaconv.pack_weight(w, layout="NHWC")
        machine.set_variant(names[1])
        other = numbaconv.pack_weight(w, layout="NHWC")
        machine.set_variant(names[0])
        for packed in (here, other, here):
            got = numbaconv.conv2d_with(x, packed, padding=1, layout="NHWC",
                                        algorithm="indirect_gemm")
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        plan = numbaconv.explain(x, other, padding=1, layout="NHWC", algorithm="indirect_gemm")
        assert not plan.prepacked and other.isa == names[1]
        assert numbaconv.explain(x, here, padding=1, layout="NHWC",
                                 algorithm="indirect_gemm").prepacked
    finally:
        machine.set_variant(before)


def test_numba_cpu_features_modify_the_host_features(monkeypatch):
    from numba.core import config as numba_config

    host = machine.host_features()
    try:
        monkeypatch.setattr(numba_config, "CPU_FEATURES", "-avx512f,+somefeature")
        machine.host_features.cache_clear()
        assert machine.host_features() == (host - {"avx512f"}) | {"somefeature"}
        # Another CPU named: its own features are unknown, only the listed count.
        monkeypatch.setattr(numba_config, "CPU_NAME", "skylake")
        machine.host_features.cache_clear()
        assert machine.host_features() == {"somefeature"}
    finally:
        monkeypatch.undo()
        machine.host_features.cache_clear()


def test_set_variant_overrides_a_bad_environment_value(monkeypatch):
    monkeypatch.setenv("NUMBACONV_ISA", "bogus")
    monkeypatch.setattr(machine, "_current", None)
    with pytest.raises(ValueError, match="NUMBACONV_ISA"):
        machine.variant()
    assert machine.set_variant("generic") is None
    assert machine.variant() == "generic"
