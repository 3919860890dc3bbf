"""Who is calling, in LangChain terms: read from the Runnable config of each model call.

LangChain has no agent object, so a call's agent is, in order: the
``aios.agent_scope(...)`` the user opened; the config metadata ``aios_agent``
(set once on a graph or chain invoke, it is inherited by every model and tool
call inside, e.g. ``graph.invoke(x, {"metadata": {"aios_agent": "planner"}})``)
or LangChain's own ``lc_agent_name``; the call's ``run_name``
(``model.with_config(run_name="planner")``); else a name per model instance.
``aios_program`` in the metadata names the program (default: the agent).

The config reaches ``generate`` / ``agenerate`` (``invoke``, ``ainvoke``,
``batch`` go through them) and ``stream`` / ``astream``; the wrappers here put
it in a context variable for the duration of that call only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from aios.adapters.shared.names import InstanceNames, safe_agent_name
from aios.adapters.shared.route import Route
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.runnables.config import ensure_config

from aios_core.identity import AgentIdentity, current_agent
from aios_core.patching import Patcher

AGENT_KEY = "aios_agent"
PROGRAM_KEY = "aios_program"
LANGCHAIN_AGENT_KEY = "lc_agent_name"


@dataclass(frozen=True)
class CallHint:
    agent: str | None = None
    program: str | None = None


_call_hint: ContextVar[CallHint | None] = ContextVar("aios_langchain_call", default=None)
_names = InstanceNames("langchain")


def hint_from(metadata: Mapping[str, Any] | None, run_name: str | None) -> CallHint | None:
    metadata = metadata or {}
    agent = metadata.get(AGENT_KEY) or metadata.get(LANGCHAIN_AGENT_KEY) or run_name
    program = metadata.get(PROGRAM_KEY)
    if not agent and not program:
        return None
    return CallHint(agent=str(agent) if agent else None, program=str(program) if program else None)


def identity_for(route: Route, obj: Any, hint: CallHint | None = None, default: str | None = None) -> AgentIdentity:
    """The agent of a call made by ``obj`` (a model or tool), see the module docstring for the order."""
    if current_agent.get() is not None:
        return route.identity("")  # the agent in scope is the caller
    hint = hint if hint is not None else _call_hint.get()
    name = hint.agent if hint is not None and hint.agent else default or _names.name_of(obj)
    return route.identity(safe_agent_name(name), program=safe_agent_name(hint.program) if hint is not None and hint.program else None)


@contextmanager
def _hinted(hint: CallHint | None) -> Iterator[None]:
    """``hint`` is the call's while the block runs (and only then: a stream's consumer runs without it)."""
    token = _call_hint.set(hint)
    try:
        yield
    finally:
        _call_hint.reset(token)


def _wrap_generate(original: Any) -> Any:
    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _hinted(hint_from(kwargs.get("metadata"), kwargs.get("run_name"))):
            return original(self, *args, **kwargs)

    return _mark(generate, original)


def _wrap_agenerate(original: Any) -> Any:
    async def agenerate(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _hinted(hint_from(kwargs.get("metadata"), kwargs.get("run_name"))):
            return await original(self, *args, **kwargs)

    return _mark(agenerate, original)


def _config_hint(args: tuple[Any, ...], kwargs: dict[str, Any]) -> CallHint | None:
    config = ensure_config(kwargs.get("config", args[1] if len(args) > 1 else None))
    return hint_from(config.get("metadata"), config.get("run_name"))


_END = object()


def _wrap_stream(original: Any) -> Any:
    def stream(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        hint = _config_hint(args, kwargs)
        inner = original(self, *args, **kwargs)
        try:
            while True:
                with _hinted(hint):  # each step of the model's stream runs as the call's agent
                    item = next(inner, _END)
                if item is _END:
                    return
                yield item
        finally:
            inner.close()

    return _mark(stream, original)


def _wrap_astream(original: Any) -> Any:
    async def astream(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        hint = _config_hint(args, kwargs)
        inner = original(self, *args, **kwargs)
        try:
            while True:
                with _hinted(hint):  # each step of the model's stream runs as the call's agent
                    item = await anext(inner, _END)
                if item is _END:
                    return
                yield item
        finally:
            await inner.aclose()

    return _mark(astream, original)


def _mark(wrapper: Any, original: Any) -> Any:
    wrapper.__name__ = original.__name__
    wrapper.__qualname__ = original.__qualname__
    wrapper.__doc__ = original.__doc__
    wrapper.__wrapped__ = original
    wrapper.__aios_adapter__ = "langchain"
    return wrapper


def install(patcher: Patcher) -> None:
    for name, wrap in (("generate", _wrap_generate), ("agenerate", _wrap_agenerate), ("stream", _wrap_stream), ("astream", _wrap_astream)):
        patcher.replace(BaseChatModel, name, wrap(BaseChatModel.__dict__[name]))
