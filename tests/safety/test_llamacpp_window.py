"""Sliding-window layers that keep only what a sequence still sees, on the real Gemma 3 270M core.

Gemma 3's window layers attend to the last 512 tokens. The core sizes their
cache for the running sequences' windows (as llama-server does), and llama.cpp
reuses cells a sequence no longer sees. A kept conversation is then whole only
for continuing after its last cell: starting from the middle of it would read
cells another sequence has overwritten.

Each test compares, token for token, with the prompt run cold on a core that
keeps every cell (``swa_full``, no prefix cache). The prompts are lists the
model continues with confident tokens, so cell placement cannot change a
greedy choice (see tests/cores/test_llamacpp.py).
"""

from __future__ import annotations

import uuid

import pytest

from aios_core.cores.base import Generation
from aios_core.cores.llamacpp import LlamaCppCore
from aios_core.syscalls import LLMRequest, Message

pytestmark = pytest.mark.model


def numbers(start: int, n: int) -> str:
    return ", ".join(str(k) for k in range(start, start + n))


def request(messages: list[tuple[str, str]], max_tokens: int = 8) -> LLMRequest:
    return LLMRequest(messages=[Message(role=r, content=c) for r, c in messages], max_tokens=max_tokens, temperature=0.0)


async def generate(core: LlamaCppCore, req: LLMRequest) -> tuple[str, int]:
    """The reply and how many prompt tokens came from the cache."""
    text, cached = [], 0
    async for chunk in core.generate(Generation(id=uuid.uuid4().hex, request=req)):
        cached = cached or chunk.cached_tokens
        text.append(chunk.text)
        if chunk.error is not None:
            raise chunk.error
    return "".join(text), cached


async def cold(requests: list[LLMRequest]) -> list[str]:
    core = LlamaCppCore(name="cold", n_ctx=4096, max_batch=1, n_threads=1, prefix_slots=0, swa_full=True)
    await core.start()
    try:
        return [(await generate(core, r))[0] for r in requests]
    finally:
        await core.stop()


async def test_a_kept_conversation_past_the_window_is_continued_only_after_its_end():
    # one batch slot: the window layers hold 512 x (1 + 2 + 1) + 512 = 2560 cells beside 4096
    core = LlamaCppCore(n_ctx=4096, max_batch=1, n_threads=1, decode_reserve=16)
    await core.start()
    try:
        assert core.stats().extra["window"] == 512
        long_list = numbers(1000, 300)  # ~900 tokens: past the window
        first = request([("user", f"Continue the list: {long_list},")])
        reply, _ = await generate(core, first)
        # another conversation of ~1700 tokens wraps the window layers' cells around onto the first one's
        # oldest cells, which its own last token no longer sees
        await generate(core, request([("user", f"Continue the list: {numbers(5000, 560)},")]))
        # the first conversation continued after its end: its KV is used, and the text is the cold one
        follow = request([("user", f"Continue the list: {long_list},"), ("assistant", reply), ("user", "Again, the next numbers:")])
        # a prompt that shares only the first ~600 tokens of it: those cells are partly gone, so nothing is reused
        middle = request([("user", f"Continue the list: {numbers(1000, 200)}, and now count down: 9, 8, 7,")])
        got_middle, cached_middle = await generate(core, middle)
        got_follow, cached_follow = await generate(core, follow)
    finally:
        await core.stop()
    assert cached_middle == 0, "a prompt sharing only the middle of a kept sequence must not start from its cells"
    assert cached_follow > 800, "the conversation's own next turn continues its cells"
    assert [got_middle, got_follow] == await cold([middle, follow])


async def test_conversations_copied_to_host_ram_from_any_prefix_slot_come_back_exactly():
    # idle_kv_cells=0: every finished conversation goes to host RAM at once, from prefix slots whose ids are
    # above llama.cpp's n_seq_max (copied out through the scratch id); three of them use slots 2, 3 and 4
    core = LlamaCppCore(n_ctx=4096, max_batch=1, n_threads=1, idle_kv_cells=0)
    await core.start()
    try:
        firsts = [request([("user", f"Continue the list: {numbers(100 * (i + 1), 30)},")]) for i in range(3)]
        replies = [(await generate(core, r))[0] for r in firsts]
        seconds = [
            request([
                ("user", f"Continue the list: {numbers(100 * (i + 1), 30)},"), ("assistant", replies[i]),
                ("user", f"Continue the list: {numbers(100 * (i + 1) + 30, 20)},"),
            ])
            for i in range(3)
        ]
        got = [await generate(core, r) for r in seconds]
        stats = core.stats().extra
    finally:
        await core.stop()
    assert stats["host_cache_returns"] == 3, "every conversation came back from host RAM"
    assert stats["restore_fallbacks"] == 0, "copied back, not prefilled again"
    assert all(cached > 60 for _, cached in got)
    assert [text for text, _ in got] == await cold(seconds)


async def test_when_the_window_cells_run_out_kept_entries_make_room_and_the_step_runs():
    # four kept conversations past the window pin 4 x 512 of the 2560 window cells; a fifth long prompt's
    # second chunk needs more: the step frees idle entries and runs again instead of failing
    core = LlamaCppCore(n_ctx=8192, max_batch=1, n_threads=1, idle_kv_cells=8192, decode_reserve=16)
    await core.start()
    try:
        for i in range(4):
            await generate(core, request([("user", f"Continue the list: {numbers(2000 + 1000 * i, 200)},")]))
        last = request([("user", f"Continue the list: {numbers(9000, 330)},")])
        got, _ = await generate(core, last)
        stats = core.stats().extra
    finally:
        await core.stop()
    assert stats["window_evictions"] >= 1, "the window cells really ran out"
    assert [got] == await cold([last])
