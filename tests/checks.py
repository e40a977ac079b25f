"""Assertions and optional peers shared by the test files."""

import csv
import importlib
import json
from pathlib import Path

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


def write_suite(tmp_path, layers) -> str:
    """A ``bench --suite`` JSON file of ``layers`` in ``tmp_path``; its path."""
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(layers))
    return str(path)


def bench_csv(path) -> tuple[list[str], list[dict]]:
    """The ``#`` header lines and the rows of a ``bench --csv`` file."""
    text = Path(path).read_text().splitlines()
    header = [line for line in text if line.startswith("#")]
    return header, list(csv.DictReader(line for line in text if not line.startswith("#")))
