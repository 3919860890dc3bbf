"""The openai core against a real OpenAI-compatible server (llama-cpp-python's, on Gemma 3 270M) on 127.0.0.1.

No mock anywhere: every request goes over HTTP to a server process these
tests start, and the failure tests kill real processes and dial real closed
ports. The error-mapping tests use a tiny real HTTP server that answers with a
fixed status (or never answers); they need no model.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from llama_server_kit import GEMMA_TEMPLATE, LlamaServer, free_port, gemma_gguf

from aios_core.clock import run_virtual
from aios_core.cores.base import Generation
from aios_core.cores.openai_core import OpenAICore
from aios_core.cores.remote_prefixes import message_tokens
from aios_core.errors import ContextLengthError, CoreError
from aios_core.syscalls import LLMRequest

MODEL = "gemma-3-270m"
QUESTION = "Write a short poem about the sea."


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return gemma_gguf(tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def server(gguf, tmp_path_factory):
    srv = LlamaServer(gguf, tmp_path_factory.mktemp("llama-server")).wait_ready()
    yield srv
    srv.stop()


def remote(server, name: str = "remote", **options) -> OpenAICore:
    options.setdefault("max_batch", 2)
    options.setdefault("context_length", 2048)
    options.setdefault("chat_template", GEMMA_TEMPLATE)
    options.setdefault("backoff", 0.05)
    return OpenAICore(name, options.pop("model", MODEL), base_url=server if isinstance(server, str) else server.url, **options)


def refused_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connections are refused


@pytest.mark.model
async def test_chat_through_the_kernel(make_kernel, server):
    core = remote(server)
    async with make_kernel(cores=[core]) as kernel:
        response = await kernel.agent("alice").achat(QUESTION, max_tokens=12)
        assert response.core == "remote"
        assert response.finish_reason in ("stop", "length")
        assert response.content
        assert 1 <= response.usage.completion_tokens <= 12
        assert response.usage.prompt_tokens > 0
        stats = core.stats().as_dict()
        assert stats["requests"] == 1 and stats["errors"] == 0 and stats["running"] == 0
        assert stats["tokens"] == response.usage.completion_tokens


@pytest.mark.model
async def test_streaming_deltas_add_up_to_the_response(make_kernel, server):
    async with make_kernel(cores=[remote(server)]) as kernel:
        deltas, final = [], None
        async for piece in kernel.agent("bob").astream(QUESTION, max_tokens=10):
            if piece.response is not None:
                final = piece.response
            else:
                deltas.append(piece.delta)
        assert final is not None and len(deltas) >= 2
        assert "".join(deltas) == final.content


@pytest.mark.model
async def test_tool_call_deltas_become_tool_calls(make_kernel, server):
    tool = {
        "name": "get_weather",
        "description": "current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    async with make_kernel(cores=[remote(server)]) as kernel:
        response = await kernel.agent("carol").achat(
            "What is the weather in Paris?", tools=[tool], tool_choice="get_weather", max_tokens=40
        )
        assert response.finish_reason == "tool_calls"
        (call,) = response.tool_calls
        assert call.name == "get_weather" and isinstance(call.arguments["city"], str)


@pytest.mark.model
async def test_prompt_longer_than_the_context_is_refused_and_the_kernel_keeps_serving(make_kernel, server):
    async with make_kernel(cores=[remote(server)]) as kernel:
        agent = kernel.agent("dave")
        with pytest.raises(ContextLengthError, match="does not fit the context"):
            await agent.achat("word " * 3000, max_tokens=8)
        assert (await agent.achat(QUESTION, max_tokens=4)).content


@pytest.mark.model
async def test_requests_avoid_an_endpoint_that_refuses_connections(make_kernel, server, caplog):
    dead = remote(refused_url(), "dead", max_retries=1)
    live = remote(server, "live")
    caplog.set_level(logging.WARNING)
    # the dead endpoint comes first, so ties in routing send work to it
    async with make_kernel(cores=[dead, live]) as kernel:
        agents = [kernel.agent(f"agent{i}") for i in range(3)]
        responses = await asyncio.gather(*(a.achat(QUESTION, max_tokens=6) for a in agents))
        assert [r.core for r in responses] == ["live"] * 3
        assert all(r.content for r in responses)
        assert dead.stats().extra["errors"] >= 2  # its own backoff retry, then the pool's retry elsewhere
        assert any("retrying" in rec.getMessage() for rec in caplog.records if rec.name == "aios_core.llm_pool")
        pool = next(iter(kernel.pools.values()))
        assert pool.failed == 0 and pool.completed == 3


@pytest.mark.model
async def test_server_killed_mid_stream_fails_that_request_and_the_kernel_keeps_serving(make_kernel, server, gguf, tmp_path):
    doomed_server = LlamaServer(gguf, tmp_path).wait_ready()
    try:
        doomed = remote(doomed_server, "doomed", model="gemma-doomed", max_retries=1)
        steady = remote(server, "steady")
        async with make_kernel(cores=[doomed, steady]) as kernel:
            agent = kernel.agent("erin")
            bystander = asyncio.ensure_future(kernel.agent("frank").achat(QUESTION, max_tokens=16, model=MODEL))
            received = []
            with pytest.raises(CoreError) as info:
                async for piece in agent.astream(QUESTION, max_tokens=400, model="gemma-doomed"):
                    received.append(piece.delta)
                    if len(received) == 3:
                        doomed_server.kill()
            assert len(received) >= 3
            assert info.value.retryable
            assert (await bystander).content  # the other core kept streaming through the crash
            assert doomed.running() == 0
            # the dead endpoint now fails fast with a clear error; the live one serves on
            with pytest.raises(CoreError, match="connection"):
                await agent.achat(QUESTION, max_tokens=4, model="gemma-doomed")
            assert (await agent.achat(QUESTION, max_tokens=4, model=MODEL)).content
    finally:
        doomed_server.stop()


@pytest.mark.model
async def test_preempt_then_resume_continues_the_answer(server):
    core = remote(server, "solo")
    await core.start()
    try:
        request = LLMRequest(messages=[{"role": "user", "content": QUESTION}], max_tokens=24)
        whole = [c async for c in core.generate(Generation(id="g0", request=request))]
        first, last = [], None
        async for chunk in core.generate(Generation(id="g1", request=request)):
            if chunk.finish_reason is not None:
                last = chunk
                break
            first.append(chunk)
            if len(first) == 5:
                core.preempt("g1")
        assert last is not None and last.finish_reason == "preempted"
        snapshot = last.snapshot
        assert snapshot.data is None and snapshot.state["text"] == "".join(c.text for c in first)
        assert snapshot.state["tokens"] == sum(c.tokens for c in first) >= 5
        assert core.running() == 0

        rest = [c async for c in core.generate(Generation(id="g1", request=request, resume=snapshot))]
        # greedy decoding continues the very answer (completion continuation), it does not start a new one
        assert rest[0].text == whole[len(first)].text
        assert rest[-1].finish_reason in ("stop", "length")
        assert rest[-1].error is None
        total = snapshot.state["tokens"] + sum(c.tokens for c in rest)
        assert total <= 24
        if rest[-1].finish_reason == "length":
            assert total == 24  # completion tokens count across both parts
        assert core.stats().snapshots == 1 and core.stats().restores == 1 and core.stats().extra["requests"] == 3
    finally:
        await core.stop()


@pytest.mark.model
async def test_kernel_preempts_and_resumes_remote_generations(make_kernel, server):
    core = remote(server, "shared", max_batch=1)
    async with make_kernel(cores=[core], scheduler="rr", scheduler_options={"quantum": 4}, preempt_recompute=True) as kernel:
        long_call = kernel.agent("long").llm_syscall(QUESTION, max_tokens=20)
        task = asyncio.ensure_future(kernel.acall(long_call))
        while core.running() == 0 or core.stats().generated_tokens == 0:
            await asyncio.sleep(0.02)
        short = await kernel.agent("short").achat(QUESTION, max_tokens=4)
        response = await task
        assert short.content and response.content
        assert long_call.timing.preemptions >= 1
        assert response.finish_reason in ("stop", "length")
        assert response.usage.completion_tokens <= 20
        assert core.stats().restores >= 1


@pytest.mark.model
async def test_cancelled_request_closes_its_stream(make_kernel, server):
    from aios_core.errors import SyscallTimeoutError

    core = remote(server)
    async with make_kernel(cores=[core]) as kernel:
        agent = kernel.agent("gina")
        with pytest.raises(SyscallTimeoutError):
            await agent.achat(QUESTION, max_tokens=400, timeout=1.5)
        for _ in range(100):
            if core.running() == 0:
                break
            await asyncio.sleep(0.02)
        assert core.running() == 0
        assert (await agent.achat(QUESTION, max_tokens=4)).content


@pytest.mark.model
async def test_configured_by_kind_with_the_model_discovered_from_the_server(server, data_dir):
    from aios_core.config import load_config
    from aios_core.errors import ConfigError
    from aios_core.kernel import Kernel

    config = load_config(
        cores=[{"kind": "openai", "name": "cfg", "base_url": server.url, "max_batch": 1}], data_dir=data_dir, entry_point_plugins=False
    )
    async with Kernel(config) as kernel:
        core = kernel.cores["cfg"]
        assert isinstance(core, OpenAICore)
        assert core.model.endswith(".gguf")  # the id llama-cpp-python's /v1/models lists
        assert (await kernel.agent("ivan").achat(QUESTION, max_tokens=3)).core == "cfg"
    bad = load_config(cores=[{"kind": "openai", "continuation": "completion"}], data_dir=data_dir, entry_point_plugins=False)
    with pytest.raises(ConfigError, match="needs chat_template"):
        await Kernel(bad).astart()


class Responder:
    """A tiny real HTTP server on 127.0.0.1 that answers every request with one fixed status and JSON body,
    or never answers at all (``status=None``): the misbehaving endpoints the error paths are about."""

    def __init__(self, status: int | None, body: dict | None = None, headers: dict | None = None) -> None:
        self.status, self.body, self.headers = status, body or {}, headers or {}
        self.requests = 0

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _handle(self, reader, writer) -> None:
        import json

        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
            await reader.readexactly(length)
            self.requests += 1
            if self.status is None:
                await asyncio.sleep(3600)
            payload = json.dumps(self.body).encode()
            extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
            writer.write(
                f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n{extra}"
                "connection: close\r\n\r\n".encode() + payload
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def generate_once(url: str, **options):
    # the scripted server answers one response: no /props question first (keep_slots "auto" is tested with slots)
    options.setdefault("keep_slots", 0)
    core = OpenAICore("edge", MODEL, base_url=url, backoff=0.01, **options)
    await core.start()
    try:
        request = LLMRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        chunks = [c async for c in core.generate(Generation(id="e", request=request))]
        return chunks[-1], core.stats().extra
    finally:
        await core.stop()


@pytest.mark.parametrize(
    ("status", "body", "error", "retryable", "text"),
    [
        (401, {"error": {"message": "Invalid API key"}}, CoreError, False, "check api_key"),
        (404, {"error": {"message": "model not found"}}, CoreError, False, "check model and base_url"),
        (400, {"error": {"message": "This model's maximum context length is 2048 tokens"}}, ContextLengthError, None, "does not fit"),
        (400, {"error": {"message": "bad field"}}, CoreError, False, "refused the request (400): bad field"),
        (503, {"error": {"message": "overloaded"}}, CoreError, True, "overloaded or failing (503)"),
    ],
)
async def test_server_errors_become_typed_errors(status, body, error, retryable, text):
    responder = Responder(status, body)
    async with responder as url:
        last, extra = await generate_once(url, max_retries=2)
    assert last.finish_reason == "error" and isinstance(last.error, error)
    assert text in last.error.message
    if retryable is not None:
        assert last.error.retryable is retryable
    # retryable failures were retried here with backoff before the first token; the others were not
    assert responder.requests == (3 if retryable else 1)
    assert extra["retries"] == (2 if retryable else 0)


def test_a_server_that_never_answers_times_out():
    # virtual time (every wait jumps the loop's clock, so the silent hour costs nothing): each of the two
    # attempts is given up exactly at the 0.3 s timeout, the retry after a backoff of about 0.01 s
    async def main() -> tuple[Any, dict, float]:
        async with Responder(None) as url:
            loop = asyncio.get_running_loop()
            started = loop.time()
            last, extra = await generate_once(url, timeout=0.3, max_retries=1)
            return last, extra, loop.time() - started

    last, extra, elapsed = run_virtual(main())
    assert last.finish_reason == "error" and last.error.retryable
    assert "did not answer in time" in last.error.message
    assert extra["retries"] == 1
    assert elapsed == pytest.approx(2 * 0.3, abs=0.02)  # catches: no read timeout, or a longer one than configured


@pytest.mark.model
async def test_prefix_affinity_routes_a_system_prompt_back_to_the_core_that_served_it(make_kernel, server):
    first, second = remote(server, "first"), remote(server, "second")
    system = "You are a terse assistant who answers in one line."
    with_system = LLMRequest(messages=[{"role": "system", "content": system}, {"role": "user", "content": QUESTION}], max_tokens=3)
    async with make_kernel(cores=[first, second]) as kernel:
        assert second.prefix_affinity(with_system) == 0
        [c async for c in second.generate(Generation(id="warm", request=with_system))]
        # the whole prompt was sent there (system prompt and question), estimated at 4 characters a token
        assert second.prefix_affinity(with_system) == sum(message_tokens(m) for m in with_system.messages)
        other = LLMRequest(messages=[{"role": "system", "content": "Something else."}, {"role": "user", "content": "hi"}])
        assert second.prefix_affinity(other) == 0 and first.prefix_affinity(with_system) == 0
        # both idle: without affinity the first core would win the tie
        response = await kernel.agent("hal").achat(QUESTION, system=system, max_tokens=3)
        assert response.core == "second"
        assert (await kernel.agent("ida").achat(QUESTION, max_tokens=3)).core == "first"
