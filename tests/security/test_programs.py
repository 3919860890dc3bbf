"""Programs are per agent (issue 12, item 3).

The attack: under PLAS, alice labelled her calls ``program='bob'`` (the body
field, or ``X-AIOS-Program: bob``) and raised bob's attained service from 0 to
601, pushing bob down the scheduler's levels. A program id is now namespaced
by the agent that sends it (:func:`aios_core.agents.program_key`).
"""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st
from live_kernel import live_kernel

from aios_core.agents import program_key
from aios_core.config import load_config
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel

names = st.text(string.ascii_lowercase[:3] + "_.:@/+-", min_size=1, max_size=8)


def _attained(kernel: Kernel) -> dict[str, float]:
    pool = next(iter(kernel.pools.values()))
    return {name: stats.attained for name, stats in pool.scheduler._programs.items()}


def _llm(agent: str, program: str | None = None) -> dict:
    body = {"kind": "llm", "agent": agent, "request": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}}
    if program is not None:
        body["program"] = program
    return body


def test_an_agent_cannot_charge_its_calls_to_another_agents_program(tmp_path):
    with live_kernel(tmp_path / "data", scheduler="plas") as live:
        alice, live_bob = live.register("alice"), live.register("bob")
        assert live_bob
        for _ in range(3):
            assert live.http.post("/syscall", json=_llm("alice", program="bob"), headers=alice).status_code == 200
            chat = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
            assert live.http.post("/v1/chat/completions", json=chat, headers={**alice, "X-AIOS-Program": "bob"}).status_code == 200
        attained = live.on_loop(_attained, live.kernel)
        assert attained.get("bob", 0.0) == 0.0, attained  # bob's program is untouched
        assert attained[program_key("alice", "bob")] > 0  # alice's own program named 'bob' carries the service
        # what the operator sees: alice's program as she named it, under alice
        ps = {r["name"]: r for r in live.http.get("/v1/kernel/ps", headers=live.admin).json()["agents"]}
        assert "bob" in [p["program"] for p in ps["alice"]["programs"]]


def test_the_embedded_kernel_namespaces_programs_too(tmp_path):
    config = load_config(data_dir=tmp_path / "data", entry_point_plugins=False)
    with Kernel(config, cores=[SimCore(t0=0.0005, a=0.0, b=0.0)], scheduler="plas") as kernel:
        kernel.agent("bob")
        mallory = kernel.agent("mallory", program="bob")
        mallory.chat("hi", max_tokens=8)
        kernel.call(_llm("mallory", program="bob"))
        attained = bridge_attained(kernel)
        assert attained.get("bob", 0.0) == 0.0 and attained[program_key("mallory", "bob")] > 0
        kernel.end_agent("mallory")  # ending an agent forgets its default program's history
        kernel.agent("carol").chat("hi", max_tokens=8)
        assert "carol" in bridge_attained(kernel)
        kernel.end_agent("carol")
        assert "carol" not in bridge_attained(kernel)


def bridge_attained(kernel: Kernel) -> dict[str, float]:
    import asyncio

    async def read() -> dict[str, float]:
        return _attained(kernel)

    assert kernel.loop is not None
    return asyncio.run_coroutine_threadsafe(read(), kernel.loop).result(10)


@settings(max_examples=300, deadline=None)
@given(a=st.tuples(names, st.one_of(st.none(), names)), b=st.tuples(names, st.one_of(st.none(), names)))
def test_program_keys_of_different_agents_never_collide(a, b):
    if program_key(*a) == program_key(*b):
        # the same key means the same agent, and the same program (None and the agent's own name are its default program)
        assert a[0] == b[0]
        assert (a[1] or a[0]) == (b[1] or b[0])
