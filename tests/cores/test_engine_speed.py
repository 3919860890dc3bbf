"""Pricing a route in seconds: a remote engine's measured costs, and the pool choosing between a cache hit and a free engine."""

from __future__ import annotations

import asyncio

import pytest

from aios_core.cores.engine_speed import BATCH_VERDICT_SECONDS, MIN_STEPS, EngineSpeed, ProgramMeans, route_cost
from aios_core.cores.sim import SimCore, SimCosts
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


#: median steps (seconds) of one llama-server thread decoding Gemma 3 270M on a 2-core AMD EPYC, by batch size: fewer
#: tokens a second at two, three, five and seven streams than at one (docs/benchmarks.md, "Batch sizes the engine is
#: slow at")
AMD_STEPS = {1: 0.0128, 2: 0.0445, 3: 0.0736, 4: 0.0610, 5: 0.0900, 6: 0.0757, 7: 0.1051, 8: 0.0778}


def curve(steps: dict[int, float], now: float = 100.0) -> EngineSpeed:
    speed = EngineSpeed()
    for batch, seconds in steps.items():
        for _ in range(MIN_STEPS):
            speed.observe_step(seconds, batch, now=now)
    return speed


@pytest.mark.parametrize(("waiting", "target"), [(1, 1), (2, 1), (3, 1), (5, 1), (6, 6), (7, 6), (8, 8), (12, 8)])
def test_the_batch_target_is_the_fastest_size_the_waiting_work_can_reach(waiting, target):
    """Two or three calls run one after another (78 tokens a second against 45 or 41 together); six or eight run
    together; seven run as six, the seventh waiting for one of them to end."""
    speed = curve(AMD_STEPS)
    assert speed.best_batch(min(8, waiting), now=100.0) == target
    assert speed.steps_by_batch()["2"] == pytest.approx(44.5)


@pytest.mark.parametrize(("running", "waiting", "target"), [(1, 5, 1), (3, 5, 4), (3, 3, 3), (5, 7, 6), (6, 7, 6)])
def test_streams_already_running_are_no_choice_but_a_faster_size_above_them_is(running, waiting, target):
    """Three slow streams with two calls queued take one more (four streams make 66 tokens a second, three 41), not
    none until all three end; one stream with four queued stays alone."""
    assert curve(AMD_STEPS).best_batch(waiting, running=running, now=100.0) == target


def test_an_engine_whose_step_grows_smoothly_is_always_filled():
    speed = curve({b: STEP_1 + PER_SEQ * (b - 1) for b in range(1, 9)})
    assert [speed.best_batch(limit, now=100.0) for limit in range(1, 9)] == list(range(1, 9))


def test_a_size_not_measured_holds_nothing_back_and_a_smaller_one_must_be_clearly_faster():
    speed = curve({1: 0.010, 2: 0.0195})  # two streams make 2.6 % more tokens a second than one: within the noise
    assert speed.best_batch(2, now=100.0) == 2
    assert speed.best_batch(3, now=100.0) == 3  # three never measured: tried
    slow_two = curve({1: 0.010, 2: 0.030})
    assert slow_two.best_batch(2, now=100.0) == 1


def test_an_old_verdict_is_tried_again():
    """Two streams measured slow a while ago (the engine may have been busy with something else then): after
    BATCH_VERDICT_SECONDS they are let run together again, which measures them anew."""
    speed = curve({1: 0.010}, now=100.0)
    for _ in range(MIN_STEPS):
        speed.observe_step(0.030, 2, now=40.0)
    assert speed.best_batch(2, now=40.0 + BATCH_VERDICT_SECONDS) == 1
    assert speed.best_batch(2, now=41.0 + BATCH_VERDICT_SECONDS) == 2


class SlowAtTwoOrThree(SimCosts):
    """A step of 4 ms for one sequence and 12 ms a sequence for more: one stream makes three times the tokens of two."""

    def step(self, *, prefill_tokens: int = 0, batch: int = 1, context_tokens: int = 0) -> float:
        return 0.004 if batch == 1 else 0.012 * batch


class CountingSim(SimCore):
    """The server side: the batch of every step it takes."""

    def __init__(self) -> None:
        super().__init__(costs=SlowAtTwoOrThree(), max_batch=4, prefix_cache=0, default_tokens=(400, 400))
        self.batches: list[int] = []

    async def _step(self, seqs):
        self.batches.append(len(seqs))
        return await super()._step(seqs)


@pytest.mark.parametrize("by_speed", [True, False], ids=["batch_by_speed", "filling every slot"])
async def test_an_engine_slower_at_two_or_three_streams_runs_them_one_after_another(make_kernel, by_speed):
    """Three agents call at once, twice. The first time the core knows nothing of its engine and lets all three run
    together; they end one after another, so the engine's steps at three, two and one stream are measured. The second
    time it starts one call at a time (and fills every slot when told not to weigh speed)."""
    from aios.bench.suites.agents.sim_server import SimServer

    from aios_core.cores.openai_core import OpenAICore

    sim = CountingSim()
    server = SimServer(sim, serial=False)
    server.start()
    try:
        core = OpenAICore("engine", "sim", base_url=server.base_url, max_batch=4, keep_slots=0, batch_by_speed=by_speed)
        async with make_kernel(cores=[core]) as kernel:
            agents = [kernel.agent(f"agent{i}") for i in range(3)]

            async def round_(lengths: list[int]) -> None:
                await asyncio.gather(*(a.achat(f"question {n}", max_tokens=n) for a, n in zip(agents, lengths)))

            await round_([12, 24, 36])
            first = list(sim.batches)
            sim.batches.clear()
            await round_([12, 12, 12])
            second = list(sim.batches)
        assert max(first) == 3
        assert core.stats().extra["step_ms_by_batch"].keys() >= {"1", "2", "3"}
        assert max(second) == (1 if by_speed else 3)
        assert not core._awaiting_first  # every call streamed and ended: none left waiting for a first token
    finally:
        server.stop()


