"""The "without AIOS" backend for the embedded model: llama-cpp-python's own OpenAI-compatible server.

    python -m aios.bench.suites.agents.llama_server --model PATH --port 8000 --n_ctx 16384 --n_threads 1

This is what a framework user runs to point AutoGen / LangChain / MetaGPT /
Open-Interpreter at a local GGUF: ``python -m llama_cpp.server``. The server
serves one request at a time (requests queue on its lock); it does not batch.
Two settings are fixed here so that the comparison with the kernel's llamacpp
core is like for like, and nothing else is changed:

* the chat template: the default Gemma 3 270M GGUF carries none, and the server
  would fall back to the Llama-2 format; it gets the very renderer the core
  uses (:mod:`aios_core.cores.chat_template`), so both sides see the same
  prompt tokens;
* request fields: the server applies ``repeat_penalty=1.1`` unless a request
  says otherwise, which OpenAI clients never do; the benchmark samples plain
  greedy on both sides, so the default is 1.0. And it predates OpenAI's
  ``max_completion_tokens`` (what LangChain's ChatOpenAI sends): it would ignore
  the output limit and generate up to the context size, so that field is
  honoured as ``max_tokens``.
"""

from __future__ import annotations

import sys
from typing import Any

from aios_core.cores.chat_template import template_for_model
from aios_core.syscalls import Message

CHAT_FORMAT = "aios-template"


def _text(content: Any) -> str:
    """OpenAI message content: a string, or a list of parts of which the text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def register_template(architecture: str = "gemma3", bos_token: str = "<bos>", eos_token: str = "<eos>") -> None:
    """Register the core's chat template with llama-cpp-python under :data:`CHAT_FORMAT`."""
    from llama_cpp import llama_chat_format

    template = template_for_model(None, architecture, bos_token=bos_token, eos_token=eos_token)

    @llama_chat_format.register_chat_format(CHAT_FORMAT)
    def _format(messages: list[dict[str, Any]], **_: Any) -> llama_chat_format.ChatFormatterResponse:
        converted = []
        for m in messages:
            role = m.get("role", "user")
            if role not in ("system", "user", "assistant"):
                role = "user"  # tool / function results read as user turns, as the core's template does
            converted.append(Message(role=role, content=_text(m.get("content")) or " "))
        prompt = template.render(converted)
        # the rendered text already starts with the BOS text: do not add a second BOS token
        return llama_chat_format.ChatFormatterResponse(prompt=prompt, added_special=True)


def openai_compatible_requests() -> None:
    """Plain greedy unless asked otherwise, and ``max_completion_tokens`` read as ``max_tokens``.

    Must run before ``llama_cpp.server.app`` is imported: the app binds the
    request class when its routes are defined.
    """
    from typing import Optional

    from llama_cpp.server import types
    from pydantic import Field, model_validator

    class ChatRequest(types.CreateChatCompletionRequest):  # type: ignore[misc, valid-type]
        repeat_penalty: float = Field(default=1.0, ge=0.0)
        max_completion_tokens: Optional[int] = Field(default=None, exclude=True)

        @model_validator(mode="after")
        def _completion_tokens_limit(self) -> "ChatRequest":
            if self.max_tokens is None and self.max_completion_tokens is not None:
                self.max_tokens = self.max_completion_tokens
            return self

    class CompletionRequest(types.CreateCompletionRequest):  # type: ignore[misc, valid-type]
        repeat_penalty: float = Field(default=1.0, ge=0.0)

    types.CreateChatCompletionRequest = ChatRequest  # type: ignore[misc]
    types.CreateCompletionRequest = CompletionRequest  # type: ignore[misc]


def main(argv: list[str] | None = None) -> None:
    register_template()
    openai_compatible_requests()
    from llama_cpp.server.__main__ import main as server_main

    args = list(sys.argv[1:] if argv is None else argv)
    if "--chat_format" not in args:
        args += ["--chat_format", CHAT_FORMAT]
    sys.argv = ["llama_cpp.server", *args]
    server_main()


if __name__ == "__main__":
    main()
