"""Pricing a route in seconds: a remote engine's measured costs, and the pool choosing between a cache hit and a free engine."""

from __future__ import annotations

import pytest

from aios_core.cores.engine_speed import MIN_STEPS, EngineSpeed, ProgramMeans, route_cost
from aios_core.cores.sim import SimCore
from aios_core.syscalls import LLMRequest, Message

#: llama.cpp on one CPU thread, roughly: 19 ms a step alone, +11 ms per extra sequence, 3.4 ms a prompt token
STEP_1, PER_SEQ, PREFILL = 0.019, 0.011, 0.0034


def measured(step_1: float = STEP_1, per_seq: float = PER_SEQ, prefill: float = PREFILL) -> EngineSpeed:
    speed = EngineSpeed()
    for batch in (1, 4, 8):
        for _ in range(MIN_STEPS):
            speed.observe_step(step_1 + per_seq * (batch - 1), batch)
    speed.observe_first_token(step_1 + 500 * prefill, uncached_tokens=500, batch=1)
    return speed


def test_the_step_time_is_a_line_over_the_batch_sizes_seen():
    speed = measured()
    assert speed.ready
    assert speed.step_seconds(2) == pytest.approx(STEP_1 + PER_SEQ)
    assert speed.step_seconds(16) == pytest.approx(STEP_1 + 15 * PER_SEQ)  # extrapolated
    assert speed.prefill_seconds(1000) == pytest.approx(1000 * PREFILL)
    assert speed.describe()["step_ms_batch_8"] == pytest.approx(1000 * (STEP_1 + 7 * PER_SEQ))


def test_nothing_is_trusted_before_it_is_measured_and_one_batch_size_gives_a_flat_line():
    speed = EngineSpeed()
    assert not speed.ready and speed.step_seconds(1) is None and speed.prefill_seconds(100) is None
    speed.observe_first_token(2.0, uncached_tokens=500, batch=1)  # no step known yet: cannot subtract it
    assert speed.prefill_seconds(100) is None
    for _ in range(MIN_STEPS):
        speed.observe_step(0.05, 3)
    assert speed.step_seconds(1) == speed.step_seconds(12) == pytest.approx(0.05)
    speed.observe_first_token(0.05 + 0.2, uncached_tokens=10, batch=3)  # too few tokens to tell the prefill apart
    assert not speed.ready
    speed.observe_step(-1.0, 3)  # a clock that went backwards, or nonsense, is ignored
    speed.observe_step(0.05, 0)
    assert speed.step_seconds(3) == pytest.approx(0.05)


def test_each_program_has_its_own_mean_a_new_one_borrows_everyones_and_the_oldest_are_forgotten():
    means = ProgramMeans(max_programs=2)
    assert means.typical("ann") is None  # nothing seen yet
    means.add("ann", 200.0)
    means.add("bob", 10.0)
    assert means.typical("ann") == 200.0 and means.typical("bob") == 10.0 and means.typical("cid") == pytest.approx(105.0)
    means.add("cid", 30.0)  # ann is the least recently seen of three: forgotten
    assert means.typical("ann") == pytest.approx(80.0)  # everyone's
    means.forget("bob")  # bob ended
    assert means.typical("bob") == pytest.approx(80.0)
    means.add("", 50.0)  # a call of no program counts for everyone only
    assert means.typical("cid") == 30.0 and means.typical("") == pytest.approx(72.5)


def test_a_step_that_also_prefilled_another_prompt_does_not_make_the_engine_look_slow():
    speed = measured()
    before = speed.step_seconds(8)
    for i in range(40):
        # one step in eight also took a 500-token prompt through
        speed.observe_step(STEP_1 + 7 * PER_SEQ + (500 * PREFILL if i % 8 == 0 else 0.0), 8)
    assert speed.step_seconds(8) == pytest.approx(before)


def test_the_cost_weighs_a_cache_hit_on_a_busy_engine_against_a_prefill_on_an_idle_one():
    speed = measured()
    conversation, new = 700, 30

    def busy_with_cache(out: int) -> float:
        return route_cost(speed, uncached_tokens=new, output_tokens=out, running=3)

    def idle_without(out: int) -> float:
        return route_cost(speed, uncached_tokens=conversation + new, output_tokens=out, running=0)

    # a short answer: the prefill of the whole conversation costs more than a few slower steps
    assert busy_with_cache(16) < idle_without(16)
    # a long one: 250 steps at batch 4 instead of 1 cost more than the prefill
    assert busy_with_cache(250) > idle_without(250)
    # a core with nothing running slows nobody down
    assert route_cost(speed, uncached_tokens=0, output_tokens=10, running=0) == pytest.approx(10 * STEP_1)


class MeasuredCore(SimCore):
    """A sim core standing for a remote engine: measured costs, a cached share of the prompt, some streams running."""

    def __init__(self, name: str, *, speed: EngineSpeed | None, cached: int, busy: int) -> None:
        super().__init__(name=name, t0=0.0005, a=0.0, b=0.0, max_batch=8, default_tokens=(4, 4))
        self._speed, self._cached, self._busy = speed, cached, busy

    def engine_speed(self) -> EngineSpeed | None:
        return self._speed

    def prefix_affinity(self, request: LLMRequest) -> int:
        return self._cached

    def running(self) -> int:
        return super().running() + self._busy


