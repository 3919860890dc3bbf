"""Fixtures and markers of the core tests (tests/cores is on sys.path, so helpers import by name)."""

from __future__ import annotations


def pytest_configure(config):
    # the lead owns pyproject.toml; until "slow" is listed there, register it here
    config.addinivalue_line("markers", "slow: takes tens of seconds (e.g. dequantizing a GGUF into torch)")
