"""The access manager: privilege groups, confirmation of irreversible actions, and the audit trail.

API (what the kernel and the other managers call)::

    access = AccessManager(AccessConfig(...), AuditLog(path), confirm=callback)
    await access.authorize(agent, action, resource, *, irreversible=False, detail=None)  # -> None or AccessDeniedError
    await access.record_denial(agent, action, resource, reason, detail=None)            # a refusal decided elsewhere
    access.group_of(agent) -> Group

``agent`` is anything with ``.name`` and ``.group`` (the kernel's AgentRecord).
Actions and the resource each one names:

==================  ==========================================  ==============================
action              resource                                    group field that grants it
==================  ==========================================  ==============================
``llm``             core or model name                          ``cores``
``tool``            tool name                                   ``tools``
``memory.read``     owner agent name                            own memory, ``read_memory_of``
``memory.write``    owner agent name                            own memory, ``write_memory_of``
``storage.read``    ``owner/path`` (``owner/`` for all of it)   ``storage_paths``, ``storage_read_paths``
``storage.write``   ``owner/path``                              ``storage_paths``
==================  ==========================================  ==============================

Patterns are shell globs (``fnmatch``; ``*`` also crosses ``/``) in which
``{self}`` stands for the calling agent's name.

Storage patterns name an owner and a path apart, by one rule: **the owner part
ends at the pattern's first ``/`` that is outside ``{self}`` and outside a
``[...]`` class**, and the owner part must match the owner's whole name. Agent
names may contain ``/`` (``team/alice``), so ``{self}/*`` for agent
``alice/x`` means owner ``alice/x`` exactly, never owner ``alice`` with path
``x/...``; a literal ``/`` inside an owner name is written ``[/]``
(``team[/]alice/*``). A pattern with no such ``/`` is an owner glob and grants
all of that owner's files (``*``: everyone's). Matching the owner exactly was
chosen over forbidding ``/`` in names: hierarchical names stay usable, and the
pattern language stays what operators already wrote (``{self}/*``,
``*/reports/*``, ``shared/*`` mean what they meant for names without ``/``). An allowed action that is
``irreversible`` (shell, code execution, network, purging history) then needs a
confirmation: patterns in the group's ``preapproved`` list (``"tool:python"``)
allow it outright; otherwise the confirmation callback is asked (an interactive
prompt in the CLI, a callback in the API, the ``aios_confirm_action`` hook) and
anything but an explicit ``True`` within ``confirm_timeout`` seconds denies it.

Every decision, allow or deny, is appended to the audit log. Denials and
irreversible actions wait until their record is committed before the caller
goes on, so a refused agent never outruns the log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fnmatch
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from aios_core.errors import AccessDeniedError, AIOSError
from aios_core.managers.audit import AuditLog, AuditRecord

log = logging.getLogger(__name__)

#: ``confirm(agent_name, action, detail) -> True (allow) | False (deny) | None (no opinion)``; may be async
ConfirmFn = Callable[[str, str, dict[str, Any]], "bool | None | Awaitable[bool | None]"]

#: stands for the calling agent's name in every pattern
SELF = "{self}"

ACTIONS = ("llm", "tool", "memory.read", "memory.write", "storage.read", "storage.write")


class AgentLike(Protocol):
    name: str
    group: str


class Group(BaseModel):
    """What the agents of one privilege group may do."""

    model_config = ConfigDict(extra="forbid")

    tools: list[str] = Field(default_factory=lambda: ["*"], description="tool name patterns the group may call")
    cores: list[str] = Field(default_factory=lambda: ["*"], description="core / model name patterns the group may use")
    read_memory_of: list[str] = Field(default_factory=list, description="agents whose memory the group may read (own memory always)")
    write_memory_of: list[str] = Field(default_factory=list, description="agents whose memory the group may change (own memory always)")
    storage_paths: list[str] = Field(default_factory=lambda: ["{self}/*"], description="'owner/path' patterns readable and writable")
    storage_read_paths: list[str] = Field(default_factory=list, description="extra 'owner/path' patterns readable only")
    may_confirm: bool = Field(default=True, description="irreversible actions may be confirmed; if false they are always denied")
    preapproved: list[str] = Field(default_factory=list, description="'action:resource' patterns of irreversible actions allowed without asking")


class AccessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: dict[str, Group] = Field(default_factory=lambda: {"default": Group()}, description="privilege groups by name")
    confirm_timeout: float = Field(default=60.0, gt=0, description="seconds to wait for a confirmation before denying")
    audit_file: str = Field(default="audit.db", description="audit log file, relative to the kernel's data directory")


def chain_confirmations(*hooks: "ConfirmFn | None") -> ConfirmFn | None:
    """One confirmation callback asking ``hooks`` in order; the first True/False answer wins, None passes on.

    Sync hooks run in a worker thread (they may block on a terminal prompt).
    """
    present = [h for h in hooks if h is not None]
    if not present:
        return None

    async def confirm(agent: str, action: str, detail: dict[str, Any]) -> bool | None:
        for hook in present:
            if inspect.iscoroutinefunction(hook):
                answer = await hook(agent, action, detail)
            else:
                answer = await asyncio.to_thread(hook, agent, action, detail)
                if inspect.isawaitable(answer):
                    answer = await answer
            if answer is not None:
                return bool(answer)
        return None

    return confirm


def _expand(patterns: list[str], agent: str) -> list[str]:
    return [p.replace("{self}", agent) for p in patterns]


def _matches(value: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def _glob_literal(text: str) -> str:
    """``text`` as a glob that matches only itself (agent names have no glob characters, but a plugin's might)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def split_owner(pattern: str) -> tuple[str, str | None]:
    """Split a storage pattern into its owner part and its path part (None: no path part, all the owner's files).

    The owner part ends at the first ``/`` outside ``{self}`` and outside a
    ``[...]`` character class, so an agent name substituted for ``{self}`` can
    never move the split (the bug this replaces: ``{self}/*`` for ``alice/x``
    was tried as owner ``alice``, path ``x/*``).
    """
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith(SELF, i):
            i += len(SELF)
            continue
        ch = pattern[i]
        if ch == "[":
            # fnmatch's class syntax: a ']' right after '[' or '[!' is literal; an unclosed '[' is a literal '['
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            i = j + 1 if j < n else i + 1
            continue
        if ch == "/":
            return pattern[:i], pattern[i + 1 :]
        i += 1
    return pattern, None


def owned_match(owner: str, path: str, patterns: list[str], agent: str) -> bool:
    """Whether some storage pattern grants ``agent`` the file ``path`` of ``owner`` (see the module docstring's rule)."""
    for pattern in patterns:
        owner_part, path_part = split_owner(pattern)
        if not fnmatch.fnmatchcase(owner, owner_part.replace(SELF, _glob_literal(agent))):
            continue
        if path_part is None or fnmatch.fnmatchcase(path, path_part.replace(SELF, _glob_literal(agent))):
            return True
    return False


class AccessManager:
    def __init__(self, config: AccessConfig | None = None, audit: AuditLog | None = None, *, confirm: ConfirmFn | None = None) -> None:
        self.config = config or AccessConfig()
        self.audit = audit
        self.confirm = confirm
        self.decisions = {"allow": 0, "deny": 0}

    def group_of(self, agent: AgentLike) -> Group | None:
        return self.config.groups.get(agent.group)

    # ------------------------------------------------------------------ policy

    def policy(self, agent: AgentLike, action: str, resource: str, *, owner: str | None = None) -> tuple[bool, str]:
        """The group policy's answer (before any confirmation) and why.

        Storage resources are ``owner/path``; agent names may contain ``/``, so
        the storage manager also passes ``owner``, and the owner must match a
        pattern's owner part as a whole (see :func:`split_owner`).
        """
        group = self.group_of(agent)
        if group is None:
            return False, f"agent {agent.name!r} is in group {agent.group!r}, which is not configured (groups: {sorted(self.config.groups)})"
        me = agent.name
        if action == "llm":
            ok = _matches(resource, _expand(group.cores, me))
            return ok, ("core allowed by group" if ok else f"group {agent.group!r} may not use core {resource!r}")
        if action == "tool":
            ok = _matches(resource, _expand(group.tools, me))
            return ok, ("tool allowed by group" if ok else f"group {agent.group!r} may not call tool {resource!r}")
        if action in ("memory.read", "memory.write"):
            if resource == me:
                return True, "own memory"
            patterns = group.read_memory_of if action == "memory.read" else group.write_memory_of
            ok = _matches(resource, _expand(patterns, me))
            verb = "read" if action == "memory.read" else "change"
            return ok, (f"group grants {action} of {resource!r}" if ok else f"group {agent.group!r} may not {verb} the memory of agent {resource!r}")
        if action in ("storage.read", "storage.write"):
            patterns = list(group.storage_paths)
            if action == "storage.read":
                patterns += group.storage_read_paths
            if owner is None or not resource.startswith(owner + "/"):
                # no owner given: the owner is the text before the first '/' (an agent whose name contains '/'
                # is then never matched by {self}, which fails closed); the storage manager always passes it
                owner, _, path = resource.partition("/")
            else:
                path = resource[len(owner) + 1 :]
            ok = owned_match(owner, path, patterns, me)
            verb = "read" if action == "storage.read" else "write"
            return ok, (f"group grants {action} of {resource!r}" if ok else f"group {agent.group!r} may not {verb} {resource!r}")
        return False, f"unknown action {action!r} (known: {', '.join(ACTIONS)})"

    # ------------------------------------------------------------------ decisions

    async def authorize(
        self,
        agent: AgentLike,
        action: str,
        resource: str,
        *,
        irreversible: bool = False,
        detail: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> None:
        """Allow (return) or deny (raise :class:`AccessDeniedError`) one action; every decision is audited."""
        detail = dict(detail or {})
        allowed, reason = self.policy(agent, action, resource, owner=owner)
        if allowed and irreversible:
            allowed, reason = await self._confirm(agent, action, resource, detail)
        await self._record(agent, action, resource, allowed, reason, irreversible, detail)
        if not allowed:
            raise AccessDeniedError(f"{agent.name}: {action} on {resource!r} denied: {reason}", action=action, resource=resource)

    async def record_denial(self, agent: AgentLike, action: str, resource: str, reason: str, detail: dict[str, Any] | None = None) -> None:
        """Audit a refusal that another component decided (e.g. a path that escapes the sandbox)."""
        await self._record(agent, action, resource, False, reason, False, dict(detail or {}))

    async def _confirm(self, agent: AgentLike, action: str, resource: str, detail: dict[str, Any]) -> tuple[bool, str]:
        group = self.group_of(agent)
        assert group is not None
        if _matches(f"{action}:{resource}", _expand(group.preapproved, agent.name)):
            return True, "irreversible action preapproved by group policy"
        if not group.may_confirm:
            return False, f"irreversible action, and group {agent.group!r} may not confirm irreversible actions"
        if self.confirm is None:
            return False, "irreversible action and no confirmation hook is installed (denied by default)"
        ask = {"resource": resource, "group": agent.group, **detail}
        try:
            answer = await asyncio.wait_for(self._ask(agent.name, action, ask), timeout=self.config.confirm_timeout)
        except TimeoutError:
            return False, f"irreversible action not confirmed within {self.config.confirm_timeout:g} s (denied by default)"
        except Exception as exc:  # noqa: BLE001 - a broken prompt must deny, not crash the syscall path
            log.warning("confirmation hook raised %r; denying", exc)
            return False, f"confirmation hook failed ({exc!r}); denied by default"
        if answer is True:
            return True, "irreversible action confirmed"
        if answer is False:
            return False, "irreversible action refused by the confirmation hook"
        return False, "nobody answered the confirmation request (denied by default)"

    async def _ask(self, agent: str, action: str, detail: dict[str, Any]) -> bool | None:
        assert self.confirm is not None
        if inspect.iscoroutinefunction(self.confirm):
            return await self.confirm(agent, action, detail)  # type: ignore[misc]
        # a sync callback may block on a terminal prompt: keep it off the loop
        answer = await asyncio.to_thread(self.confirm, agent, action, detail)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer  # type: ignore[return-value]

    async def _record(
        self, agent: AgentLike, action: str, resource: str, allowed: bool, reason: str, irreversible: bool, detail: dict[str, Any]
    ) -> None:
        decision = "allow" if allowed else "deny"
        self.decisions[decision] += 1
        if not allowed:
            log.info("access denied: %s %s %s: %s", agent.name, action, resource, reason)
        if self.audit is None:
            return
        record = AuditRecord(time.time(), agent.name, agent.group, action, resource, decision, reason, irreversible, detail)
        if allowed and not irreversible:
            self.audit.post(record)
            return
        future: concurrent.futures.Future[int] = self.audit.append(record)
        try:
            await asyncio.wrap_future(future)
        except AIOSError as exc:
            log.error("audit record of %s %s %s could not be written: %s", agent.name, action, resource, exc.message)
            if allowed:  # fail closed: an irreversible action must leave a trace
                raise AccessDeniedError(f"{agent.name}: {action} on {resource!r} denied: the audit log cannot be written ({exc.message})") from exc
