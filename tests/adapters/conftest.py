"""Fixtures for framework-adapter tests: a started kernel on the sim core that records what it served.

The kernel runs its loop in a background thread (``kernel.start()``), as an
embedded kernel does under ``aios.patch``, so sync framework paths (LangChain's
``invoke``) and async ones (AutoGen, ``ainvoke``) both reach it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from adapters_testkit import RecordingKernel


@pytest.fixture
def sim_kernel(tmp_path) -> Iterator[RecordingKernel]:
    """A started kernel on a fast sim core, agents registered on first use, no third-party plugins."""
    kernel = RecordingKernel(
        cores=[fast_sim_core()], data_dir=tmp_path / "aios-data", entry_point_plugins=False, auto_register_agents=True
    ).start()
    try:
        yield kernel
    finally:
        kernel.stop()
