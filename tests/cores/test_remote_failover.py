"""An answer whose server dies mid-stream continues on another server instead of failing.

The dying server is a few lines of asyncio: it streams one chunk of an OpenAI chat
completion, then drops the connection, as a killed llama-server or vLLM does.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aios.bench.suites.agents.sim_server import SimServer

from aios_core.cores.openai_core import OpenAICore
from aios_core.cores.sim import SimCore
from aios_core.errors import CoreError

FIRST_PIECE = "The release is"


async def dying_server() -> tuple[asyncio.Server, str, list[dict]]:
    """A server that sends ``FIRST_PIECE`` and then drops every stream; it records the bodies it got."""
    bodies: list[dict] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        bodies.append(json.loads(await reader.readexactly(length)))
        chunk = {
            "id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "sim",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": FIRST_PIECE}, "finish_reason": None}],
        }
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n")
        writer.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # killed mid-answer: no finish reason, no [DONE]

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1", bodies


@pytest.fixture
def healthy_server():
    server = SimServer(SimCore(max_batch=4, seed=1, default_tokens=(1_000, 1_000)), serial=False)
    server.start()
    yield server
    server.stop()


async def test_an_answer_cut_off_mid_stream_is_continued_on_another_server(make_kernel, healthy_server):
    dying, dying_url, bodies = await dying_server()
    cores = [
        OpenAICore("engine-0", "sim", base_url=dying_url, max_batch=4, max_retries=0),
        OpenAICore("engine-1", "sim", base_url=healthy_server.base_url, max_batch=4),
    ]
    try:
        async with make_kernel(cores=cores) as kernel:
            pieces = []
            response = None
            # both idle: the tie goes to engine-0, the one that dies
            async for piece in kernel.agent("ann").astream("Summarise the release notes.", max_tokens=12):
                pieces.append(piece.delta)
                response = piece.response or response
            assert len(bodies) == 1, "the request went to the dying server first"
            assert response is not None and response.core == "engine-1"
            assert response.content.startswith(FIRST_PIECE) and len(response.content) > len(FIRST_PIECE)
            assert "".join(pieces) == response.content, "the caller's stream holds the answer once, without a restart"
            assert response.finish_reason == "length" and response.usage.completion_tokens == 12
            # the kernel keeps serving
            assert (await kernel.agent("bob").achat("hello", max_tokens=3)).content
            # the stream that died mid-answer left nothing behind waiting for a first token
            assert not any(core._awaiting_first for core in cores)
    finally:
        dying.close()


async def test_with_no_server_able_to_continue_the_caller_gets_the_error(make_kernel):
    dying, dying_url, _ = await dying_server()
    try:
        async with make_kernel(cores=[OpenAICore("only", "sim", base_url=dying_url, max_batch=2, max_retries=0)]) as kernel:
            with pytest.raises(CoreError, match="mid-answer"):
                await kernel.agent("ann").achat("Summarise the release notes.", max_tokens=12)
    finally:
        dying.close()


async def test_a_server_that_failed_and_still_refuses_connections_fails_fast():
    import socket

    from aios_core.cores.base import Generation
    from aios_core.syscalls import LLMRequest

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    core = OpenAICore("gone", "sim", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff=0.2)
    await core.start()
    try:
        request = LLMRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=3)

        async def attempt(gen_id: str) -> float:  # seconds the generation took to fail
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            chunks = [c async for c in core.generate(Generation(id=gen_id, request=request))]
            assert chunks[-1].finish_reason == "error" and chunks[-1].error.retryable
            return loop.time() - t0

        first = await attempt("first")  # unknown server: retried with backoff (about 0.2 s, then 0.4 s)
        assert core.stats().extra["errors"] == 3 and core.stats().extra["retries"] == 2 and first >= 0.4
        await attempt("second")  # known to have failed, still refusing: no retry, no backoff; the pool moves it
        assert core.stats().extra["errors"] == 4 and core.stats().extra["retries"] == 2
    finally:
        await core.stop()
