"""Agents and tokens, kernel statistics, health, readiness and Prometheus metrics.

Agent management and statistics need the admin token; ``/healthz`` and
``/readyz`` are open (probes carry no secrets); ``/metrics`` needs the admin
token unless ``metrics_public`` is set, because it names agents.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from aios_core.errors import InvalidSyscallError, UnknownAgentError
from aios_core.server.deps import json_body, principal, server_state
from aios_core.server.errors import ServerShuttingDownError, error_body
from aios_core.server.lifecycle import ServerState
from aios_core.server.metrics import enrich_stats, render
from aios_core.syscalls import NAME_PATTERN, validate_model

router = APIRouter()


class AgentRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    group: str | None = None
    program: str | None = Field(default=None, pattern=NAME_PATTERN)
    priority: int = Field(default=0, ge=-100, le=100)
    framework: str = Field(default="http", max_length=64)


def _check_group(state: ServerState, group: str | None) -> None:
    access = getattr(state.kernel.managers, "access", None)
    groups = getattr(getattr(access, "config", None), "groups", None)
    if group is not None and groups is not None and group not in groups:
        raise InvalidSyscallError(f"no access group {group!r} is configured; groups: {sorted(groups)}", group=group)


@router.post("/v1/agents", status_code=201)
async def register_agent(request: Request) -> dict[str, Any]:
    """Register an agent (or update it) and issue a token scoped to it and its access group."""
    principal(request).require_admin()
    state = server_state(request)
    reg = validate_model(AgentRegistration, await json_body(request), "agent registration")
    _check_group(state, reg.group)
    record = state.kernel.register_agent(reg.name, group=reg.group, program=reg.program, priority=reg.priority, framework=reg.framework)
    token = state.tokens.issue(record.name, group=record.group, program=record.program, priority=record.priority, framework=record.framework)
    return {
        "agent": record.name, "group": record.group, "program": record.program, "priority": record.priority, "framework": record.framework,
        "token": token,
    }


@router.get("/v1/agents")
async def list_agents(request: Request) -> dict[str, Any]:
    principal(request).require_admin()
    state = server_state(request)
    return {"agents": [a.as_dict() for a in state.kernel.agents.all()], "tokens": state.tokens.describe()}


@router.delete("/v1/agents/{name:path}")
async def end_agent(name: str, request: Request) -> dict[str, Any]:
    """Revoke the agent's tokens and end it in the kernel (its snapshots and scheduling history go too)."""
    principal(request).require_admin()
    state = server_state(request)
    known = name in state.kernel.agents
    revoked = state.tokens.revoke(name)
    if not known and not revoked:
        raise UnknownAgentError(f"no agent {name!r} is registered", agent=name)
    state.kernel.end_agent(name)
    state.programs.pop(name, None)
    return {"agent": name, "revoked_tokens": revoked}


@router.get("/v1/whoami")
async def whoami(request: Request) -> dict[str, Any]:
    """The token's identity: the admin, or its agent with group, default program and priority."""
    who = principal(request)
    if who.admin:
        return {"admin": True, "agent": None}
    record = server_state(request).kernel.agents.get(who.agent)  # type: ignore[arg-type]
    return {"admin": False, "agent": record.name, "group": record.group, "program": record.program, "priority": record.priority, "framework": record.framework}


def _server_section(state: ServerState) -> dict[str, Any]:
    import time

    return {
        "uptime": round(time.time() - state.started, 3),
        "draining": state.draining,
        "in_flight": state.active_requests,
        "rate_limited": state.limiter.refused_total,
        "rate_limited_by_agent": state.limiter.refused(),
        "http": state.metrics.as_dict(),
    }


def kernel_stats(state: ServerState) -> dict[str, Any]:
    """``kernel.stats()`` plus tokens/s per core, the flights in progress and the HTTP layer's counters."""
    kernel = state.kernel
    stats = enrich_stats(kernel.stats(), state.rates)
    now = kernel.loop.time() if kernel.loop is not None else 0.0
    flights = []
    for model, pool in kernel.pools.items():
        for flight in pool.flights():
            timing = flight.syscall.timing
            flights.append(
                {
                    "id": flight.id,
                    "model": model,
                    "agent": flight.agent.name,
                    "program": (flight.syscall.program or flight.agent.name),
                    "state": pool.state_of(flight),
                    "core": flight.core.name if flight.core is not None else flight.snapshot_core,
                    "completion_tokens": flight.completion_tokens,
                    "age": round(now - timing.created, 4) if timing.created is not None else 0.0,
                    "preemptions": timing.preemptions,
                }
            )
    stats["flights"] = flights
    stats["server"] = _server_section(state)
    return stats


def ps_rows(state: ServerState) -> list[dict[str, Any]]:
    """One row per agent: identity, state, and its programs with what each is doing now."""
    kernel = state.kernel
    live: dict[str, dict[str, dict[str, int]]] = {}
    for pool in kernel.pools.values():
        for flight in pool.flights():
            per_program = live.setdefault(flight.agent.name, {}).setdefault((flight.syscall.program or flight.agent.name), {})
            flight_state = pool.state_of(flight)
            per_program[flight_state] = per_program.get(flight_state, 0) + 1
    rows = []
    for record in kernel.agents.all():
        info = record.as_dict()
        programs = dict.fromkeys(reversed(list(state.programs.get(record.name, {}))))
        programs.update(dict.fromkeys(live.get(record.name, {})))
        if not programs:
            programs[record.program] = None
        info["programs"] = [
            {"program": p, "states": live.get(record.name, {}).get(p, {}), "state": _program_state(live.get(record.name, {}).get(p, {}))}
            for p in programs
        ]
        rows.append(info)
    return rows


def _program_state(states: dict[str, int]) -> str:
    for name in ("running", "preempted", "queued", "held"):
        if states.get(name):
            return name
    return "idle"


@router.get("/v1/kernel/stats")
async def stats(request: Request) -> dict[str, Any]:
    principal(request).require_admin()
    return kernel_stats(server_state(request))


@router.get("/v1/kernel/ps")
async def ps(request: Request) -> dict[str, Any]:
    principal(request).require_admin()
    return {"agents": ps_rows(server_state(request))}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Readiness: the kernel runs and the server is not draining."""
    state = server_state(request)
    if state.draining or not state.kernel.running:
        reason = "draining for shutdown" if state.draining else f"kernel is {state.kernel.stats()['state']}"
        return JSONResponse(error_body(ServerShuttingDownError(f"not ready: {reason}")), status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = server_state(request)
    if not state.settings.metrics_public:
        principal(request).require_admin()
    stats = enrich_stats(state.kernel.stats(), state.rates)
    server = {"in_flight": state.active_requests, "rate_limited": state.limiter.refused_total, "draining": state.draining}
    text = render(stats, state.metrics, server=server, agent_limit=state.settings.metrics_agent_limit)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")
