"""The SDK against a remote kernel: same API and types as embedded, from this process and from several others."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import httpx
import pytest

import aios
from aios_core.errors import AccessDeniedError, InvalidSyscallError, KernelNotRunningError, UnknownComponentError
from aios_core.identity import agent_scope
from aios_core.sdk import Agent
from aios_core.server.remote import RemoteKernel, connect
from aios_core.syscalls import LLMResponse, StreamPiece


def test_agent_token_sync_and_async_faces(server):
    kernel = connect(server.url, server.register("alice", program="alice-main"))
    agent = kernel.agent()
    assert isinstance(agent, Agent) and agent.name == "alice" and agent.program == "alice-main"
    reply = agent.chat("hello", max_tokens=16, extra={"sim_tokens": 5})
    assert isinstance(reply, LLMResponse) and reply.usage.completion_tokens == 5 and reply.core == "sim"
    pieces = list(agent.stream("hello", max_tokens=16, extra={"sim_tokens": 5}))
    assert all(isinstance(p, StreamPiece) for p in pieces) and pieces[-1].response is not None
    assert "".join(p.delta for p in pieces) == pieces[-1].response.content == reply.content

    async def main() -> tuple[LLMResponse, list[StreamPiece]]:
        got = await agent.achat("hello", max_tokens=16, extra={"sim_tokens": 5})
        streamed = [p async for p in agent.astream("hello", max_tokens=16, extra={"sim_tokens": 5})]
        await kernel.aclose()
        return got, streamed

    got, streamed = asyncio.run(main())
    assert got.content == reply.content and streamed[-1].response.content == reply.content
    # the caller's syscall object gets the kernel's id and timing, as with an embedded kernel
    kernel = connect(server.url, server.register("alice"))
    sc = kernel.agent().llm_syscall("hi", extra={"sim_tokens": 3})
    response = kernel.call(sc)
    assert sc.id == response.syscall_id and sc.timing.finished is not None
    assert sc.timing.turnaround == pytest.approx(sc.timing.waiting + sc.timing.service)


def test_memory_storage_and_tools_return_the_same_types(server):
    agent = connect(server.url, server.register("bob")).agent()
    item = agent.memory("add", key="fact", value={"k": [1, 2], "$type": "user data, not a tag"})
    assert type(item).__name__ == "MemoryItem"
    assert agent.memory("get", key="fact").value == {"k": [1, 2], "$type": "user data, not a tag"}
    blob = bytes(range(256))
    version = agent.storage("write", path="bin/data.bin", data=blob)
    assert type(version).__name__ == "VersionInfo" and version.version == 1
    read = agent.storage("read", path="bin/data.bin")
    assert type(read).__name__ == "FileContent" and read.data == blob and isinstance(read.data, bytes)
    agent.storage("write", path="notes.txt", data="hello")
    assert agent.storage("read", path="notes.txt").data == "hello"
    results = agent.call_tools([{"name": "calculator", "arguments": {"expression": "6*7"}}])
    assert type(results[0]).__name__ == "ToolResult" and results[0].ok and "42" in str(results[0].output)

    async def amain():
        return await agent.acall_tools([{"name": "calculator", "arguments": '{"expression": "1+1"}'}])

    assert asyncio.run(amain())[0].ok


def test_errors_keep_their_types_across_http(server):
    alice = connect(server.url, server.register("alice"))
    server.register("bob")
    with pytest.raises(UnknownComponentError, match="no core serves model"):
        alice.agent().chat("hi", model="gpt-9")
    with pytest.raises(InvalidSyscallError):  # validated locally, like an embedded kernel
        alice.call({"kind": "llm", "agent": "alice", "request": {"messages": []}})
    with pytest.raises(AccessDeniedError, match="cannot act as agent 'bob'"):
        alice.agent("bob")
    # the server enforces it too, whatever the client does
    raw = httpx.post(
        server.url + "/syscall",
        json={"kind": "llm", "agent": "bob", "request": {"messages": [{"role": "user", "content": "x"}]}},
        headers={"Authorization": f"Bearer {alice.token}"},
    )
    assert raw.status_code == 403 and raw.json()["error"]["code"] == "access_denied"
    with pytest.raises(KernelNotRunningError, match="cannot reach the kernel"):
        connect("http://127.0.0.1:9", "aios-x").agent("alice")


def test_admin_token_hosts_many_agents_each_under_its_own_token(server):
    kernel = connect(server.url, server.admin)
    with pytest.raises(InvalidSyscallError, match="name the agent"):
        kernel.agent()
    a = kernel.agent("writer", priority=3)
    assert a.chat("hi").content
    assert kernel.agent("writer", priority=3).chat("again").content  # same options: no new registration
    # an adapter's identity scope decides how a new agent is registered
    with agent_scope("reviewer", program="review-1", group="default", framework="langchain"):
        kernel.call({"kind": "llm", "agent": "reviewer", "request": {"messages": [{"role": "user", "content": "x"}]}})
    listing = server.http.get("/v1/agents", headers=server.admin_headers).json()
    agents = {a["name"]: a for a in listing["agents"]}
    assert agents["writer"]["priority"] == 3
    assert agents["reviewer"]["program"] == "review-1" and agents["reviewer"]["framework"] == "langchain"
    assert sorted(t["agent"] for t in listing["tokens"]) == ["reviewer", "writer"]  # one token each
    # priority can be lowered per syscall, never raised above the registered one
    sc = a.llm_syscall("hi")
    sc.priority = 50
    kernel.call(sc)
    kernel.end_agent("writer")
    assert "writer" not in {a["name"] for a in server.http.get("/v1/agents", headers=server.admin_headers).json()["agents"]}


def test_async_agent_handle(server):
    kernel = connect(server.url, server.register("asyncer", program="asyncer-p"))

    async def main() -> str:
        agent = await kernel.aagent()
        assert agent.name == "asyncer" and agent.program == "asyncer-p"
        reply = await agent.achat("hi")
        await kernel.aclose()
        return reply.content

    assert asyncio.run(main())


def test_connect_from_environment(server, monkeypatch):
    monkeypatch.setenv("AIOS_URL", server.url)
    monkeypatch.setenv("AIOS_TOKEN", server.register("envy"))
    kernel = aios.connect()
    assert isinstance(kernel, RemoteKernel) and kernel.agent().chat("hi").content
    assert kernel.whoami()["agent"] == "envy"


CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    import aios

    kernel = aios.connect()          # AIOS_URL / AIOS_TOKEN
    agent = kernel.agent()
    out = []
    for i in range(3):
        out.append(agent.chat(f"turn {i}", max_tokens=12, extra={"sim_tokens": 6}).usage.completion_tokens)
    out.append(sum(1 for p in agent.stream("streamed", max_tokens=12, extra={"sim_tokens": 6}) if p.delta))

    async def main():
        replies = await asyncio.gather(*(agent.achat(f"async {i}", max_tokens=12, extra={"sim_tokens": 6}) for i in range(4)))
        await kernel.aclose()
        return [r.usage.completion_tokens for r in replies]

    out.extend(asyncio.run(main()))
    print(json.dumps({"agent": agent.name, "tokens": out}))
    """
)


