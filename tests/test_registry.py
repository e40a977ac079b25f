"""The algorithm registry: a new algorithm is one module plus one registry entry."""

import pathlib

import numpy as np
import pytest
import toy_algorithm
from checks import assert_clear_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from naive import assert_close, conv2d_ref, to_hwio, to_nhwc
from strategies import DTYPES, LAYOUTS, conv_problems

import numbaconv
from numbaconv import _plan, algorithms


@pytest.fixture
def toy():
    """The toy algorithm registered for one test; the registry and the plans restored after."""
    algorithms.register(toy_algorithm.ALGORITHM)
    try:
        yield toy_algorithm.ALGORITHM
    finally:
        del algorithms.REGISTRY["toy_direct"]
        _plan.cache_clear()  # no plan of an algorithm that is gone


# One registration serves every example.
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prob=conv_problems(max_size=7), dtype=st.sampled_from(DTYPES),
       layout=st.sampled_from(LAYOUTS), with_bias=st.booleans(), seed=st.integers(0, 2**16))
def test_a_registered_toy_runs_through_conv2d_with(toy, prob, dtype, layout, with_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((prob["n"], prob["c"], prob["h"], prob["w"])).astype(dtype)
    w = rng.standard_normal((prob["o"], prob["c"] // prob["groups"], prob["kh"],
                             prob["kw"])).astype(dtype)
    b = rng.standard_normal(prob["o"]).astype(dtype) if with_bias else None
    kw = dict(stride=prob["stride"], padding=prob["padding"], dilation=prob["dilation"],
              groups=prob["groups"], padding_mode=prob["mode"], algorithm="toy_direct")
    if prob["mode"] != "zeros" and prob["n"]:  # the toy's unsupported() speaks for it
        assert_clear_error(lambda: numbaconv.conv2d_with(x, w, b, **kw), ValueError,
                           ["algorithm", "toy_direct", "padding_mode"])
        return
    if prob["mode"] != "zeros":  # an empty batch plans nothing, so nothing refuses it
        kw["padding_mode"] = "zeros"
    expected = conv2d_ref(x, w, b, prob["stride"], prob["pads"], prob["dilation"],
                          prob["groups"])
    if layout == "NCHW":
        got = numbaconv.conv2d_with(x, w, b, **kw)
    else:
        got = numbaconv.conv2d_with(to_nhwc(x), to_hwio(w), b, layout="NHWC", **kw)
        expected = to_nhwc(expected)
    assert got.dtype == dtype
    assert_close(got, expected, dtype)


def test_the_toy_is_a_known_algorithm_while_registered(toy):
    assert "toy_direct" in _plan.algorithm_names()
    x, w = np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32)
    plan = numbaconv.explain(x, w, padding=1, algorithm="toy_direct")
    assert plan.algorithm == "toy_direct" and "toy_direct" in str(plan)


def test_a_rule_makes_the_dispatcher_choose_it(toy):
    rules = (algorithms.Rule("toy_direct", "3x3 layers", lambda p: p.geometry.kh == 3,
                             "a test's rule"), *algorithms.RULES)
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    g = numbaconv._args.conv_geometry(x.shape, w.shape, numbaconv._args.NCHW, 1, 1, 1, 1,
                                      "zeros")
    assert _plan.get_plan(g, numbaconv._args.NCHW, np.float64, rules=rules).algorithm == \
        "toy_direct"
    assert _plan.get_plan(g, numbaconv._args.NCHW, np.float64).algorithm != "toy_direct"


def test_the_toy_is_gone_after_its_test():
    assert "toy_direct" not in algorithms.REGISTRY


def test_every_rule_names_its_entry_in_the_decisions():
    decisions = pathlib.Path(__file__).parents[1] / "docs" / "design" / "decisions.md"
    headings = {line[3:].strip() for line in decisions.read_text().splitlines()
                if line.startswith("## ")}
    for rule in (*algorithms.RULES, *algorithms.BACKWARD_RULES):
        assert rule.algorithm in algorithms.REGISTRY
        assert rule.why in headings, f"{rule.algorithm}: no heading {rule.why!r}"
    backward = {rule.algorithm for rule in algorithms.BACKWARD_RULES}
    assert all(algorithms.REGISTRY[name].has_gradients for name in backward)
