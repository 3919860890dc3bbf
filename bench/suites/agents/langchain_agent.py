"""The LangChain agent: a chat prompt with a message history, piped into ChatOpenAI.

What a LangChain user writes for a multi-turn assistant on a local
OpenAI-compatible server::

    prompt = ChatPromptTemplate.from_messages([("system", ...), MessagesPlaceholder("history"), ("human", "{input}")])
    chain = prompt | ChatOpenAI(base_url=..., model=..., temperature=0, max_tokens=...) | StrOutputParser()
    reply = await chain.ainvoke({"history": history, "input": text})

With AIOS, ``aios.patch("langchain", kernel)`` makes the same chain's model
calls kernel syscalls; nothing in this code changes.
"""

from __future__ import annotations

from typing import Any

from aios.bench.suites.agents.base import AgentSpec, Framework, FrameworkUnavailable


class _LangChainAgent:
    def __init__(self, spec: AgentSpec) -> None:
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
        from langchain_openai import ChatOpenAI

        s = spec.sampling
        llm = ChatOpenAI(
            model=spec.endpoint.model,
            base_url=spec.endpoint.base_url,
            api_key=spec.endpoint.api_key,
            temperature=s.temperature,
            max_tokens=s.max_tokens,
            seed=s.seed,
            timeout=s.timeout,
            max_retries=0,
        )
        parts: list[Any] = [("system", "{system}")] if spec.system else []
        parts += [MessagesPlaceholder("history"), ("human", "{input}")]
        self.chain = ChatPromptTemplate.from_messages(parts) | llm | StrOutputParser()
        self.system = spec.system
        self.history: list[Any] = []

    async def send(self, text: str) -> str:
        from langchain_core.messages import AIMessage, HumanMessage

        inputs: dict[str, Any] = {"history": self.history, "input": text}
        if self.system:
            inputs["system"] = self.system
        reply = await self.chain.ainvoke(inputs)
        self.history += [HumanMessage(text), AIMessage(reply)]
        return reply  # type: ignore[no-any-return]


class LangChainFramework(Framework):
    name = "langchain"
    adapter = "langchain"

    def check_available(self) -> None:
        try:
            import langchain_core  # noqa: F401
            import langchain_openai  # noqa: F401
        except ImportError as exc:
            raise FrameworkUnavailable(f"LangChain is not installed ({exc}); run scripts/install_frameworks.sh") from exc

    def create(self, spec: AgentSpec) -> Any:
        return _LangChainAgent(spec)
