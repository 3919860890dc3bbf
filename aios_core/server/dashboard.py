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
==================================  =========================================================

The page polls only the endpoint of the view on screen (and the engine
counters, for its charts) every :data:`UI_POLL_SECONDS`, and stops while its
tab is hidden; a kernel nobody watches serves none of this.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from aios_core.errors import UnknownAgentError
from aios_core.server import dashboard_data
from aios_core.server.admin_api import ps_rows
from aios_core.server.deps import principal, server_state
from aios_core.server.errors import NotFoundError

router = APIRouter()

#: how often the page reads the endpoint of the view on screen (dashboard_static/api.js says the same; a test checks)
UI_POLL_SECONDS = 2.0
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


# --------------------------------------------------------------------------- data (admin token)


def _json(data: dict[str, Any]) -> Response:
    """Serialise with the json module directly: the answers are plain JSON types already, and FastAPI's generic
    encoder walks every value of a few thousand timeline rows in Python first (most of a read's cost)."""
    return JSONResponse(data)


@router.get("/v1/dashboard/agents")
async def agents(request: Request) -> Response:
    """Every agent with its programs (the rows of ``/v1/kernel/ps``, served without the generic encoder's cost)."""
    principal(request).require_admin()
    return _json({"agents": ps_rows(server_state(request))})


@router.get("/v1/dashboard/timeline")
async def timeline(
    request: Request,
    window: Annotated[float, Query(gt=0, le=MAX_WINDOW, description="seconds of history")] = 120.0,
    agent: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 4000,
) -> Response:
    principal(request).require_admin()
    return _json(dashboard_data.timeline_view(server_state(request).kernel, window=window, agent=agent, limit=limit))


@router.get("/v1/dashboard/engine")
async def engine(request: Request) -> Response:
    principal(request).require_admin()
    state = server_state(request)
    return _json(dashboard_data.engine_view(state.kernel, state.rates))


@router.get("/v1/dashboard/audit")
async def audit(
    request: Request,
    agent: Annotated[str | None, Query(max_length=128)] = None,
    decision: Literal["allow", "deny"] | None = None,
    action: Annotated[str | None, Query(max_length=64, description="action prefix, e.g. 'storage'")] = None,
    resource: Annotated[str | None, Query(max_length=512, description="text the resource contains")] = None,
    irreversible: bool = False,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> Response:
    principal(request).require_admin()
    kernel = server_state(request).kernel
    return _json(await dashboard_data.audit_view(
        kernel, agent=agent or None, decision=decision, action=action or None, resource=resource or None, irreversible=irreversible, limit=limit
    ))


@router.get("/v1/dashboard/audit/verify")
async def audit_verify(request: Request) -> dict[str, Any]:
    principal(request).require_admin()
    return await dashboard_data.audit_verify(server_state(request).kernel)


@router.get("/v1/dashboard/plugins")
async def plugins(request: Request) -> dict[str, Any]:
    principal(request).require_admin()
    return dashboard_data.plugins_view(server_state(request))


@router.get("/v1/dashboard/agents/{name:path}")
async def agent(name: str, request: Request) -> Response:
    principal(request).require_admin()
    state = server_state(request)
    row = next((r for r in ps_rows(state) if r["name"] == name), None)
    if row is None:
        raise UnknownAgentError(f"no agent {name!r} is registered", agent=name)
    return _json(await dashboard_data.agent_view(state, name, row))
