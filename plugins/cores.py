"""Built-in LLM core kinds. Engines with heavy dependencies are imported only when a core of that kind is built."""

from __future__ import annotations

from typing import Any

from aios_core.components import CoreFactory
from aios_core.cores.base import LLMCore
from aios_core.hookspecs import hookimpl


def _sim(**options: Any) -> LLMCore:
    from aios_core.cores.sim import SimCore

    return SimCore(**options)


def _openai(**options: Any) -> LLMCore:
    from aios_core.cores.openai_core import OpenAICore

    return OpenAICore(**options)


def _transformers(**options: Any) -> LLMCore:
    from aios_core.cores.transformers_core import TransformersCore

    return TransformersCore(**options)


def _llamacpp(**options: Any) -> LLMCore:
    from aios_core.cores.llamacpp import LlamaCppCore

    return LlamaCppCore(**options)


@hookimpl
def aios_register_cores() -> list[CoreFactory]:
    return [
        CoreFactory(
            "llamacpp",
            _llamacpp,
            "embedded llama.cpp (default: Gemma 3 270M GGUF): continuous batching, KV snapshots, shared system-prompt prefixes",
        ),
        CoreFactory("sim", _sim, "virtual-clock engine: step cost t0 + a*prefill + b*batch; deterministic, for tests and studies"),
        CoreFactory("openai", _openai, "any OpenAI-compatible server (vLLM, SGLang, Ollama, llama-server, hosted APIs); one core per endpoint"),
        CoreFactory("transformers", _transformers, "a local Hugging Face transformers model (torch, GPU or CPU): batched decoding with a KV cache, exact KV snapshots"),
    ]
