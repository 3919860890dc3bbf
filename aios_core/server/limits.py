"""Request size, read-time and JSON-depth limits (413, 408, 400) and per-agent rate limits (429).

The size limit is enforced before any endpoint runs: a declared
``Content-Length`` over the limit is refused without reading the body, and a
chunked body is read only up to the limit, and only for ``body_timeout``
seconds (a client trickling its body is answered 408). JSON nested deeper
than ``max_json_depth`` is refused with 400 before any endpoint parses it
(deep enough nesting makes a recursive parser raise RecursionError). The body
is then replayed to the application, so endpoints never see a partial body.
This middleware runs after :class:`~aios_core.server.shedding.AuthGate`, so
no body is read for a caller without a valid token.

The rate limit is a token bucket per agent (``rate`` requests per second,
bursts of ``burst``), refilled lazily when a request arrives, so no timer
runs; plus a cap on one agent's requests in progress at once. Each agent has
its own bucket: one agent flooding the kernel is refused without slowing the
others' admission.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aios_core.server.errors import JSONTooDeepError, RateLimitedError, RequestTimeoutError, RequestTooLargeError, error_body

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json_error(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` (413), too slow (408) or too deeply nested (400); hand the application
    the complete body, then the live channel."""

    def __init__(self, app: ASGIApp, max_bytes: int, *, body_timeout: float = 30.0, max_json_depth: int = 64) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, declared)
            return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left before sending its body: nothing to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await self._refuse(send, size, partial=True)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            slow = RequestTimeoutError(
                f"the request body did not arrive within {self.body_timeout:g} s ({size} bytes received); send it at once "
                "(or raise AIOS_SERVER_BODY_TIMEOUT)",
                timeout=self.body_timeout,
            )
            await send_json_error(send, slow.http_status, error_body(slow), [(b"connection", b"close")])
            return
        body = b"".join(chunks)
        if json_nesting_exceeds(body, self.max_json_depth):
            deep = JSONTooDeepError(
                f"the JSON body nests arrays/objects deeper than {self.max_json_depth} levels; flatten it "
                "(or raise AIOS_SERVER_MAX_JSON_DEPTH)",
                limit=self.max_json_depth,
            )
            await send_json_error(send, deep.http_status, error_body(deep))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            # after the body: the real channel, which reports the client's disconnect
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: int, *, partial: bool = False) -> None:
        what = f"more than {size} bytes" if partial else f"{size} bytes"
        error = RequestTooLargeError(
            f"the request body ({what}) exceeds this server's limit of {self.max_bytes} bytes; send less "
            "(or raise AIOS_SERVER_MAX_BODY_BYTES)",
            limit=self.max_bytes,
        )
        # the rest of an oversized body is not read: close the connection rather than leave it unusable
        await send_json_error(send, error.http_status, error_body(error), [(b"connection", b"close")])


def json_nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether ``body``, read as JSON, nests arrays/objects more than ``limit`` deep.

    Counting brackets (at C speed) settles almost every body: fewer than
    ``limit`` of them cannot nest that deep. Otherwise the body is parsed and
    walked without recursion. A body that is not JSON is not this check's
    business (the endpoint answers it).
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    try:
        data = json.loads(body)
    except RecursionError:
        return True
    except ValueError:  # includes UnicodeDecodeError
        return False
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    active: int = 0
    refused: int = 0


class RateLimiter:
    """Per-agent token buckets and concurrency caps. ``acquire`` raises RateLimitedError; ``release`` after the request."""

    def __init__(self, rate: float, burst: int, max_concurrent: int, *, max_agents: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.max_concurrent = max_concurrent
        self.max_agents = max_agents
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.refused_total = 0

    def acquire(self, agent: str) -> None:
        now = self.clock()
        bucket = self._buckets.get(agent)
        if bucket is None:
            bucket = self._buckets[agent] = _Bucket(tokens=float(self.burst), stamp=now)
            self._trim()
        else:
            self._buckets.move_to_end(agent)
        if self.max_concurrent and bucket.active >= self.max_concurrent:
            self._refuse(
                bucket,
                f"agent {agent!r} already has {bucket.active} requests in progress (the limit is {self.max_concurrent}); "
                "wait for one to finish",
                retry_after=1.0,
            )
        if self.rate > 0:
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens < 1.0:
                wait = (1.0 - bucket.tokens) / self.rate
                self._refuse(
                    bucket,
                    f"agent {agent!r} exceeded its rate limit of {self.rate:g} requests/s (bursts of {self.burst}); retry in {wait:.2f} s",
                    retry_after=wait,
                )
            bucket.tokens -= 1.0
        bucket.active += 1

    def release(self, agent: str) -> None:
        bucket = self._buckets.get(agent)
        if bucket is not None and bucket.active > 0:
            bucket.active -= 1

    def _refuse(self, bucket: _Bucket, message: str, *, retry_after: float) -> None:
        bucket.refused += 1
        self.refused_total += 1
        raise RateLimitedError(message, retry_after=round(retry_after, 3))

    def _trim(self) -> None:
        # forget the least recently seen idle agents; their buckets would be full again anyway
        while len(self._buckets) > self.max_agents:
            for name, bucket in self._buckets.items():
                if bucket.active == 0:
                    del self._buckets[name]
                    break
            else:
                return

    def refused(self) -> dict[str, int]:
        return {name: b.refused for name, b in self._buckets.items() if b.refused}


def retry_after_header(exc: RateLimitedError) -> dict[str, str]:
    """``Retry-After`` (whole seconds, per RFC 9110) plus ``retry-after-ms``, which the openai clients honour."""
    seconds = float(exc.details.get("retry_after", 1.0))
    return {"Retry-After": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}
