"""The Open-Interpreter agent: an ``OpenInterpreter`` session pointed at a local OpenAI-compatible server.

What an Open-Interpreter user writes to run unattended on a local model::

    oi = OpenInterpreter(auto_run=True, offline=True, disable_telemetry=True)
    oi.llm.model = "openai/<model>"; oi.llm.api_base = url; oi.llm.api_key = "..."
    oi.llm.temperature = 0; oi.llm.max_tokens = N; oi.llm.context_window = n_ctx
    messages = oi.chat(text, display=False)

OI keeps the conversation, runs the code blocks the model writes (in its own
Jupyter kernel without AIOS; as sandboxed tool syscalls with AIOS, where
``aios.patch("open-interpreter", kernel)`` also answers its LLM calls) and
feeds their output back to the model until it stops writing code. The reply
returned to the episode is the session's new messages as text, code blocks
fenced. OI is synchronous: each agent runs in its own worker thread.
"""

from __future__ import annotations

from typing import Any

from aios.bench.suites.agents.base import AgentSpec, Framework, FrameworkUnavailable
from aios.bench.suites.agents.metagpt_agent import offline_tokenizers


def messages_as_text(messages: list[dict[str, Any]]) -> str:
    """OI's message list as one reply: text as is, code fenced, console output left out (it is OI's, not the model's)."""
    parts = []
    for m in messages:
        if m.get("role") != "assistant":
            continue
        content = str(m.get("content") or "")
        if m.get("type") == "code":
            parts.append(f"```{m.get('format') or 'python'}\n{content}\n```")
        elif m.get("type") == "message":
            parts.append(content)
    return "\n".join(parts)


class _InterpreterAgent:
    def __init__(self, spec: AgentSpec, context_window: int) -> None:
        from interpreter import OpenInterpreter

        s = spec.sampling
        oi = OpenInterpreter(disable_telemetry=True, auto_run=True, offline=True, conversation_history=False)
        oi.name = spec.name
        oi.llm.model = f"openai/{spec.endpoint.model}"
        oi.llm.api_base = spec.endpoint.base_url
        oi.llm.api_key = spec.endpoint.api_key
        oi.llm.temperature = s.temperature
        oi.llm.max_tokens = s.max_tokens
        oi.llm.context_window = context_window
        oi.llm.supports_functions = False
        oi.llm.supports_vision = False
        if spec.system:
            oi.custom_instructions = spec.system
        self.oi = oi

    def send(self, text: str) -> str:
        return messages_as_text(self.oi.chat(text, display=False, stream=False))

    def close(self) -> None:
        try:
            self.oi.computer.terminate()
        except Exception:  # noqa: BLE001 - a kernel that never started has nothing to stop
            pass


class InterpreterFramework(Framework):
    name = "open-interpreter"
    adapter = "open-interpreter"
    threaded = True

    def __init__(self, context_window: int = 8192) -> None:
        self.context_window = context_window

    def check_available(self) -> None:
        offline_tokenizers()
        try:
            import interpreter  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            raise FrameworkUnavailable(f"Open-Interpreter cannot be imported here ({exc!r}); run scripts/install_frameworks.sh") from exc

    def create(self, spec: AgentSpec) -> Any:
        return _InterpreterAgent(spec, self.context_window)
