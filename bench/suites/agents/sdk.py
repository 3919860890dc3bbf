"""The plain agent: a message list and one chat call per turn.

Without AIOS it is what anyone writes with the ``openai`` package against a
local server (``AsyncOpenAI(base_url=...)``, ``chat.completions.create``);
with AIOS it is the same loop on the AIOS SDK (``kernel.agent(name).achat``).
Both send the same messages with the same sampling settings.
"""

from __future__ import annotations

from typing import Any

from aios.bench.suites.agents.base import AgentSpec, Framework


class _OpenAIAgent:
    def __init__(self, client: Any, spec: AgentSpec) -> None:
        self.client = client
        self.spec = spec
        self.messages: list[dict[str, str]] = [{"role": "system", "content": spec.system}] if spec.system else []

    async def send(self, text: str) -> str:
        self.messages.append({"role": "user", "content": text})
        s = self.spec.sampling
        response = await self.client.chat.completions.create(
            model=self.spec.endpoint.model,
            messages=self.messages,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            seed=s.seed,
        )
        reply = response.choices[0].message.content or ""
        self.messages.append({"role": "assistant", "content": reply})
        return reply


class _AIOSAgent:
    def __init__(self, spec: AgentSpec) -> None:
        self.agent = spec.kernel.agent(spec.name)
        self.spec = spec
        self.messages: list[dict[str, str]] = [{"role": "system", "content": spec.system}] if spec.system else []

    async def send(self, text: str) -> str:
        self.messages.append({"role": "user", "content": text})
        s = self.spec.sampling
        response = await self.agent.achat(self.messages, max_tokens=s.max_tokens, temperature=s.temperature, seed=s.seed)
        reply = response.content or ""
        self.messages.append({"role": "assistant", "content": reply})
        return reply


class SDKFramework(Framework):
    name = "sdk"
    adapter = None

    def __init__(self) -> None:
        self._client: Any = None

    def check_available(self) -> None:
        import openai  # noqa: F401  (a dependency of the project's openai extra)

    def create(self, spec: AgentSpec) -> Any:
        if spec.kernel is not None:
            return _AIOSAgent(spec)
        if self._client is None:
            from openai import AsyncOpenAI

            # one client for the program, as users write it; no retries so that a failure is seen, not hidden
            self._client = AsyncOpenAI(
                base_url=spec.endpoint.base_url, api_key=spec.endpoint.api_key, timeout=spec.sampling.timeout, max_retries=0
            )
        return _OpenAIAgent(self._client, spec)

    async def end_round(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
