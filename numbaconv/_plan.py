"""The dispatcher: from a problem signature to a plan, and its caches.

A *plan* says how one conv2d problem runs: the algorithm, the GEMM shape,
how the work is chunked to stay under ``config.max_workspace_bytes``, and
the algorithm's own tile.  The algorithms and the rules that choose among
them live in ``numbaconv.algorithms``.  Plans are cached by problem
signature (layout, dtype, geometry, workspace bound, threads, ISA
variant); compiled kernels are cached by the kernel factory by (kind,
layout, dtype, ISA variant).  A repeated call re-plans nothing and
compiles nothing, which ``cache_info()`` shows.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from . import config, kernels, machine
from ._args import Geometry, Layout, shown
from .algorithms import BACKWARD_RULES, REGISTRY, RULES, Plan, Problem, choose_rule, reason

__all__ = ["CacheInfo", "Plan", "backward_plan", "cache_clear", "cache_info", "get_plan",
           "make_plan", "plan_call"]


def algorithm_names() -> list[str]:
    """The registered algorithms, in registration order (``algorithm=`` takes these)."""
    return list(REGISTRY)


def problem_of(g: Geometry, layout: Layout, dtype, prepacked: bool = False) -> Problem:
    """The problem as the planners see it, in this thread's machine context."""
    # One variant for the whole plan, recorded in it.
    return Problem(g, layout, np.dtype(dtype), machine.variant(), numba.get_num_threads(),
                   config.max_workspace_bytes, prepacked)


def make_plan(g: Geometry, layout: Layout, dtype: np.dtype, algorithm: str = "auto",
              prepacked: bool = False, rules=RULES) -> Plan:
    """Build (uncached) the plan for one problem; ``algorithm`` may force one.

    ``prepacked``: the weight comes as a ``PackedWeight`` whose panels
    indirect_gemm can use (the same layout, groups and dtype).
    """
    problem = problem_of(g, layout, dtype, prepacked)
    if isinstance(algorithm, str) and algorithm == "auto":
        rule = choose_rule(problem, rules)
        algorithm, why = rule.algorithm, reason(rule, rules)
    elif not isinstance(algorithm, str) or algorithm not in REGISTRY:
        raise ValueError(f"algorithm: expected 'auto' or one of {algorithm_names()}, got "
                         f"{shown(algorithm)}")
    else:
        why = f"forced: algorithm={algorithm!r}"
    why_not = REGISTRY[algorithm].unsupported(problem)
    if why_not is not None:
        raise ValueError(f"algorithm: {algorithm!r} {why_not}")
    return dataclasses.replace(REGISTRY[algorithm].plan(problem), reason=why)


# --------------------------------------------------------------------------
# The plan cache
# --------------------------------------------------------------------------
_plans: dict = {}
_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def _new_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the parent's may be held by a thread the child lacks


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_new_lock_in_child)


def _settings() -> tuple:
    """Everything outside the problem that a plan depends on: part of every cache key."""
    return (config.max_workspace_bytes, config.gemm_batch_below, config.winograd,
            numba.get_num_threads(), machine.variant())


def get_plan(g: Geometry, layout: Layout, dtype: np.dtype, algorithm: str = "auto",
             prepacked: bool = False, rules=RULES) -> Plan:
    """The cached plan for this problem signature; built on the first call."""
    if not isinstance(algorithm, str):  # the key must hash; make_plan words the error
        return make_plan(g, layout, dtype, algorithm, prepacked, rules)
    key = (layout.name, np.dtype(dtype).name, g, algorithm, prepacked, rules, *_settings())
    with _lock:
        plan = _plans.get(key)
        if plan is not None:
            _stats["hits"] += 1
            return plan
        _stats["misses"] += 1
    plan = make_plan(g, layout, dtype, algorithm, prepacked, rules)
    with _lock:
        return _plans.setdefault(key, plan)


def backward_plan(g: Geometry, layout: Layout, dtype) -> Plan:
    """The plan whose algorithm computes this problem's gradients (``BACKWARD_RULES``)."""
    return get_plan(g, layout, dtype, rules=BACKWARD_RULES)


# conv2d's calls by their raw signature (shapes, dtypes, hyper-parameters),
# to (geometry, dtype, plan): a repeated call skips validating and planning,
# 25-30 us of conv2d's ~70 us of Python per call (a network of small layers
# makes many).  Only signatures of plain ints, strs and tuples are kept (see
# conv.py), so that an argument that validates differently (True for 1, 1.0)
# never meets a cached entry.  Bounded: cleared when it grows past
# _CALLS_MAX entries.
_calls: dict = {}
_CALLS_MAX = 4096


def plan_call(signature: tuple, build: Callable[[], tuple]) -> tuple:
    """``build()`` (validate and plan a conv2d call), cached by the call's ``signature``."""
    key = (signature, *_settings())
    with _lock:
        hit = _calls.get(key)
        if hit is not None:
            if hit[2] is not None:
                _stats["hits"] += 1  # as get_plan would have counted it
            return hit
    result = build()  # raises for bad arguments: nothing is cached then
    with _lock:
        if len(_calls) >= _CALLS_MAX:
            _calls.clear()
        _calls[key] = result
    return result


@dataclass(frozen=True)
class CacheInfo:
    """Hits and misses of the plan cache and of the compiled-kernel cache."""

    plan_hits: int
    plan_misses: int
    plan_size: int
    kernel_hits: int
    kernel_misses: int
    kernel_size: int


def cache_info() -> CacheInfo:
    """Plan and kernel cache statistics for this process.

    Examples
    --------
    >>> import numpy as np, numbaconv
    >>> numbaconv.cache_clear()
    >>> x = np.ones((1, 2, 5, 5), np.float32); w = np.ones((3, 2, 3, 3), np.float32)
    >>> _ = numbaconv.conv2d(x, w); _ = numbaconv.conv2d(x, w)
    >>> info = numbaconv.cache_info()
    >>> (info.plan_misses, info.plan_hits)
    (1, 1)
    """
    k = kernels.kernel_cache_info()
    with _lock:
        return CacheInfo(_stats["hits"], _stats["misses"], len(_plans), k.hits, k.misses,
                         k.currsize)


def cache_clear() -> None:
    """Forget every plan and compiled kernel (Numba's disk cache stays)."""
    with _lock:
        _plans.clear()
        _calls.clear()
        _stats.update(hits=0, misses=0)
    kernels.cache_clear()
