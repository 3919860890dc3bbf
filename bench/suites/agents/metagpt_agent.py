"""The MetaGPT agent: a ``Role`` with one ``Action``, as in MetaGPT's own "write a single-action agent" tutorial.

    class Reply(Action):
        async def run(self, history):
            return await self._aask(transcript(history), system_msgs=[...])

    class Solver(Role):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.set_actions([Reply])
        async def _act(self):
            text = await self.rc.todo.run(self.rc.memory.get())
            return Message(content=text, role="assistant", cause_by=type(self.rc.todo))

    reply = (await Solver(config=Config.from_llm_config({...base_url, model, max_token, temperature: 0})).run(text)).content

The role's memory holds the conversation; each ``run`` adds the next user
message. With AIOS, ``aios.patch("metagpt", kernel)`` answers the role's LLM
(every BaseLLM provider) with kernel syscalls under the role's name.

MetaGPT reads a global configuration when it is imported and refuses to
import without one; the first agent writes a placeholder under a private
``METAGPT_PROJECT_ROOT`` (each role gets its real endpoint through its own
``Config``). Streaming is off (MetaGPT would print every token of every agent).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from aios.bench.suites.agents.base import AgentSpec, Framework, FrameworkUnavailable


def prepare_environment() -> None:
    """A placeholder global MetaGPT configuration and offline tokenizer files, before MetaGPT is imported."""
    if "METAGPT_PROJECT_ROOT" not in os.environ:
        root = Path(tempfile.mkdtemp(prefix="aios-bench-metagpt-"))
        (root / "config").mkdir(parents=True)
        (root / "config" / "config2.yaml").write_text(
            "llm:\n  api_type: openai\n  api_key: sk-local-no-key\n  model: gemma-3-270m\n  base_url: http://127.0.0.1:9/v1\n"
        )
        os.environ["METAGPT_PROJECT_ROOT"] = str(root)
    offline_tokenizers()


def offline_tokenizers() -> None:
    """tiktoken downloads its files on first use; litellm ships them (MetaGPT and OI count tokens with tiktoken)."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    if spec and spec.submodule_search_locations:
        bundled = Path(list(spec.submodule_search_locations)[0]) / "litellm_core_utils" / "tokenizers"
        if bundled.is_dir():
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _classes() -> tuple[Any, Any]:
    from metagpt.actions import Action
    from metagpt.roles import Role
    from metagpt.schema import Message

    class Reply(Action):
        name: str = "Reply"
        instructions: str | None = None

        async def run(self, history: list[Any]) -> str:
            if len(history) == 1:
                prompt = history[0].content
            else:
                lines = [f"{'Assistant' if m.role == 'assistant' else 'User'}: {m.content}" for m in history]
                prompt = "\n\n".join(lines) + "\n\nAssistant:"
            return await self._aask(prompt, system_msgs=[self.instructions] if self.instructions else None)  # type: ignore[no-any-return]

    class Solver(Role):
        name: str = "Solver"
        profile: str = "Assistant"
        instructions: str | None = None

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.set_actions([Reply(instructions=self.instructions)])

        async def _act(self) -> Message:
            todo = self.rc.todo
            text = await todo.run(self.rc.memory.get())
            return Message(content=text, role="assistant", cause_by=type(todo))

    return Reply, Solver


class _MetaGPTAgent:
    def __init__(self, spec: AgentSpec, solver_cls: Any) -> None:
        from metagpt.config2 import Config

        s = spec.sampling
        config = Config.from_llm_config(
            {
                "api_type": "openai",
                "api_key": spec.endpoint.api_key,
                "model": spec.endpoint.model,
                "base_url": spec.endpoint.base_url,
                "max_token": s.max_tokens,
                "temperature": s.temperature,
                "stream": False,
                "timeout": int(s.timeout),
            }
        )
        self.role = solver_cls(name=spec.name, instructions=spec.system, config=config)

    async def send(self, text: str) -> str:
        message = await self.role.run(text)
        return message.content if message is not None else ""


class MetaGPTFramework(Framework):
    name = "metagpt"
    adapter = "metagpt"

    def __init__(self) -> None:
        self._solver: Any = None

    def check_available(self) -> None:
        prepare_environment()
        try:
            import metagpt.actions  # noqa: F401
            import metagpt.config2  # noqa: F401
            import metagpt.roles  # noqa: F401  (MetaGPT's own import order: roles first)
            from metagpt.logs import define_log_level

            define_log_level(print_level="ERROR")  # MetaGPT logs a cost warning per call for models it has no price for
        except Exception as exc:  # noqa: BLE001 - MetaGPT raises plain errors from its import-time config
            raise FrameworkUnavailable(f"MetaGPT cannot be imported here ({exc!r}); run scripts/install_frameworks.sh") from exc

    def create(self, spec: AgentSpec) -> Any:
        if self._solver is None:
            self._solver = _classes()[1]
        return _MetaGPTAgent(spec, self._solver)
