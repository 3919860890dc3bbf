"""The kernel as an HTTP service: the FastAPI app, a uvicorn server with graceful shutdown, and ``serve()``.

The kernel runs on the server's own event loop (started in the app's
lifespan), so a request reaches the scheduler without a thread hop. Endpoints:

==========================  ======  =====================================================
``/v1/chat/completions``    POST    OpenAI-compatible chat (agent token)
``/v1/models[/{id}]``       GET     models and cores served (any token)
``/syscall``                POST    any syscall, JSON result (agent token)
``/syscall/stream``         POST    LLM syscall as server-sent events (agent token)
``/v1/whoami``              GET     the token's identity
``/v1/agents``              POST    register an agent, get its token (admin)
``/v1/agents``              GET     agents and token hints (admin)
``/v1/agents/{name}``       DELETE  revoke an agent's tokens and end it (admin)
``/v1/kernel/stats``        GET     queues, cores, flights, agents, snapshots (admin)
``/v1/kernel/ps``           GET     agents, their programs and states (admin)
``/healthz`` ``/readyz``    GET     liveness; readiness (503 while draining)
``/metrics``                GET     Prometheus text (admin unless metrics_public)
``/docs`` ``/openapi.json`` GET     the API's documentation (any token unless docs_public)
==========================  ======  =====================================================

Every endpoint but the probes checks the token from the headers before any
body is read, and the server sheds slow or piled-up connections before they
cost memory (:mod:`aios_core.server.shedding`, "Security settings" in
docs/configuration.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from aios_core import __version__
from aios_core.config import KernelConfig
from aios_core.errors import AIOSError, InvalidSyscallError
from aios_core.kernel import Kernel
from aios_core.server import admin_api, dashboard, openai_api, syscall_api
from aios_core.server.auth import TokenStore
from aios_core.server.dashboard_stream import registry_of
from aios_core.server.errors import NotFoundError, RateLimitedError, error_body
from aios_core.server.lifecycle import RequestTracker, ServerState
from aios_core.server.limits import BodyLimitMiddleware, retry_after_header
from aios_core.server.settings import ServerSettings
from aios_core.server.shedding import AuthGate, guarded_protocol, public_paths

log = logging.getLogger(__name__)

#: how long failed (aborted) requests get to send their error before connections are closed
ABORT_FLUSH_SECONDS = 5.0


def state_dir_for(kernel: Kernel, settings: ServerSettings) -> Path:
    return settings.state_dir or (Path(kernel.config.data_dir) / "server")


def create_app(kernel: Kernel, settings: ServerSettings | None = None) -> FastAPI:
    """The ASGI app serving ``kernel``; the kernel starts and stops with the app's lifespan."""
    settings = settings or ServerSettings()
    admin = settings.admin_token.get_secret_value() if settings.admin_token is not None else None
    tokens = TokenStore(state_dir_for(kernel, settings), admin_token=admin, max_per_agent=settings.max_credentials_per_agent)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            tokens.open()
            await kernel.astart()
        except BaseException as exc:
            app.state.startup_error = exc
            raise
        for name, rec in tokens.agents().items():
            # agents keep their tokens across restarts: make the kernel know them again
            kernel.register_agent(name, group=rec.group, program=rec.program, priority=rec.priority, framework=rec.framework)
        app.state.server = ServerState(kernel, settings, tokens)
        log.info("kernel server ready: %d agents hold tokens (state in %s)", len(tokens.agents()), tokens.state_dir)
        try:
            yield
        finally:
            state: ServerState = app.state.server
            state.begin_drain()
            await kernel.astop(grace=settings.grace_seconds)

    app = FastAPI(title="AIOS kernel", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.tokens = tokens
    app.state.settings = settings
    app.state.kernel = kernel
    app.state.server = None
    app.state.startup_error = None
    app.include_router(openai_api.router)
    app.include_router(syscall_api.router)
    app.include_router(admin_api.router)
    app.include_router(dashboard.router)
    _install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes, body_timeout=settings.body_timeout, max_json_depth=settings.max_json_depth)
    # outside the body reader: a request without a valid token is refused before its body is read
    app.add_middleware(AuthGate, tokens=tokens, public=public_paths(settings) | dashboard.STATIC_PATHS, routes=lambda: app.router.routes)
    app.add_middleware(RequestTracker, state_of=lambda: app.state.server)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AIOSError)
    async def aios_error(request: Request, exc: AIOSError) -> JSONResponse:
        headers = retry_after_header(exc) if isinstance(exc, RateLimitedError) else None
        status = exc.http_status if 400 <= exc.http_status <= 599 else 500
        return JSONResponse(error_body(exc), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(InvalidSyscallError(f"invalid request: {exc.errors()[:3]}")), status_code=400)

    @app.exception_handler(ValidationError)
    async def pydantic_error(request: Request, exc: ValidationError) -> JSONResponse:
        # endpoints validate with validate_model (InvalidSyscallError); this is the net under anything that slipped through
        return JSONResponse(error_body(InvalidSyscallError(f"invalid request: {exc.errors(include_url=False)[:3]}")), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err: AIOSError = NotFoundError(f"no endpoint {request.method} {request.url.path}; see /docs for the API")
        else:
            err = AIOSError(str(exc.detail))
            err.code = "http_error"
        return JSONResponse(error_body(err), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        err = AIOSError(f"internal server error ({type(exc).__name__}); the kernel keeps running, see the server log")
        err.code = "internal_error"
        return JSONResponse(error_body(err), status_code=500)


class KernelServer(uvicorn.Server):
    """uvicorn's server plus the kernel's graceful shutdown: drain, let requests finish, fail the rest cleanly."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.api = app
        #: set once the server listens (or gave up starting): lets another thread wait without polling
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()

    @property
    def state(self) -> ServerState | None:
        return self.api.state.server  # type: ignore[no-any-return]

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = self.state
        if state is not None:
            # keep listening while draining: a new request gets a clean 503 (and readiness probes see 503)
            # instead of a refused connection; uvicorn's own shutdown closes the sockets afterwards
            state.begin_drain()
            # dashboard streams are open-ended: end them now rather than at their next read
            registry_of(self.api.state).close_all("the server is shutting down")
            grace = state.settings.grace_seconds
            if not await state.wait_idle(grace):
                aborted = state.abort_inflight()
                log.warning("grace period of %.1f s over: failing %d request(s) still in flight with 503", grace, aborted)
                await state.wait_idle(ABORT_FLUSH_SECONDS)
        await super().shutdown(sockets)

    @property
    def port(self) -> int:
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the server is not listening yet")


def make_server(
    kernel: Kernel,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    settings: ServerSettings | None = None,
    log_level: str = "warning",
    access_log: bool = False,
) -> KernelServer:
    settings = settings or ServerSettings()
    app = create_app(kernel, settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        # the kernel's grace applies first (KernelServer.shutdown); this is uvicorn's last-resort bound
        timeout_graceful_shutdown=ABORT_FLUSH_SECONDS + 1,
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]  # uvicorn hands it to call_later
        backlog=4096,
        # abuse shedding below HTTP (see aios_core.server.shedding): request-head deadline, connection caps, head size
        http=guarded_protocol(settings),
        limit_concurrency=settings.max_connections + 1,  # the protocol refuses connection max+1; uvicorn's 503 is a backstop
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    return KernelServer(config, app)


def serve(
    config: KernelConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    settings: ServerSettings | None = None,
    kernel: Kernel | None = None,
    log_level: str = "info",
    access_log: bool = False,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Run the kernel as an HTTP service until SIGINT/SIGTERM, then shut down gracefully (``aios serve``).

    ``announce`` receives a short banner (URL, admin token and where it was
    written); by default it goes to stderr, once, as the CLI's output.
    """
    kernel = kernel or Kernel(config)
    settings = settings or ServerSettings()
    server = make_server(kernel, host=host, port=port, settings=settings, log_level=log_level, access_log=access_log)
    tokens: TokenStore = server.api.state.tokens
    say = announce or (lambda text: sys.stderr.write(text + "\n"))
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("serving on %s: traffic is plain HTTP, put TLS in front of it outside a trusted network", host)
    where = "fixed by AIOS_SERVER_ADMIN_TOKEN" if settings.admin_token is not None else f"written to {tokens.admin_token_path} (mode 0600)"
    banner = (
        f"AIOS kernel at http://{host}:{port}  (OpenAI base URL: http://{host}:{port}/v1)\n"
        f"admin token ({where}):\n  {tokens.admin_token}\n"
        f"register an agent: POST /v1/agents {{\"name\": ...}} with the admin token; agents use their own token"
    )
    if settings.admin_token is not None:
        banner = banner.replace(f"  {tokens.admin_token}\n", "  (not shown)\n")
    say(banner)
    server.run()
    error = server.api.state.startup_error
    if error is not None:
        raise error
    if not server.started:
        raise AIOSError(f"the server did not start on {host}:{port} (port in use?); see the log above")


class BackgroundServer:
    """A kernel server on a loopback port in a background thread (tests, benchmarks, notebooks)."""

    def __init__(self, kernel: Kernel, *, settings: ServerSettings | None = None, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self.kernel = kernel
        self.server = make_server(kernel, host=host, port=port, settings=settings, log_level=log_level)
        self._thread = threading.Thread(target=self._run, name="aios-server", daemon=True)
        self._failure: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._failure = exc
        finally:
            self.server.ready.set()

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        self._thread.start()
        self.server.ready.wait(timeout)
        if not self.server.started:
            self.stop(5.0)
            error = self.server.api.state.startup_error or self._failure
            if isinstance(error, AIOSError):
                raise error
            reason = f"failed to start: {error!r}" if error is not None else f"did not start within {timeout} s"
            raise AIOSError(f"the kernel server {reason}") from error
        return self

    @property
    def state(self) -> ServerState:
        return self.server.api.state.server  # type: ignore[no-any-return]

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.server.port}"

    @property
    def admin_token(self) -> str:
        return self.server.api.state.tokens.admin_token  # type: ignore[no-any-return]

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop and return its result (thread-safe access to the kernel)."""
        loop = self.kernel.loop
        assert loop is not None

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(10)

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
