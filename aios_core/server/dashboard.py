"""The web dashboard of a running kernel: static pages at ``/ui`` and the JSON endpoints they read.

The pages (HTML, one stylesheet, ES modules; no build step, no CDN, shipped in
the wheel under ``dashboard_static/``) hold no data and are served without a
token. Everything they show comes from the endpoints below, which need the
admin token like ``/v1/kernel/stats``: the page asks for it once, keeps it in
the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer``. A
wrong or revoked token gets a 401 and the page returns to its login form.

==================================  =========================================================
``/ui/``                            the dashboard (static, no data)
``/v1/dashboard/agents``            agents and their programs (the Agents view; the rows of ``/v1/kernel/ps``)
``/v1/dashboard/agents/{name}``     one agent: accounting, recent timeline, audit records
``/v1/dashboard/timeline``          recent syscall phases (``window``, ``agent``, ``limit``)
``/v1/dashboard/engine``            per pool and core: queue levels, batch, tokens/s, KV, prefix hits, snapshots
``/v1/dashboard/audit``             audit records, newest first (``agent``, ``decision``, ``action``,
                                    ``resource``, ``irreversible``, ``limit``)
``/v1/dashboard/audit/verify``      the audit log's tamper check, when the log has one
``/v1/dashboard/plugins``           plugins, their origins and failures; effective configuration
``/v1/dashboard/stream/<view>``     the same views, live: server-sent events pushed when the view changes
==================================  =========================================================

The page does not poll: it opens one stream for the view on screen (with
``engine=true``, so the engine counters for its header and charts come along)
and the server pushes that view's JSON, the same payload the view's endpoint
answers, whenever it changed, at most every :data:`UI_POLL_SECONDS`
(:mod:`aios_core.server.dashboard_stream`). The page closes the stream while
its tab is hidden; a kernel nobody watches reads none of this.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from aios_core.errors import UnknownAgentError
from aios_core.server import dashboard_data, dashboard_stream
from aios_core.server.admin_api import ps_rows
from aios_core.server.dashboard_stream import Feed, Read
from aios_core.server.deps import principal, server_state
from aios_core.server.errors import NotFoundError
from aios_core.server.lifecycle import ServerState

router = APIRouter()

#: how often a live view is read while someone watches it, so at most how often it is pushed (dashboard_static/api.js
#: says the same; a test checks)
UI_POLL_SECONDS = 2.0
#: a comment line keeps a quiet stream open (read per stream, so tests may shorten it)
HEARTBEAT_SECONDS = dashboard_stream.HEARTBEAT_SECONDS
STATIC_DIR = Path(__file__).with_name("dashboard_static")
#: the longest timeline window a request may ask for (the ring buffer holds less at high load anyway)
MAX_WINDOW = 3600.0

#: pages only: they carry no data, and the policy forbids anything not from this server (no inline script, no frames)
STATIC_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}


def _static_files() -> dict[str, Path]:
    """Every file shipped for the page, by its path under ``/ui/``; nothing else can be served (no path traversal)."""
    if not STATIC_DIR.is_dir():
        return {}
    return {p.relative_to(STATIC_DIR).as_posix(): p for p in STATIC_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


_FILES = _static_files()
#: the page's own files: served without a token (they hold no data), so the gate in front of every endpoint lets them through
STATIC_PATHS = frozenset({"/ui", "/ui/", *(f"/ui/{name}" for name in _FILES)})


@router.get("/ui", include_in_schema=False)
async def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/{path:path}", include_in_schema=False)
async def ui_file(path: str) -> Response:
    """A static file of the page (``/ui/`` is its index)."""
    file = _FILES.get(path or "index.html")
    if file is None:
        raise NotFoundError(f"no dashboard file {path!r}; open /ui/")
    media = _TYPES.get(file.suffix) or mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return FileResponse(file, media_type=media, headers=STATIC_HEADERS)


# --------------------------------------------------------------------------- what each view reads (admin token)


def _json(data: dict[str, Any]) -> Response:
    """Serialise with the json module directly: the answers are plain JSON types already, and FastAPI's generic
    encoder walks every value of a few thousand timeline rows in Python first (most of a read's cost)."""
    return JSONResponse(data)


@dataclass(frozen=True)
class TimelineQuery:
    window: float
    agent: str | None
    limit: int


def timeline_query(
    window: Annotated[float, Query(gt=0, le=MAX_WINDOW, description="seconds of history")] = 120.0,
    agent: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 4000,
) -> TimelineQuery:
    return TimelineQuery(window, agent, limit)


@dataclass(frozen=True)
class AuditQuery:
    agent: str | None
    decision: str | None
    action: str | None
    resource: str | None
    irreversible: bool
    limit: int


def audit_query(
    agent: Annotated[str | None, Query(max_length=128)] = None,
    decision: Literal["allow", "deny"] | None = None,
    action: Annotated[str | None, Query(max_length=64, description="action prefix, e.g. 'storage'")] = None,
    resource: Annotated[str | None, Query(max_length=512, description="text the resource contains")] = None,
    irreversible: bool = False,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> AuditQuery:
    return AuditQuery(agent or None, decision, action or None, resource or None, irreversible, limit)


def _admin(request: Request) -> ServerState:
    principal(request).require_admin()
    return server_state(request)


def agents_reader(state: ServerState) -> Read:
    async def read() -> dict[str, Any]:
        return {"agents": ps_rows(state)}

    return read


def agent_reader(state: ServerState, name: str) -> Read:
    async def read() -> dict[str, Any]:
        row = next((r for r in ps_rows(state) if r["name"] == name), None)
        if row is None:
            raise UnknownAgentError(f"no agent {name!r} is registered", agent=name)
        return await dashboard_data.agent_view(state, name, row)

    return read


def timeline_reader(state: ServerState, q: TimelineQuery) -> Read:
    async def read() -> dict[str, Any]:
        return dashboard_data.timeline_view(state.kernel, window=q.window, agent=q.agent, limit=q.limit)

    return read


def engine_reader(state: ServerState) -> Read:
    async def read() -> dict[str, Any]:
        return dashboard_data.engine_view(state.kernel, state.rates)

    return read


def audit_reader(state: ServerState, q: AuditQuery) -> Read:
    async def read() -> dict[str, Any]:
        return await dashboard_data.audit_view(
            state.kernel, agent=q.agent, decision=q.decision, action=q.action, resource=q.resource, irreversible=q.irreversible, limit=q.limit
        )

    return read


def plugins_reader(state: ServerState) -> Read:
    async def read() -> dict[str, Any]:
        return dashboard_data.plugins_view(state)

    return read


# --------------------------------------------------------------------------- JSON endpoints


@router.get("/v1/dashboard/agents")
async def agents(request: Request) -> Response:
    """Every agent with its programs (the rows of ``/v1/kernel/ps``, served without the generic encoder's cost)."""
    return _json(await agents_reader(_admin(request))())


@router.get("/v1/dashboard/timeline")
async def timeline(request: Request, q: Annotated[TimelineQuery, Depends(timeline_query)]) -> Response:
    return _json(await timeline_reader(_admin(request), q)())


@router.get("/v1/dashboard/engine")
async def engine(request: Request) -> Response:
    return _json(await engine_reader(_admin(request))())


@router.get("/v1/dashboard/audit")
async def audit(request: Request, q: Annotated[AuditQuery, Depends(audit_query)]) -> Response:
    return _json(await audit_reader(_admin(request), q)())


@router.get("/v1/dashboard/audit/verify")
async def audit_verify(request: Request) -> dict[str, Any]:
    return await dashboard_data.audit_verify(_admin(request).kernel)


@router.get("/v1/dashboard/plugins")
async def plugins(request: Request) -> dict[str, Any]:
    return await plugins_reader(_admin(request))()


@router.get("/v1/dashboard/agents/{name:path}")
async def agent(name: str, request: Request) -> Response:
    return _json(await agent_reader(_admin(request), name)())


# --------------------------------------------------------------------------- live views (server-sent events)

_ENGINE_TOO = Query(description="also push the engine view as `engine` events (the page's header and charts)")


async def _live(request: Request, state: ServerState, event: str, read: Read, engine: bool) -> Response:
    """The stream of one view (event name ``event``), plus the engine view's if asked; the first reads happen now."""
    feeds = [Feed(event, read)]
    if engine and event != "engine":
        feeds.insert(0, Feed("engine", engine_reader(state)))
    return await dashboard_stream.open_stream(
        feeds,
        registry=dashboard_stream.registry_of(request.app.state),
        draining=lambda: state.draining,
        interval=UI_POLL_SECONDS,
        heartbeat=HEARTBEAT_SECONDS,
    )


@router.get("/v1/dashboard/stream/agents")
async def agents_stream(request: Request, engine: Annotated[bool, _ENGINE_TOO] = False) -> Response:
    """``agents`` events: the payload of ``/v1/dashboard/agents``, pushed when it changes."""
    state = _admin(request)
    return await _live(request, state, "agents", agents_reader(state), engine)


@router.get("/v1/dashboard/stream/timeline")
async def timeline_stream(
    request: Request, q: Annotated[TimelineQuery, Depends(timeline_query)], engine: Annotated[bool, _ENGINE_TOO] = False
) -> Response:
    """``timeline`` events: the payload of ``/v1/dashboard/timeline`` with the same parameters."""
    state = _admin(request)
    return await _live(request, state, "timeline", timeline_reader(state, q), engine)


@router.get("/v1/dashboard/stream/engine")
async def engine_stream(request: Request, engine: Annotated[bool, _ENGINE_TOO] = False) -> Response:
    """``engine`` events: the payload of ``/v1/dashboard/engine``."""
    state = _admin(request)
    return await _live(request, state, "engine", engine_reader(state), engine)


@router.get("/v1/dashboard/stream/audit")
async def audit_stream(request: Request, q: Annotated[AuditQuery, Depends(audit_query)], engine: Annotated[bool, _ENGINE_TOO] = False) -> Response:
    """``audit`` events: the payload of ``/v1/dashboard/audit`` with the same filters."""
    state = _admin(request)
    return await _live(request, state, "audit", audit_reader(state, q), engine)


@router.get("/v1/dashboard/stream/plugins")
async def plugins_stream(request: Request, engine: Annotated[bool, _ENGINE_TOO] = False) -> Response:
    """``plugins`` events: the payload of ``/v1/dashboard/plugins``."""
    state = _admin(request)
    return await _live(request, state, "plugins", plugins_reader(state), engine)


@router.get("/v1/dashboard/stream/agents/{name:path}")
async def agent_stream(name: str, request: Request, engine: Annotated[bool, _ENGINE_TOO] = False) -> Response:
    """``agent`` events: the payload of ``/v1/dashboard/agents/{name}`` (404 if no such agent)."""
    state = _admin(request)
    return await _live(request, state, "agent", agent_reader(state, name), engine)
