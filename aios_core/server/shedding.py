"""Shedding abuse before it costs memory: the token checked before the body, and connection limits below HTTP.

Two layers, each where it can act earliest:

* :class:`AuthGate`, a pure ASGI middleware outside the body reader: a
  request for an endpoint that needs a token is answered 401 from its headers
  alone, before a byte of its body is read (and the connection is closed, so
  the unread body is never buffered). An unauthenticated client therefore
  cannot make the server hold megabytes of body per connection.
* :func:`guarded_protocol`, uvicorn's h11 protocol with a **request head
  deadline** (a connection must send a complete request head within
  ``header_timeout`` seconds of opening or of its previous response, or it
  gets 408 and is closed: uvicorn's keep-alive timer alone is reset by every
  byte, so a slowloris client trickling a header stays forever) and **caps on
  open connections**, per client address and in total (503 and closed).

The body read deadline and the JSON depth limit live with the size limit in
:class:`~aios_core.server.limits.BodyLimitMiddleware`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import h11
from starlette.routing import BaseRoute, Match
from uvicorn.protocols.http.h11_impl import H11Protocol

from aios_core.errors import AIOSError
from aios_core.server.auth import Principal, TokenStore
from aios_core.server.errors import RequestTimeoutError, ServerOverloadedError, error_body
from aios_core.server.limits import ASGIApp, Receive, Scope, Send, send_json_error
from aios_core.server.settings import ServerSettings

log = logging.getLogger(__name__)

#: where the gate leaves the authenticated caller for the endpoints (``scope["state"]``)
PRINCIPAL_KEY = "aios.principal"
#: endpoints that never need a token (probes)
ALWAYS_PUBLIC = frozenset({"/healthz", "/readyz"})
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})


def public_paths(settings: ServerSettings) -> frozenset[str]:
    """The paths served without a token under ``settings``."""
    paths = set(ALWAYS_PUBLIC)
    if settings.metrics_public:
        paths.add("/metrics")
    if settings.docs_public:
        paths |= DOCS_PATHS
    return frozenset(paths)


class AuthGate:
    """Answer 401 from the headers for every routed endpoint that needs a token; never read the body first.

    Requests that match no route (404) or no method of a route (405) pass
    through: those answers read no body either, and keep their usual shape.
    """

    def __init__(self, app: ASGIApp, *, tokens: TokenStore, public: frozenset[str], routes: Callable[[], Iterable[BaseRoute]]) -> None:
        self.app = app
        self.tokens = tokens
        self.public = public
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in self.public or not self._routed(scope):
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        try:
            principal: Principal = self.tokens.authenticate(authorization)
        except AIOSError as exc:
            # the body (if any) stays unread: close rather than leave it in the connection
            await send_json_error(send, exc.http_status, error_body(exc), [(b"www-authenticate", b"Bearer"), (b"connection", b"close")])
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)

    def _routed(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in self.routes())


def _raw_response(status: int, reason: str, error: AIOSError) -> bytes:
    body = json.dumps(error_body(error)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode("ascii")
    return head + body


def guarded_protocol(settings: ServerSettings) -> type[H11Protocol]:
    """uvicorn's h11 protocol plus a request-head deadline and connection caps (one class per server)."""
    per_client: Counter[str] = Counter()
    header_timeout = settings.header_timeout
    max_total = settings.max_connections
    max_per_client = settings.max_connections_per_client

    class GuardedH11Protocol(H11Protocol):
        _counted_as: str | None = None
        _head_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else "unknown"
            if len(self.connections) > max_total:
                self._refuse(f"the server has {max_total} connections open (its limit); retry later", "max_connections", total=max_total)
                return
            if per_client[host] >= max_per_client:
                self._refuse(
                    f"this client already has {per_client[host]} connections open (the limit per client is {max_per_client}); "
                    "reuse them (keep-alive) or close some",
                    "max_connections_per_client",
                    per_client=max_per_client,
                )
                return
            per_client[host] += 1
            self._counted_as = host
            self._arm_head_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._counted_as is not None:
                per_client[self._counted_as] -= 1
                if per_client[self._counted_as] <= 0:
                    del per_client[self._counted_as]
                self._counted_as = None
            self._disarm_head_deadline()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_deadline()  # the next request head has its own deadline

        def _arm_head_deadline(self) -> None:
            self._disarm_head_deadline()
            self._head_deadline = self.loop.call_later(header_timeout, self._head_overdue)

        def _disarm_head_deadline(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
                self._head_deadline = None

        def _head_overdue(self) -> None:
            self._head_deadline = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return  # a request head arrived: its body and response have their own bounds
            log.info("closing a connection from %s: no complete request head within %.1f s", self.client, header_timeout)
            error = RequestTimeoutError(f"no complete request head within {header_timeout:g} s; the connection is closed", timeout=header_timeout)
            self.transport.write(_raw_response(408, "Request Timeout", error))
            self.transport.close()

        def _refuse(self, message: str, setting: str, **details: Any) -> None:
            log.warning("refusing a connection from %s: %s", self.client, message)
            error = ServerOverloadedError(f"{message} (AIOS_SERVER_{setting.upper()})", **details)
            self.transport.write(_raw_response(503, "Service Unavailable", error))
            self.transport.close()

    return GuardedH11Protocol
