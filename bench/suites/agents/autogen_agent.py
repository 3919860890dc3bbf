"""The AutoGen agent: an AgentChat ``AssistantAgent`` on an OpenAI-compatible model client.

What an AutoGen 0.7 user writes for a local model::

    client = OpenAIChatCompletionClient(model=..., base_url=..., api_key=..., model_info=..., temperature=0, max_tokens=...)
    agent = AssistantAgent("coder", model_client=client, system_message=...)
    result = await agent.run(task=text)      # the agent keeps its conversation between runs

With AIOS, ``aios.patch("autogen", kernel)`` answers the model client's calls
with kernel syscalls, under the agent's name.
"""

from __future__ import annotations

from typing import Any

from aios.bench.suites.agents.base import AgentSpec, Framework, FrameworkUnavailable

#: what AutoGen needs to know about a model it has no table entry for
MODEL_INFO = {"vision": False, "function_calling": False, "json_output": False, "family": "unknown", "structured_output": False}


class _AutoGenAgent:
    def __init__(self, spec: AgentSpec, clients: list[Any]) -> None:
        from autogen_agentchat.agents import AssistantAgent
        from autogen_ext.models.openai import OpenAIChatCompletionClient

        s = spec.sampling
        self.client = OpenAIChatCompletionClient(
            model=spec.endpoint.model,
            base_url=spec.endpoint.base_url,
            api_key=spec.endpoint.api_key,
            model_info=MODEL_INFO,
            temperature=s.temperature,
            max_tokens=s.max_tokens,
            seed=s.seed,
            timeout=s.timeout,
            max_retries=0,
        )
        clients.append(self.client)
        options: dict[str, Any] = {"system_message": spec.system} if spec.system else {}
        self.agent = AssistantAgent(spec.name, model_client=self.client, **options)

    async def send(self, text: str) -> str:
        result = await self.agent.run(task=text)
        content = result.messages[-1].content
        return content if isinstance(content, str) else str(content)


class AutoGenFramework(Framework):
    name = "autogen"
    adapter = "autogen"

    def __init__(self) -> None:
        self._clients: list[Any] = []

    def check_available(self) -> None:
        try:
            import autogen_agentchat  # noqa: F401
            import autogen_ext.models.openai  # noqa: F401
        except ImportError as exc:
            raise FrameworkUnavailable(f"AutoGen is not installed ({exc}); run scripts/install_frameworks.sh") from exc

    def create(self, spec: AgentSpec) -> Any:
        return _AutoGenAgent(spec, self._clients)

    async def end_round(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.close()