def test_agents_in_separate_processes_share_one_kernels_scheduler(live_server):
    from aios_core.cores.sim import SimCore

    server = live_server(cores=[SimCore(t0=0.002, a=0.0, b=0.0, max_batch=4)])
    names = [f"proc-{i}" for i in range(4)]
    procs = []
    for name in names:
        env = {**os.environ, "AIOS_URL": server.url, "AIOS_TOKEN": server.register(name)}
        procs.append(subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["agent"] for r in results) == names
    assert all(r["tokens"] == [6] * 8 for r in results)
    stats = server.stats()
    assert stats["pools"]["sim"]["completed"] == 4 * 8
    per_agent = {a["name"]: a for a in stats["agents"]}
    assert all(per_agent[n]["syscalls"] == 8 and per_agent[n]["completion_tokens"] == 48 for n in names)
    # one scheduler, one batch: generations of different processes ran side by side on the core
    assert stats["pools"]["sim"]["cores"][0]["mean_batch"] > 1.0


def test_served_models_are_asked_once_and_name_the_kernels_models(server, monkeypatch):
    """Catches an HTTP round trip per LLM call: adapters look the model up on every call that names one."""
    kernel = connect(server.url, server.admin)
    asked = []
    models = kernel.models
    monkeypatch.setattr(kernel, "models", lambda: asked.append(1) or models())
    first = kernel.served_models()
    assert first and first == kernel.served_models() and len(asked) == 1
    first.clear()  # a caller's copy cannot change what the client remembers
    assert kernel.served_models()