#: about 700 tokens, nearly all of it cached on the engine that served the turns before
CONVERSATION = [Message(role="system", content="step " * 700), Message(role="user", content="and the next step?")]


@pytest.mark.parametrize(
    ("hint", "expected"),
    [(250, "idle"), (16, "holder")],
    ids=["a long answer goes to the idle engine", "a short one stays with its conversation"],
)
async def test_the_pool_routes_by_measured_cost(make_kernel, hint, expected):
    cores = [MeasuredCore("holder", speed=measured(), cached=700, busy=3), MeasuredCore("idle", speed=measured(), cached=0, busy=0)]
    async with make_kernel(cores=cores) as kernel:
        response = await kernel.agent("ann").achat(CONVERSATION, max_tokens=256, hint_tokens=hint)
    assert response.core == expected


async def test_without_measured_costs_the_cache_hit_wins_as_before(make_kernel):
    cores = [MeasuredCore("holder", speed=None, cached=700, busy=3), MeasuredCore("idle", speed=measured(), cached=0, busy=0)]
    async with make_kernel(cores=cores) as kernel:
        response = await kernel.agent("ann").achat(CONVERSATION, max_tokens=256, hint_tokens=250)
    assert response.core == "holder"


async def test_the_typical_answer_stands_in_for_a_missing_hint(make_kernel):
    """A short answer so far: the next call is expected to be short too, so it stays where its conversation is."""
    cores = [MeasuredCore("holder", speed=measured(), cached=700, busy=3), MeasuredCore("idle", speed=measured(), cached=0, busy=0)]
    async with make_kernel(cores=cores) as kernel:
        agent = kernel.agent("ann")
        first = await agent.achat(CONVERSATION, max_tokens=256)  # no history yet: max_tokens is the estimate
        later = await agent.achat(CONVERSATION, max_tokens=256)  # the first answer was 4 tokens
    assert first.core == "idle"
    assert later.core == "holder"


async def test_an_openai_core_learns_its_servers_costs_from_the_streams():
    from aios.bench.suites.agents.sim_server import SimServer

    from aios_core.cores.base import Generation
    from aios_core.cores.openai_core import OpenAICore

    server = SimServer(SimCore(t0=0.004, a=0.0, b=0.0, max_batch=4, prefix_cache=0, default_tokens=(12, 12)), serial=False)
    server.start()
    core = OpenAICore("engine", "sim", base_url=server.base_url, max_batch=4)
    await core.start()
    try:
        assert not core.engine_speed().ready
        for i in range(2):
            request = LLMRequest(messages=[Message(role="user", content=f"question {i}: " + "word " * 200)], max_tokens=12)
            chunks = [c async for c in core.generate(Generation(id=f"g{i}", request=request))]
            assert chunks[-1].finish_reason in ("stop", "length")
        speed = core.engine_speed()
        assert speed.ready
        assert 0 < speed.step_seconds(1) < 1.0 and speed.prefill_seconds(100) >= 0
        assert core.stats().extra["step_ms_batch_1"] > 0
    finally:
        await core.stop()
        server.stop()

async def test_each_agent_is_expected_to_answer_at_its_own_length(make_kernel):
    """A coding agent's answers run long and a chat's short: each next call is priced with its own agent's typical
    answer, not everyone's (short, as most answers are), so the coder's long turn leaves the crowded engine and the
    chat's short one stays with its conversation."""
    cores = [MeasuredCore("holder", speed=measured(), cached=700, busy=3), MeasuredCore("idle", speed=measured(), cached=0, busy=0)]
    async with make_kernel(cores=cores) as kernel:
        coder, chat = kernel.agent("coder"), kernel.agent("chat")
        for _ in range(8):
            await chat.achat(CONVERSATION, max_tokens=256)  # 4 tokens each
        await coder.achat(CONVERSATION, max_tokens=256, extra={"sim_tokens": 250})
        coder_next = await coder.achat(CONVERSATION, max_tokens=256, extra={"sim_tokens": 250})
        chat_next = await chat.achat(CONVERSATION, max_tokens=256)
    assert (coder_next.core, chat_next.core) == ("idle", "holder")


class HoldingCore(MeasuredCore):
    """A measured core that holds a slot for the next turn of every program it has served (until told to let go)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.held = True
        self.released: list[str] = []

    def holds_slot_for(self, program: str) -> bool:
        return self.held

    def slot_holders(self) -> set[str]:
        return set()

    def release_slot(self, program: str) -> None:
        self.held = False
        self.released.append(program)


@pytest.mark.parametrize(("hint", "expected"), [(250, "idle"), (16, "holder")],
                         ids=["a long answer leaves its crowded engine", "a short one uses its held slot"])
async def test_a_held_slot_is_priced_like_any_other_room(make_kernel, hint, expected):
    """The slot held for ann's turn is on an engine running three streams; another idles. The held slot wins only
    when it is cheaper: a long answer takes the idle engine, and the crowded one lets ann's room go."""
    holder = HoldingCore("holder", speed=measured(), cached=700, busy=3)
    cores = [holder, MeasuredCore("idle", speed=measured(), cached=0, busy=0)]
    async with make_kernel(cores=cores) as kernel:
        response = await kernel.agent("ann").achat(CONVERSATION, max_tokens=256, hint_tokens=hint)
    assert response.core == expected
    # moving away let the held room go, once; staying used it
    assert len(holder.released) == (0 if expected == "holder" else 1)
    assert holder.held is (expected == "holder")
