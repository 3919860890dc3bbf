"""Routing a conversation's next turn back to the remote engine that holds its KV."""

from __future__ import annotations

import pytest
from aios.bench.suites.agents.sim_server import SimServer

from aios_core.cores.base import Generation
from aios_core.cores.openai_core import OpenAICore
from aios_core.cores.remote_prefixes import ConversationIndex, message_tokens
from aios_core.cores.sim import SimCore
from aios_core.errors import ConfigError
from aios_core.syscalls import LLMRequest, Message

SYSTEM = Message(role="system", content="You are the release assistant of a build farm. " * 8)


def turn(*texts: str) -> list[Message]:
    """A conversation: the system prompt, then user and assistant messages alternating."""
    return [SYSTEM, *(Message(role="user" if i % 2 == 0 else "assistant", content=t) for i, t in enumerate(texts))]


def test_the_next_turn_matches_the_prompt_and_reply_before_it():
    index = ConversationIndex(64)
    first = turn("build the docs")
    index.remember(first, Message(role="assistant", content="done: 12 pages"))
    follow_up = turn("build the docs", "done: 12 pages", "now the wheels")
    expected = sum(message_tokens(m) for m in follow_up[:-1])
    assert index.match(follow_up) == expected
    # another agent of the same application only shares the system prompt
    assert index.match(turn("lint the code")) == message_tokens(SYSTEM)


def test_a_changed_message_ends_the_match_and_unknown_conversations_match_nothing():
    index = ConversationIndex(64)
    index.remember(turn("build the docs"), Message(role="assistant", content="done: 12 pages"))
    edited = turn("build the docs", "done: 13 pages", "now the wheels")  # the client rewrote the reply
    assert index.match(edited) == message_tokens(SYSTEM) + message_tokens(edited[1])
    assert index.match([Message(role="system", content="another application"), Message(role="user", content="hi")]) == 0


def test_tool_calls_count_and_are_part_of_the_match():
    index = ConversationIndex(64)
    call = Message(role="assistant", tool_calls=[{"name": "search", "arguments": {"q": "pluggy hooks"}}])
    index.remember(turn("find the docs"), call)
    answered = [*turn("find the docs"), call, Message(role="tool", tool_call_id=call.tool_calls[0].id, content="3 results")]
    assert index.match(answered) == sum(message_tokens(m) for m in answered[:-1])
    assert message_tokens(call) > message_tokens(Message(role="assistant", content="x"))
    other_call = Message(role="assistant", tool_calls=[{"name": "search", "arguments": {"q": "other"}}])
    assert index.match([*turn("find the docs"), other_call]) == sum(message_tokens(m) for m in turn("find the docs"))


def test_least_recently_used_prefixes_are_forgotten_first_and_forget_clears():
    index = ConversationIndex(3)
    index.remember(turn("a"))  # system, system+a
    index.remember(turn("b"))  # system (touched), system+b; system+a is the oldest
    index.remember(turn("c"))  # evicts system+a
    assert len(index) == 3
    assert index.match(turn("a")) == message_tokens(SYSTEM)
    assert index.match(turn("c")) == sum(message_tokens(m) for m in turn("c"))
    index.forget()
    assert len(index) == 0 and index.match(turn("c")) == 0
    off = ConversationIndex(0)
    off.remember(turn("a"))
    assert off.match(turn("a")) == 0


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="capacity"):
        ConversationIndex(-1)
    with pytest.raises(ConfigError, match="prefix_cache"):
        OpenAICore("remote", base_url="http://127.0.0.1:9/v1", prefix_cache=-1)


@pytest.fixture
def two_servers():
    servers = [SimServer(SimCore(max_batch=4, seed=i, default_tokens=(3, 3)), serial=False) for i in range(2)]
    for s in servers:
        s.start()
    yield servers
    for s in servers:
        s.stop()


async def generate_text(core: OpenAICore, gen_id: str, messages: list[Message]) -> str:
    chunks = [c async for c in core.generate(Generation(id=gen_id, request=LLMRequest(messages=messages, max_tokens=3)))]
    assert chunks[-1].finish_reason in ("stop", "length")
    return "".join(c.text for c in chunks)


async def test_the_kernel_sends_each_agents_next_turn_to_the_server_that_served_its_last(make_kernel, two_servers):
    cores = [OpenAICore(f"engine-{i}", "sim", base_url=s.base_url, max_batch=4) for i, s in enumerate(two_servers)]
    async with make_kernel(cores=cores) as kernel:
        # two agents of one application, one on each server; then both servers see the system prompt again,
        # so affinity by system prompt alone is a tie (and a tie goes to engine-0)
        tasks = {"ann": ("build the docs", cores[0]), "bob": ("lint the code", cores[1])}
        replies = {name: await generate_text(core, f"first-{name}", turn(task)) for name, (task, core) in tasks.items()}
        for core in reversed(cores):
            await generate_text(core, f"warm-{core.name}", turn("warm up"))
        for name, (task, core) in tasks.items():
            follow_up = turn(task, replies[name], "and then?")
            other = next(c for c in cores if c is not core)
            assert core.prefix_affinity(LLMRequest(messages=follow_up)) > other.prefix_affinity(LLMRequest(messages=follow_up))
            assert (await kernel.agent(name).achat(follow_up, max_tokens=3)).core == core.name


async def test_the_callers_usage_carries_the_servers_prefix_cache_hit(make_kernel):
    server = SimServer(SimCore(max_batch=4, seed=0, prefix_cache=4, default_tokens=(3, 3)), serial=False)
    server.start()
    try:
        async with make_kernel(cores=[OpenAICore("engine", "sim", base_url=server.base_url, max_batch=4)]) as kernel:
            first = await kernel.agent("ann").achat(turn("build the docs"), max_tokens=3)
            second = await kernel.agent("bob").achat(turn("lint the code"), max_tokens=3)
        assert first.usage.cached_tokens == 0
        assert 0 < second.usage.cached_tokens < second.usage.prompt_tokens  # the shared system prompt
    finally:
        server.stop()


def test_a_lone_surrogate_from_a_clients_json_does_not_break_routing():
    index = ConversationIndex(8)
    odd = [SYSTEM, Message(role="user", content="half a pair: \ud800")]
    index.remember(odd)
    assert index.match(odd) == sum(message_tokens(m) for m in odd)
    assert index.match([SYSTEM, Message(role="user", content="half a pair: \udc00")]) == message_tokens(SYSTEM)
