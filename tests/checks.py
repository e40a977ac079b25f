"""Assertions and optional peers shared by the test files."""

import importlib

import pytest


def assert_clear_error(call, exc, words):
    """``call()`` raises ``exc`` with a one-line message containing every word."""
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def optional(module: str):
    """The module if it is installed, else None (peers are optional extras)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


torch = optional("torch")
