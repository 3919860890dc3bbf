"""A remote kernel (``aios serve``) with the API of an embedded one.

:class:`RemoteKernel` implements the SDK's transport (``acall``, ``call``,
``astream``, ``stream``) over HTTP, so ``aios.connect(url, token).agent("a")``
returns the same :class:`~aios_core.sdk.Agent` as ``kernel.agent("a")``, and
results come back as the same types (``LLMResponse``, ``ToolResult``, ``bytes``...),
errors as the same exception classes. Agents in separate processes (and
languages) share one kernel's scheduler this way.

Two kinds of token:

* an **agent token** acts as its agent only (the kernel refuses anything else);
* the **admin token** lets one process host many agents: the first syscall of
  each agent registers it (with the group/program/priority of the
  :func:`~aios_core.identity.agent_scope` in effect, if any) and uses the
  token the kernel issues for it, so even then every syscall travels under
  its own agent's token.

Both sync (``httpx.Client``) and async (``httpx.AsyncClient``, one per event
loop) paths are provided; closing a stream early closes its connection, which
cancels the generation in the kernel.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from aios_core.agents import AgentRecord
from aios_core.errors import AccessDeniedError, AIOSError, InvalidSyscallError, KernelNotRunningError, SyscallTimeoutError
from aios_core.identity import current_agent
from aios_core.server.errors import AuthenticationError, error_from_body
from aios_core.server.wire import decode, syscall_to_wire
from aios_core.syscalls import AnySyscall, StreamPiece, SyscallBase, Timing, parse_syscall

DEFAULT_URL = "http://127.0.0.1:8765"


class RemoteKernel:
    """The HTTP client of a kernel server; a drop-in transport for :class:`aios_core.sdk.Agent`."""

    #: the kernel runs in another process: framework tools (functions of this process) are declared with each
    #: call as client tools, which the kernel checks, authorizes and audits, and the adapter then runs here
    hosts_client_tools = True

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float | None = None,
        max_connections: int = 100,
    ) -> None:
        self.url = (url or os.environ.get("AIOS_URL") or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get("AIOS_TOKEN")
        if not token:
            raise AuthenticationError(
                "no token for the kernel: pass connect(url, token) or set AIOS_TOKEN "
                "(an agent token from POST /v1/agents, or the admin token the server wrote to <data_dir>/server/admin.token)"
            )
        self.token = token
        self._timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=60.0, pool=None)
        # a plain-HTTP kernel (loopback, a trusted network) needs no CA bundle: loading one costs ~10 ms per client
        self._verify = self.url.startswith("https://")
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._sync: httpx.Client | None = None
        self._async: weakref.WeakKeyDictionary[Any, httpx.AsyncClient] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._identity: dict[str, Any] | None = None
        #: admin mode: the registration (with its token) of each agent this process acts for
        self._registered: dict[str, dict[str, Any]] = {}
        self._closed = False
        #: the models the server answers for, asked once (adapters look a model up on every call it names)
        self._served: list[str] | None = None

    # ------------------------------------------------------------------ lifecycle (parity with Kernel)

    @property
    def running(self) -> bool:
        return not self._closed

    def start(self) -> RemoteKernel:
        return self

    def stop(self, **_: Any) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        import asyncio

        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        self.close()

    def __enter__(self) -> RemoteKernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RemoteKernel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"RemoteKernel({self.url!r})"

    # ------------------------------------------------------------------ clients

    def _client(self) -> httpx.Client:
        if self._closed:
            raise KernelNotRunningError(f"this connection to {self.url} was closed")
        with self._lock:
            if self._sync is None:
                self._sync = httpx.Client(timeout=self._timeout, limits=self._limits, verify=self._verify)
            return self._sync

    def _aclient(self) -> httpx.AsyncClient:
        import asyncio

        if self._closed:
            raise KernelNotRunningError(f"this connection to {self.url} was closed")
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = self._async[loop] = httpx.AsyncClient(timeout=self._timeout, limits=self._limits, verify=self._verify)
        return client

    @staticmethod
    def _headers(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def _request(self, method: str, path: str, *, token: str | None = None, body: Any = None) -> Any:
        with _transport_errors(self.url):
            response = self._client().request(method, self.url + path, headers=self._headers(token or self.token), content=_dumps(body))
        return _result(response.status_code, response.content)

    async def _arequest(self, method: str, path: str, *, token: str | None = None, body: Any = None) -> Any:
        with _transport_errors(self.url):
            response = await self._aclient().request(method, self.url + path, headers=self._headers(token or self.token), content=_dumps(body))
        return _result(response.status_code, response.content)

    # ------------------------------------------------------------------ identity

    def whoami(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = self._request("GET", "/v1/whoami")
        return self._identity

    async def awhoami(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = await self._arequest("GET", "/v1/whoami")
        return self._identity

    def _registration(self, name: str, options: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        scope = current_agent.get()
        if scope is not None and scope.name == name:
            body.update({"group": scope.group, "program": scope.program, "priority": scope.priority, "framework": scope.framework})
        body.update({k: v for k, v in options.items() if k in ("group", "program", "priority", "framework")})
        return {k: v for k, v in body.items() if v is not None}

    def _own_agent(self, identity: dict[str, Any], name: str) -> None:
        if identity["agent"] != name:
            raise AccessDeniedError(f"this token belongs to agent {identity['agent']!r}; it cannot act as agent {name!r}", agent=identity["agent"])

    def _token_for(self, name: str, **options: Any) -> str:
        identity = self.whoami()
        if not identity["admin"]:
            self._own_agent(identity, name)
            return self.token
        if self._needs_registration(name, options):
            self._registered[name] = self._request("POST", "/v1/agents", body=self._registration(name, options))
        return self._registered[name]["token"]  # type: ignore[no-any-return]

    async def _atoken_for(self, name: str, **options: Any) -> str:
        identity = await self.awhoami()
        if not identity["admin"]:
            self._own_agent(identity, name)
            return self.token
        if self._needs_registration(name, options):
            self._registered[name] = await self._arequest("POST", "/v1/agents", body=self._registration(name, options))
        return self._registered[name]["token"]  # type: ignore[no-any-return]

    def _needs_registration(self, name: str, options: dict[str, Any]) -> bool:
        """Register once per agent, and again only when asked for different options."""
        known = self._registered.get(name)
        if known is None:
            return True
        return any(key in options and options[key] != known.get(key) for key in ("group", "program", "priority", "framework"))

    # ------------------------------------------------------------------ agents (parity with Kernel)

    def register_agent(self, name: str, **options: Any) -> AgentRecord:
        """Register ``name`` (admin token) or confirm it is this token's agent; options: group, program, priority, framework."""
        self._token_for(name, **options)
        return self._record(name)

    async def aregister_agent(self, name: str, **options: Any) -> AgentRecord:
        await self._atoken_for(name, **options)
        return self._record(name)

    def _record(self, name: str) -> AgentRecord:
        info = self._registered.get(name) or self._identity or {}
        return AgentRecord(
            name=name,
            group=info.get("group") or "default",
            program=info.get("program") or name,
            priority=info.get("priority") or 0,
            framework=info.get("framework") or "sdk",
        )

    def agent(self, name: str | None = None, **options: Any) -> Any:
        """An SDK :class:`~aios_core.sdk.Agent` for ``name`` (default: the token's own agent)."""
        from aios_core.sdk import Agent

        if name is None:
            identity = self.whoami()
            if identity["admin"]:
                raise InvalidSyscallError("connected with the admin token: name the agent, e.g. kernel.agent('alice')")
            name = identity["agent"]
        record = self.register_agent(name, **options)
        return Agent(self, record.name, program=options.get("program") or record.program, priority=options.get("priority", record.priority))

    async def aagent(self, name: str | None = None, **options: Any) -> Any:
        """:meth:`agent` for async code (its first use of a token asks the kernel who the token is)."""
        from aios_core.sdk import Agent

        if name is None:
            identity = await self.awhoami()
            if identity["admin"]:
                raise InvalidSyscallError("connected with the admin token: name the agent, e.g. await kernel.aagent('alice')")
            name = identity["agent"]
        record = await self.aregister_agent(name, **options)
        return Agent(self, record.name, program=options.get("program") or record.program, priority=options.get("priority", record.priority))

    def end_agent(self, name: str) -> None:
        self._request("DELETE", f"/v1/agents/{name}")
        self._registered.pop(name, None)

    def health(self) -> dict[str, Any]:
        """The kernel's readiness (``/readyz``): raises KernelNotRunningError while it drains or is down."""
        return self._request("GET", "/readyz")  # type: ignore[no-any-return]

    async def ahealth(self) -> dict[str, Any]:
        return await self._arequest("GET", "/readyz")  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self._request("GET", "/v1/kernel/stats")  # type: ignore[no-any-return]

    async def astats(self) -> dict[str, Any]:
        return await self._arequest("GET", "/v1/kernel/stats")  # type: ignore[no-any-return]

    def ps(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/kernel/ps")["agents"]  # type: ignore[no-any-return]

    def has_agent(self, name: str) -> bool:
        """Whether this client already acts for ``name``: registered through it (admin token), or the token's own agent."""
        return name in self._registered or (self._identity is not None and self._identity.get("agent") == name)

    def served_models(self) -> list[str]:
        """The server's model names, asked once: a kernel's models are fixed while it runs."""
        if self._served is None:
            self._served = [str(m["id"]) for m in self.models()]
        return list(self._served)

    def tool_registry(self) -> None:
        """None: the kernel is in another process, so framework tools are declared per call (``hosts_client_tools``)."""
        return None

    def models(self) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/models")["data"]  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ transport: syscalls

    async def acall(self, syscall: AnySyscall | dict[str, Any] | str | bytes) -> Any:
        sc = _as_syscall(syscall)
        token = await self._atoken_for(sc.agent)
        data = await self._arequest("POST", "/syscall", token=token, body=syscall_to_wire(sc))
        return _unpack(sc, data)

    def call(self, syscall: AnySyscall | dict[str, Any] | str | bytes) -> Any:
        sc = _as_syscall(syscall)
        token = self._token_for(sc.agent)
        data = self._request("POST", "/syscall", token=token, body=syscall_to_wire(sc))
        return _unpack(sc, data)

    async def astream(self, syscall: Any) -> AsyncIterator[StreamPiece]:
        sc = _as_syscall(syscall)
        token = await self._atoken_for(sc.agent)
        events = _EventStream(sc)
        with _transport_errors(self.url):
            async with self._aclient().stream(
                "POST", self.url + "/syscall/stream", headers=self._headers(token), content=_dumps(syscall_to_wire(sc))
            ) as response:
                if response.status_code >= 400:
                    raise error_from_body(response.status_code, _json(await response.aread()))
                async for line in response.aiter_lines():
                    if (piece := events.feed(line)) is not None:
                        yield piece
                        if events.finished:
                            return
        raise events.unfinished()

    def stream(self, syscall: Any) -> Iterator[StreamPiece]:
        sc = _as_syscall(syscall)
        token = self._token_for(sc.agent)
        events = _EventStream(sc)
        with _transport_errors(self.url):
            with self._client().stream("POST", self.url + "/syscall/stream", headers=self._headers(token), content=_dumps(syscall_to_wire(sc))) as response:
                if response.status_code >= 400:
                    raise error_from_body(response.status_code, _json(response.read()))
                for line in response.iter_lines():
                    if (piece := events.feed(line)) is not None:
                        yield piece
                        if events.finished:
                            return
        raise events.unfinished()


def connect(url: str | None = None, token: str | None = None, **options: Any) -> RemoteKernel:
    """A remote kernel; ``url`` and ``token`` default to ``AIOS_URL`` / ``AIOS_TOKEN``."""
    return RemoteKernel(url, token, **options)


# --------------------------------------------------------------------------- helpers


def _as_syscall(syscall: Any) -> AnySyscall:
    # validated locally first: a malformed syscall fails here exactly as it would in an embedded kernel
    return syscall if isinstance(syscall, SyscallBase) else parse_syscall(syscall)  # type: ignore[return-value]


def _dumps(body: Any) -> bytes | None:
    return None if body is None else json.dumps(body).encode()


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


def _result(status: int, content: bytes) -> Any:
    data = _json(content)
    if status >= 400:
        raise error_from_body(status, data)
    return data


def _unpack(sc: AnySyscall, data: dict[str, Any]) -> Any:
    _receipt(sc, data.get("syscall"))
    return decode(data.get("result"))


def _receipt(sc: AnySyscall, receipt: dict[str, Any] | None) -> None:
    """Give the caller's syscall object the id and timing the kernel assigned (as an embedded kernel would)."""
    if not receipt:
        return
    sc.id = receipt.get("id", sc.id)
    try:
        sc.timing = Timing.model_validate(receipt.get("timing", {}))
    except ValueError:
        pass


class _EventStream:
    """The kernel's SSE stream of one syscall (``delta`` / ``response`` / ``error`` events), read line by line.

    One parser for both transports: the sync and the async stream feed it the
    lines they read and yield the pieces it completes.
    """

    def __init__(self, sc: AnySyscall) -> None:
        self._sc = sc
        self._event = "message"
        self._data: list[str] = []
        self.finished = False  # the final response arrived; nothing more is read

    def feed(self, line: str) -> StreamPiece | None:
        """The piece ``line`` completes (a blank line ends an event), else None; an ``error`` event raises it."""
        if line.startswith("event:"):
            self._event = line[6:].strip()
        elif line.startswith("data:"):
            self._data.append(line[5:].lstrip())
        elif not line:  # a blank line ends the event
            event, data = self._event, self._data
            self._event, self._data = "message", []
            if data:
                piece = _piece(self._sc, event, _json("\n".join(data).encode()))
                self.finished = piece.response is not None
                return piece
        return None

    @staticmethod
    def unfinished() -> AIOSError:
        return AIOSError("the kernel closed the stream before its final response")


def _piece(sc: AnySyscall, event: str, data: Any) -> StreamPiece:
    if event == "delta":
        return StreamPiece(str(data.get("delta", "")))
    if event == "response":
        _receipt(sc, data.get("syscall"))
        return StreamPiece("", decode(data.get("result")))
    if event == "error":
        raise error_from_body(200, data)
    raise AIOSError(f"unexpected event {event!r} in the kernel's stream")


def _transport_error(url: str, exc: httpx.HTTPError) -> AIOSError:
    if isinstance(exc, httpx.ConnectError):
        return KernelNotRunningError(f"cannot reach the kernel at {url}: {exc}; is `aios serve` running there?")
    if isinstance(exc, httpx.TimeoutException):
        return SyscallTimeoutError(f"the kernel at {url} did not answer in time: {exc!r}")
    return AIOSError(f"the connection to the kernel at {url} failed: {exc!r}")


@contextmanager
def _transport_errors(url: str) -> Iterator[None]:
    """Turn httpx's transport failures into the kernel's typed errors (not running, timeout, connection failed)."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise _transport_error(url, exc) from exc
