"""Who is calling, in AutoGen terms: the AgentChat agent taking its turn, in its team's run.

Each agent's ``on_messages`` / ``on_messages_stream`` runs with the agent's
name in scope, so its model and tool calls are its syscalls. A team's
``run_stream`` (which ``run`` uses) opens a program for the run: every call
made during it (the agents', and a selector's choice of speaker, made under
the team's name) carries that program, which program-level schedulers (PLAS)
use. Teams start their runtime inside ``run_stream``, so the runtime's tasks
inherit the scope.
"""

from __future__ import annotations

import uuid
from typing import Any

from aios.adapters.shared.class_tree import ClassTreePatch
from aios.adapters.shared.names import safe_agent_name
from aios.adapters.shared.route import Route
from aios.adapters.shared.scopes import iterate_as, run_as
from autogen_agentchat.agents import BaseChatAgent
from autogen_agentchat.teams import BaseGroupChat

from aios_core.identity import AgentIdentity, current_agent
from aios_core.patching import Patcher


def agent_identity(route: Route, agent: Any) -> AgentIdentity:
    return route.own_identity(safe_agent_name(agent.name))


def team_identity(route: Route, team: Any) -> AgentIdentity:
    """A team run is a program of its own, unless it runs inside one (a team used as an agent of a team)."""
    name = safe_agent_name(team.name, "team")
    outer = current_agent.get()
    fresh = None if outer is not None and outer.program else safe_agent_name(f"{name}-{uuid.uuid4().hex[:8]}")
    return route.own_identity(name, program=fresh)


def _wrap_coroutine(route: Route, original: Any) -> Any:
    async def on_messages(self: Any, *args: Any, **kwargs: Any) -> Any:
        return await run_as(agent_identity(route, self), original(self, *args, **kwargs))

    return _mark(on_messages, original)


def _wrap_agent_stream(route: Route, original: Any) -> Any:
    def on_messages_stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        return iterate_as(agent_identity(route, self), lambda: original(self, *args, **kwargs))

    return _mark(on_messages_stream, original)


def _wrap_team_stream(route: Route, original: Any) -> Any:
    def run_stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        return iterate_as(team_identity(route, self), lambda: original(self, *args, **kwargs))

    return _mark(run_stream, original)


def _mark(wrapper: Any, original: Any) -> Any:
    wrapper.__name__ = original.__name__
    wrapper.__qualname__ = original.__qualname__
    wrapper.__doc__ = original.__doc__
    wrapper.__wrapped__ = original
    wrapper.__aios_adapter__ = "autogen"
    return wrapper


def install(patcher: Patcher, route: Route) -> None:
    def patch_agent(cls: type) -> None:
        for name, wrap in (("on_messages", _wrap_coroutine), ("on_messages_stream", _wrap_agent_stream)):
            original = cls.__dict__.get(name)
            if original is not None and not getattr(original, "__isabstractmethod__", False):
                patcher.replace(cls, name, wrap(route, original))

    def patch_team(cls: type) -> None:
        original = cls.__dict__.get("run_stream")
        if original is not None and not getattr(original, "__isabstractmethod__", False):
            patcher.replace(cls, "run_stream", _wrap_team_stream(route, original))

    ClassTreePatch(patcher, BaseChatAgent, patch_agent, include_root=True).apply()
    ClassTreePatch(patcher, BaseGroupChat, patch_team, include_root=True).apply()
