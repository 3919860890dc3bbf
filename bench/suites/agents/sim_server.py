"""An OpenAI-compatible server answering with the sim core, one request at a time.

The "without AIOS" backend of ``--model sim``: what llama-cpp-python's server
is to the embedded model (a serial OpenAI endpoint that agents call
themselves), on the sim core's deterministic engine in real time. It makes
the whole harness (framework clients, HTTP, both setups) runnable in seconds,
which is what the CI tests do. It serves ``/v1/chat/completions`` (plain and
streamed) and ``/v1/models``; nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from typing import Any

from aios_core.cores.base import Generation
from aios_core.cores.sim import SimCore
from aios_core.errors import AIOSError
from aios_core.syscalls import LLMRequest

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def to_request(body: dict[str, Any]) -> LLMRequest:
    messages = []
    for m in body.get("messages") or []:
        role = m.get("role", "user")
        if role not in ("system", "user", "assistant"):
            role = "user"
        messages.append({"role": role, "content": _text(m.get("content")) or " "})
    stop = body.get("stop")
    return LLMRequest(
        messages=messages,
        max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 256),
        temperature=float(body.get("temperature") or 0.0),
        seed=body.get("seed"),
        stop=stop if stop else [],
    )


class SimServer:
    """Start with :meth:`start` (returns the base URL), stop with :meth:`stop`."""

    def __init__(self, core: SimCore, *, model: str = "sim", serial: bool = True) -> None:
        self.core = core
        #: False: requests reach the core at once and it batches them (the stand-in for llama-server's slots)
        self.serial = serial
        self.model = model
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ app

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        async def models(_: Request) -> JSONResponse:
            return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "aios-bench"}]})

        async def chat(request: Request) -> Any:
            body = await request.json()
            try:
                llm_request = to_request(body)
            except (AIOSError, ValueError) as exc:
                return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}}, status_code=400)
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                return StreamingResponse(self._sse(llm_request, include_usage), media_type="text/event-stream")
            text, prompt_tokens, cached, tokens, finish = await self._generate(llm_request)
            return JSONResponse(
                {
                    "id": "chatcmpl-" + uuid.uuid4().hex[:12],
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": self.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                    "usage": {
                        "prompt_tokens": prompt_tokens, "completion_tokens": tokens, "total_tokens": prompt_tokens + tokens,
                        "prompt_tokens_details": {"cached_tokens": cached},
                    },
                }
            )

        return Starlette(routes=[Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])])

    async def _pieces(self, request: LLMRequest) -> Any:
        assert self._lock is not None
        async with self._lock if self.serial else contextlib.nullcontext():  # serial: as llama-cpp-python's server
            gen = Generation(id=uuid.uuid4().hex, request=request)
            async for chunk in self.core.generate(gen):
                yield chunk
                if chunk.finish_reason is not None:
                    return

    async def _generate(self, request: LLMRequest) -> tuple[str, int, int, int, str]:
        """Text, prompt tokens, prompt tokens from the cache, completion tokens, finish reason."""
        parts, prompt, cached, tokens, finish = [], 0, 0, 0, "stop"
        async for chunk in self._pieces(request):
            parts.append(chunk.text)
            if chunk.prompt_tokens and not prompt:
                prompt, cached = chunk.prompt_tokens, chunk.cached_tokens
            tokens += chunk.tokens
            if chunk.finish_reason is not None:
                finish = "length" if chunk.finish_reason == "length" else "stop"
        return "".join(parts), prompt, cached, tokens, finish

    async def _sse(self, request: LLMRequest, include_usage: bool) -> Any:
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        created = int(time.time())

        def event(delta: dict[str, Any], finish: str | None, usage: dict[str, int] | None = None) -> str:
            payload: dict[str, Any] = {
                "id": cid, "object": "chat.completion.chunk", "created": created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
            }
            if usage is not None:
                payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n"

        yield event({"role": "assistant", "content": ""}, None)
        prompt, cached, tokens = 0, 0, 0
        async for chunk in self._pieces(request):
            if chunk.prompt_tokens and not prompt:
                prompt, cached = chunk.prompt_tokens, chunk.cached_tokens
            tokens += chunk.tokens
            if chunk.text:
                yield event({"content": chunk.text}, None)
            if chunk.finish_reason is not None:
                yield event({}, "length" if chunk.finish_reason == "length" else "stop")
        if include_usage:
            usage = {"prompt_tokens": prompt, "completion_tokens": tokens, "total_tokens": prompt + tokens}
            # as llama-server and vLLM report prompt tokens served from their prefix cache
            yield event({}, None, {**usage, "prompt_tokens_details": {"cached_tokens": cached}})
        yield "data: [DONE]\n\n"

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30.0) -> str:
        import uvicorn

        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            async def main() -> None:
                self._lock = asyncio.Lock()
                self._loop = asyncio.get_running_loop()
                await self.core.start()
                config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
                self._server = uvicorn.Server(config)
                serving = asyncio.create_task(self._server.serve())
                while not self._server.started and not serving.done():
                    await asyncio.sleep(0.01)
                ready.set()
                await serving
                await self.core.stop()

            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="sim-openai-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure:
            raise RuntimeError(f"the sim server did not start: {failure[0] if failure else 'timeout'}")
        return self.base_url

    def clear_cache(self, timeout: float = 10.0) -> int:
        """Empty the core's prefix cache (a benchmark round starts cold); returns how many entries went."""
        if self._loop is None:
            raise RuntimeError("the sim server is not running")
        return int(asyncio.run_coroutine_threadsafe(self.core.clear_cache(), self._loop).result(timeout))

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
