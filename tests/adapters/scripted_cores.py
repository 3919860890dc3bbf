"""Cores for adapter tests that need a particular answer: a scriptable sim core, and the embedded Gemma core.

The sim core's text is deterministic but lorem-like; a test that needs the model
to *do* something (write a given code block, call a tool with given arguments)
scripts that one answer and leaves every other request to the sim.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aios_core.cores.sim import SimCore, _pieces
from aios_core.syscalls import LLMRequest

Responder = Callable[[LLMRequest], "str | None"]


class ScriptedSimCore(SimCore):
    """The sim core, except that a test's ``responder(request)`` may choose the text of an answer.

    Everything else (batching, virtual step costs, streaming, tool-call parsing)
    is the sim core's. ``responder`` returns the text to generate, or None for
    the sim's own deterministic answer. A tool call is scripted as the text a
    local model writes: ``{"tool_calls": [{"name": ..., "arguments": {...}}]}``.
    """

    def __init__(self, responder: Responder, **options: Any) -> None:
        super().__init__(**{"t0": 0.0005, "a": 0.0, "b": 0.0, **options})
        self.responder = responder

    def _plan(self, request: LLMRequest) -> list[str]:
        text = self.responder(request)
        return super()._plan(request) if text is None else _pieces(text)


def gemma_core(**options: Any) -> Any:
    """The embedded llama.cpp core on Gemma 3 270M (tests marked ``model``).

    scripts/setup.sh installs llama-cpp-python and the model package, so a
    core that cannot be imported or a model file that cannot be found fails the
    test (it used to skip, which hid a broken install).
    """
    from aios_core.cores.llamacpp import LlamaCppCore
    from aios_core.cores.model_files import default_model_path

    default_model_path()
    return LlamaCppCore(**{"n_ctx": 4096, "max_batch": 4, "seed": 0, **options})