class TargetCore(MeasuredCore):
    """A measured core whose streams already running count toward a batch target it is told (``batch_by_speed``'s
    verdict), and whose cache holds the conversations named in ``cached`` (by their first message)."""

    def __init__(self, name: str, *, cached: dict[str, int], busy: int = 0, target: int = 8) -> None:
        super().__init__(name, speed=measured(), cached=0, busy=busy)
        self.conversations, self.target = cached, target

    def prefix_affinity(self, request: LLMRequest) -> int:
        return self.conversations.get(request.messages[0].content or "", 0)

    def batch_target(self, demand: int) -> int:
        return min(self.target, super().batch_target(demand))

    def streams_end(self) -> None:
        self._busy = 0
        self.capacity_freed()


def conversation(who: str) -> list[Message]:
    return [Message(role="system", content=f"{who}: " + "step " * 700), Message(role="user", content="and the next step?")]


async def test_a_call_waits_for_its_conversations_engine_held_at_its_fastest_batch_rather_than_move(make_kernel):
    """The engine holding ann's conversation runs the streams it is fastest at; an idle engine could take ann's call
    at once, but only by prefilling her 700 tokens again. She waits for her engine and starts there when a stream ends.
    (Routing used to drop an engine at its batch target from the choice: four to nine such moves a round.)"""
    holder = TargetCore("holder", cached={conversation("ann")[0].content: 700}, busy=3, target=3)
    idle = TargetCore("idle", cached={})
    async with make_kernel(cores=[holder, idle]) as kernel:
        call = asyncio.create_task(kernel.agent("ann").achat(conversation("ann"), max_tokens=64, hint_tokens=16))
        await asyncio.sleep(0.2)
        assert not call.done()
        holder.streams_end()
        response = await asyncio.wait_for(call, 10)
    assert response.core == "holder"


async def test_while_the_next_call_waits_for_its_engine_a_call_best_served_by_another_starts_there(make_kernel):
    """Ann's call waits for her engine's batch target; Bob's conversation is on the other engine, which has room:
    his call starts there at once rather than queue behind hers."""
    holder = TargetCore("holder", cached={conversation("ann")[0].content: 700}, busy=3, target=3)
    other = TargetCore("other", cached={conversation("bob")[0].content: 700}, busy=1)
    async with make_kernel(cores=[holder, other]) as kernel:
        ann = asyncio.create_task(kernel.agent("ann").achat(conversation("ann"), max_tokens=64, hint_tokens=16))
        await asyncio.sleep(0.05)
        bob = await asyncio.wait_for(kernel.agent("bob").achat(conversation("bob"), max_tokens=64, hint_tokens=16), 10)
        assert bob.core == "other" and not ann.done()
        holder.streams_end()
        assert (await asyncio.wait_for(ann, 10)).core == "holder"


def test_batch_by_speed_must_be_a_boolean():
    from aios_core.cores.openai_core import OpenAICore
    from aios_core.errors import ConfigError

    with pytest.raises(ConfigError, match="batch_by_speed must be true or false"):
        OpenAICore("engine", "sim", base_url="http://127.0.0.1:9/v1", batch_by_speed="yes")


def test_a_step_while_another_stream_waits_for_its_first_token_is_not_counted_as_a_decode_step():
    """llama-server puts a new stream's prompt into the steps of the others: at eight streams all starting at once most
    steps are prefills, and counting them made eight streams look four times slower than they decode. The batch
    target leaves them out; routing's price of a step keeps them (a step there is priced as it comes)."""
    from types import SimpleNamespace

    from aios_core.cores.base import Generation
    from aios_core.cores.openai_core import OpenAICore, _Part, _RemoteGen

    core = OpenAICore("engine", "sim", base_url="http://127.0.0.1:9/v1")
    request = LLMRequest(messages=[Message(role="user", content="hi")], max_tokens=64)
    decoding, starting = _RemoteGen(gen=Generation(id="a", request=request)), _RemoteGen(gen=Generation(id="b", request=request))
    core._flights = {"a": decoding, "b": starting}
    core._awaiting_first = {"a", "b"}  # as generate() leaves them: sent, no token streamed yet
    token = SimpleNamespace(usage=None, choices=[SimpleNamespace(delta=SimpleNamespace(content="x", tool_calls=None), finish_reason=None)])
    for _ in range(2 * MIN_STEPS):
        core._absorb(decoding, _Part(), token)
    assert core.engine_speed().steps_by_batch() == {}  # b's prompt was in every one of those steps
    assert core.engine_speed().step_seconds(2) is not None  # routing counts them
    core._absorb(starting, _Part(), token)  # b's first token: both decode from here
    for _ in range(MIN_STEPS):
        core._absorb(decoding, _Part(), token)
    assert list(core.engine_speed().steps_by_batch()) == ["2"]
