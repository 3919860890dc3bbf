"""Who is calling in MetaGPT: the Role (its name) within the Team or Environment run (the program).

The adapter wraps the execution entry points of MetaGPT's class trees, for the
classes that exist and those defined after patching (custom roles and actions
are usually written after ``aios.patch``):

- ``Team.run`` / ``Environment.run`` open a *program*: every syscall made by
  the team's roles during the run carries it, so the scheduler sees one team
  run as one program (its attained service, its history);
- ``Role.run`` / ``react`` / ``_think`` / ``_act`` run as the role: agent name
  = the role's ``name`` (else its ``profile``, else its class). A role always
  runs as itself, also inside an outer ``aios.agent_scope``, whose program,
  group and priority it inherits;
- ``Action.run`` keeps the identity in scope (an action acts for its role) and
  runs as the action (its ``name``) only when used on its own.

Identities live in a ``ContextVar``: ``Environment.run`` gathers its roles as
separate asyncio tasks, so each role's syscalls carry that role's name while
they all run concurrently on one loop.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any

from aios.adapters.shared.class_tree import ClassTreePatch
from aios.adapters.shared.names import InstanceNames, safe_agent_name
from aios.adapters.shared.route import Route

from aios_core.identity import AgentIdentity, current_agent
from aios_core.patching import Patcher

FRAMEWORK = "metagpt"

#: the program of the Team / Environment run in progress on this task
current_program: contextvars.ContextVar[str | None] = contextvars.ContextVar("aios_metagpt_program", default=None)

ROLE_METHODS = ("run", "react", "_think", "_act")
_programs = InstanceNames("metagpt")


def _scoped(original: Callable[..., Any], enter: Callable[[Any], Callable[[], None] | None]) -> Callable[..., Any]:
    """``original`` run inside whatever ``enter(self)`` sets up; ``enter`` returns the undo, or None for nothing to do."""
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original, updated=())
        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            undo = enter(self)
            try:
                return await original(self, *args, **kwargs)
            finally:
                if undo is not None:
                    undo()

    else:

        @functools.wraps(original, updated=())
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            undo = enter(self)
            try:
                return original(self, *args, **kwargs)
            finally:
                if undo is not None:
                    undo()

    wrapper.__aios_scoped__ = True  # type: ignore[attr-defined]
    return wrapper


class Scopes:
    """Builds the identities and programs of MetaGPT's roles, actions and runs under one patch's options."""

    def __init__(self, route: Route) -> None:
        self.route = route

    # ------------------------------------------------------------------ identities

    def role_identity(self, role: Any) -> AgentIdentity | None:
        name = safe_agent_name(getattr(role, "name", "") or getattr(role, "profile", "") or type(role).__name__, FRAMEWORK)
        outer = current_agent.get()
        if outer is not None and outer.name == name and outer.framework == FRAMEWORK:
            return None  # already running as this role (run -> react -> _act)
        return self.route.own_identity(name, program=current_program.get())

    def action_identity(self, action: Any) -> AgentIdentity | None:
        if current_agent.get() is not None:
            return None  # the action acts for the role (or agent) in scope
        name = safe_agent_name(getattr(action, "name", "") or type(action).__name__, FRAMEWORK)
        return self.route.identity(name, program=current_program.get())

    @staticmethod
    def _set(identity: AgentIdentity | None) -> Callable[[], None] | None:
        if identity is None:
            return None
        token = current_agent.set(identity)
        return lambda: current_agent.reset(token)

    def enter_role(self, role: Any) -> Callable[[], None] | None:
        return self._set(self.role_identity(role))

    def enter_action(self, action: Any) -> Callable[[], None] | None:
        return self._set(self.action_identity(action))

    @staticmethod
    def enter_run(owner: Any) -> Callable[[], None] | None:
        """A Team or Environment run: a program, unless one is already open (a Team's environment, an outer scope)."""
        if current_program.get() is not None:
            return None
        outer = current_agent.get()
        program = outer.program if outer is not None and outer.program else _programs.name_of(owner)
        token = current_program.set(program)
        return lambda: current_program.reset(token)

    # ------------------------------------------------------------------ installing

    def install(self, patcher: Patcher) -> None:
        from metagpt.actions.action import Action
        from metagpt.environment.base_env import Environment
        from metagpt.roles.role import Role
        from metagpt.team import Team

        def on(names: tuple[str, ...], enter: Callable[[Any], Callable[[], None] | None]) -> Callable[[type], None]:
            def install_on(cls: type) -> None:
                for name in names:
                    original = cls.__dict__.get(name)
                    if original is not None and callable(original):
                        patcher.replace(cls, name, _scoped(original, enter))

            return install_on

        hook = "__pydantic_init_subclass__"  # all four are pydantic models
        ClassTreePatch(patcher, Team, on(("run",), self.enter_run), hook=hook, include_root=True).apply()
        ClassTreePatch(patcher, Environment, on(("run",), self.enter_run), hook=hook, include_root=True).apply()
        ClassTreePatch(patcher, Role, on(ROLE_METHODS, self.enter_role), hook=hook, include_root=True).apply()
        ClassTreePatch(patcher, Action, on(("run",), self.enter_action), hook=hook, include_root=True).apply()
