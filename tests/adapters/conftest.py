"""Fixtures for framework-adapter tests: a started kernel on the sim core that records what it served.

The kernel runs its loop in a background thread (``kernel.start()``), as an
embedded kernel does under ``aios.patch``, so sync framework paths (LangChain's
``invoke``) and async ones (AutoGen, ``ainvoke``) both reach it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from adapters_testkit import RecordingKernel, fast_sim_core


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


# --------------------------------------------------------------------------- MetaGPT / Open-Interpreter
#
# Both frameworks act when they are imported, so the process is made hermetic here, before any test
# module imports them:
# * MetaGPT builds its global Config at import from config/config2.yaml under METAGPT_PROJECT_ROOT (else
#   the current directory) and ~/.metagpt/config2.yaml, and fails without an `llm` section; it also
#   writes its workspace/ under that root. It is pointed at a temporary root holding a placeholder
#   config (nothing is written to the user's home; tests pass their LLM config as Config objects).
# * litellm (Open-Interpreter's LLM layer) downloads its model cost map at import unless told not to.
# * Open-Interpreter sends telemetry from chat() unless disabled (tests also create instances with
#   disable_telemetry=True, and the adapter turns it off while patched).
import os as _os
import tempfile as _tempfile
from pathlib import Path as _Path

_METAGPT_ROOT = _Path(_tempfile.mkdtemp(prefix="aios-metagpt-root-"))
(_METAGPT_ROOT / "config").mkdir()
(_METAGPT_ROOT / "config" / "config2.yaml").write_text(
    "llm:\n  api_type: openai\n  model: gpt-4o-mini\n  api_key: sk-placeholder-never-sent\n  base_url: http://127.0.0.1:9/v1\n"
)
_os.environ["METAGPT_PROJECT_ROOT"] = str(_METAGPT_ROOT)
_os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
_os.environ["DISABLE_TELEMETRY"] = "true"

@pytest.fixture
def make_sim_kernel(tmp_path):
    """Build and start recording sim kernels with options (cores, confirm, managers, ...); all stopped at teardown."""
    started: list[RecordingKernel] = []

    def build(**options: Any) -> RecordingKernel:
        options.setdefault("cores", [fast_sim_core()])
        options.setdefault("data_dir", tmp_path / f"aios-data-{len(started)}")
        options.setdefault("entry_point_plugins", False)
        options.setdefault("auto_register_agents", True)
        kernel = RecordingKernel(**options).start()
        started.append(kernel)
        return kernel

    yield build
    for kernel in started:
        kernel.stop()


@pytest.fixture
def stub_openai():
    """An OpenAI-compatible endpoint on 127.0.0.1 (for frameworks running without AIOS)."""
    from openai_stub_server import StubOpenAI

    with StubOpenAI() as stub:
        yield stub

