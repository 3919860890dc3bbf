"""A llama-server slot held for a program across its tool call."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest
from aios.bench.suites.agents.sim_server import free_port

from aios_core.cores.openai_core import OpenAICore
from aios_core.cores.slot_leases import HELD_OUT_LEASES, PauseClock, SlotLeases, lease_seconds
from aios_core.errors import ConfigError
from aios_core.syscalls import Message

SYSTEM = Message(role="system", content="You answer for the release team.")


def turn(*texts: str) -> list[Message]:
    return [SYSTEM, *(Message(role="user" if i % 2 == 0 else "assistant", content=t) for i, t in enumerate(texts))]


# --------------------------------------------------------------------------- the table


def test_a_held_slot_waits_for_its_program_and_frees_when_the_lease_runs_out():
    leases = SlotLeases(2, max_hold=5.0)
    leases.take("ann", now=0.0)  # ann's first call: nothing was held for it
    leases.grant("ann", 1.0, hold=2.0)
    assert leases.leased_to("ann", 1.5) and leases.holders(1.5) == {"ann"}
    # one of two slots is held for ann: bob may run beside nothing else, ann beside one more call
    assert leases.available("bob", busy=0, now=1.5) and not leases.available("bob", busy=1, now=1.5)
    assert leases.available("ann", busy=1, now=1.5)
    assert not leases.expire(2.9)
    assert leases.expire(3.0)  # 1.0 + 2.0
    assert leases.available("bob", busy=1, now=3.0) and not leases.leased_to("ann", 3.0)
    assert leases.describe() == {"slot_leases_granted": 1, "slot_leases_used": 0, "slot_leases_expired": 1, "slot_leases_yielded": 0, "slot_leases_moved": 0}


def test_a_lease_is_used_by_its_programs_next_call_capped_and_cleared_with_the_server():
    leases = SlotLeases(2, max_hold=5.0)
    leases.grant("ann", 0.0, hold=60.0)
    leases.grant("bob", 0.0, hold=1.0)
    assert not leases.available("cid", busy=0, now=0.5)  # both slots held
    assert leases.leased_to("ann", 4.9) and not leases.leased_to("ann", 5.0)  # capped at max_hold
    leases.take("bob", 0.5)
    assert leases.used == 1 and leases.holders(0.5) == {"ann"}
    leases.grant("", 0.5, hold=1.0)  # a call with no program: nothing to hold
    leases.grant("cid", 0.5, hold=0.0)  # not worth holding
    assert leases.holders(0.5) == {"ann"} and leases.granted == 2
    leases.clear()
    assert not leases.holders(0.5) and leases.available("cid", busy=1, now=0.5)


def test_held_room_is_given_up_soonest_to_run_out_first_and_never_the_callers_own():
    leases = SlotLeases(3, max_hold=5.0)
    leases.grant("ann", 0.0, hold=4.0)
    leases.grant("bob", 0.0, hold=2.0)
    leases.grant("cid", 0.0, hold=3.0)
    assert not leases.available("dan", busy=1, now=1.0)
    # dan needs one slot beside one running call: of three held, two go, bob's first (it would run out soonest)
    assert leases.make_room("dan", busy=1, now=1.0)
    assert leases.holders(1.0) == {"ann"} and leases.yielded == 2
    # ann's own room is never given up for ann; with every slot busy no lease can help, and none is let go for nothing
    assert leases.make_room("ann", busy=2, now=1.0) and leases.holders(1.0) == {"ann"}
    assert not leases.make_room("dan", busy=3, now=1.0) and leases.holders(1.0) == {"ann"}
    assert leases.describe()["slot_leases_yielded"] == 2
    # a program whose next call ran on another server: its room here goes, and is counted apart
    leases.grant("eve", 2.0, hold=1.0)
    leases.move_away("eve", 2.5)
    leases.move_away("eve", 2.6)  # nothing held any more: not counted twice
    assert leases.holders(2.5) == {"ann"} and leases.describe()["slot_leases_moved"] == 1


def test_a_lease_lasts_two_pauses_within_the_cap_and_only_when_recomputing_costs_more_than_idling():
    assert lease_seconds(0.4, 5.0, recompute_seconds=None, slots=8) == pytest.approx(0.8)
    assert lease_seconds(10.0, 5.0, recompute_seconds=None, slots=8) == 5.0
    assert lease_seconds(None, 3.0, recompute_seconds=None, slots=8) == 3.0  # no pause seen yet: the cap
    # idling one of 8 slots for 0.8 s costs 0.1 s of the engine: a 0.05 s prefill is not worth it, a 2 s one is
    assert lease_seconds(0.4, 5.0, recompute_seconds=0.05, slots=8) == 0.0
    assert lease_seconds(0.4, 5.0, recompute_seconds=2.0, slots=8) == pytest.approx(0.8)


def test_pauses_are_learned_per_program_and_a_new_program_borrows_everyones():
    clock = PauseClock()
    assert clock.typical("ann") is None
    clock.ended("ann", 10.0)
    clock.arrived("ann", 10.5)
    clock.arrived("ann", 11.0)  # no call of ann ended since: not a pause
    assert clock.typical("ann") == pytest.approx(0.5)
    assert clock.typical("bob") == pytest.approx(0.5)
    clock.ended("bob", 20.0)
    clock.arrived("bob", 21.5)
    assert clock.typical("bob") == pytest.approx(1.5) and clock.typical("ann") == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [-1, float("inf"), float("nan"), "5", "on", True])
def test_bad_keep_slots_is_refused(bad):
    with pytest.raises(ConfigError, match="keep_slots"):
        OpenAICore("remote", "m", base_url="http://127.0.0.1:9/v1", keep_slots=bad)


def test_bad_table_sizes_are_refused():
    with pytest.raises(ValueError, match="slots"):
        SlotLeases(0, 1.0)
    with pytest.raises(ValueError, match="max_hold"):
        SlotLeases(1, 0.0)


# --------------------------------------------------------------------------- against a server with llama-server's slots


class SlotServer:
    """An OpenAI-compatible server that keeps conversations in slots as llama-server does (words as tokens).

    A request takes the free slot sharing the largest part of its prompt (above 10 %), else the least recently
    used one; the slot keeps only the shared prefix. The reply streams a few words; usage reports the prompt
    tokens found in the slot.
    """

    def __init__(self, slots: int, reply_words: int = 4, step: float = 0.01, props: bool | str = False, loading: int = 0) -> None:
        #: answer GET /props as llama-server does (its slot count), else 404 as vLLM would, or with "html" a page that
        #: is not JSON (a proxy's or another server's); the first ``loading`` questions get 503, as llama-server
        #: answers while it loads its model
        self.props = props
        self.loading = loading
        self.props_asked = 0
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.slots: list[list[str]] = [[] for _ in range(slots)]
        self.last_used = [0.0] * slots
        self.reply_words, self.step = reply_words, step
        self.bodies: list[dict[str, Any]] = []
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def tokens(messages: list[dict[str, Any]]) -> list[str]:
        return [w for m in messages for w in [f"<{m['role']}>", *str(m.get("content") or "").split()]]

    def _pick(self, prompt: list[str], busy: set[int]) -> int | None:
        free = [i for i in range(len(self.slots)) if i not in busy]
        if not free:
            return None

        def shared(i: int) -> int:
            n = 0
            for a, b in zip(self.slots[i], prompt):
                if a != b:
                    break
                n += 1
            return n

        similar = [i for i in free if self.slots[i] and shared(i) / len(prompt) > 0.1]
        return max(similar, key=shared) if similar else min(free, key=lambda i: self.last_used[i])

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import StreamingResponse
        from starlette.routing import Route

        busy: set[int] = set()
        freed = asyncio.Condition()

        async def chat(request: Request) -> Any:
            body = await request.json()
            self.bodies.append(body)
            prompt = self.tokens(body["messages"])
            async with freed:
                while (slot := self._pick(prompt, busy)) is None:
                    await freed.wait()
                busy.add(slot)
            kept = 0
            for a, b in zip(self.slots[slot], prompt):
                if a != b:
                    break
                kept += 1
            words = [f"w{i}" for i in range(self.reply_words)]

            async def stream() -> Any:
                try:
                    for w in words:
                        await asyncio.sleep(self.step)
                        yield "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                                     "choices": [{"index": 0, "delta": {"content": w + " "}, "finish_reason": None}]}) + "\n\n"
                    yield "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                                 "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n"
                    usage = {"prompt_tokens": len(prompt), "completion_tokens": len(words), "total_tokens": len(prompt) + len(words),
                             "prompt_tokens_details": {"cached_tokens": kept}}
                    yield "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                                 "choices": [], "usage": usage}) + "\n\n"
                    yield "data: [DONE]\n\n"
                finally:
                    self.slots[slot] = [*prompt, "<assistant>", *words]
                    self.last_used[slot] = time.monotonic()
                    async with freed:
                        busy.discard(slot)
                        freed.notify_all()

            return StreamingResponse(stream(), media_type="text/event-stream")

        async def props(request: Request) -> Any:
            from starlette.responses import JSONResponse

            self.props_asked += 1
            if self.props_asked <= self.loading:
                return JSONResponse({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}, status_code=503)
            if self.props == "html":
                from starlette.responses import HTMLResponse

                return HTMLResponse("<html><body>props</body></html>")
            if not self.props:
                return JSONResponse({"detail": "Not Found"}, status_code=404)
            return JSONResponse({"default_generation_settings": {"n_ctx": 4096, "params": {}}, "total_slots": len(self.slots),
                                 "model_path": "m.gguf", "build_info": "b0-test"})

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/props", props, methods=["GET"])])

    def __enter__(self) -> SlotServer:
        import uvicorn

        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "the slot server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *_: Any) -> None:
        self._server.should_exit = True
        assert self._thread is not None
        self._thread.join(10)


async def two_agents_on_one_slot(make_kernel, keep_slots: float) -> tuple[dict[str, list[Any]], SlotServer]:
    """ann and bob each take two turns with a short tool pause between them, on a server with one slot."""
    with SlotServer(slots=1) as server:
        core = OpenAICore("engine", "m", base_url=server.base_url, max_batch=1, keep_slots=keep_slots)
        async with make_kernel(cores=[core]) as kernel:

            async def agent(name: str, task: str, delay: float) -> list[Any]:
                await asyncio.sleep(delay)
                first = await kernel.agent(name).achat(turn(task), max_tokens=8)
                await asyncio.sleep(0.05)  # the tool call
                second = await kernel.agent(name).achat(turn(task, first.content, "and then?"), max_tokens=8)
                return [first, second]

            # bob's first call queues behind ann's, so it is first in line when ann's ends
            ann, bob = await asyncio.gather(agent("ann", "build the docs", 0.0), agent("bob", "lint the code", 0.005))
            stats = core.stats().as_dict()
    return {"ann": ann, "bob": bob, "stats": [stats]}, server


async def test_without_keep_slots_the_next_call_in_line_overwrites_the_conversation_of_the_agent_on_its_tool_call(make_kernel):
    result, server = await two_agents_on_one_slot(make_kernel, keep_slots=0.0)
    ann_first, ann_second = result["ann"]
    # not even ann's first prompt was left of its conversation, only the system prompt: bob's turn had taken the slot
    assert ann_second.usage.cached_tokens < ann_first.usage.prompt_tokens


async def test_keep_slots_holds_the_slot_for_the_agents_next_turn(make_kernel):
    result, server = await two_agents_on_one_slot(make_kernel, keep_slots=5.0)
    ann_first, ann_second = result["ann"]
    bob_first, _ = result["bob"]
    # ann's second turn found its whole conversation: the previous prompt and the reply
    assert ann_second.usage.cached_tokens >= ann_first.usage.prompt_tokens + ann_first.usage.completion_tokens
    # bob waited for ann's held slot and still ran, before the lease could have run out
    assert bob_first.usage.prompt_tokens > 0
    assert all("id_slot" not in body for body in server.bodies)  # the server picks the slot
    stats = result["stats"][0]
    assert stats["slot_leases_used"] >= 1 and stats["slot_leases_granted"] >= stats["slot_leases_used"]


async def test_a_held_slot_frees_when_its_program_does_not_come_back(make_kernel):
    with SlotServer(slots=1) as server:
        core = OpenAICore("engine", "m", base_url=server.base_url, max_batch=1, keep_slots=0.3)
        async with make_kernel(cores=[core]) as kernel:
            await kernel.agent("ann").achat(turn("build the docs"), max_tokens=8)  # ann ends here: no next call
            assert core.holds_slot_for("ann")
            started = time.monotonic()
            reply = await asyncio.wait_for(kernel.agent("bob").achat(turn("lint the code"), max_tokens=8), timeout=10)
            waited = time.monotonic() - started
            assert not core.holds_slot_for("ann")
        assert reply.usage.completion_tokens > 0
        # bob was started by the lease running out, not by any other call ending
        assert waited >= 0.2
        assert core.stats().as_dict()["slot_leases_expired"] == 1


async def test_an_agent_that_ends_gives_its_held_slot_back_at_once(make_kernel):
    with SlotServer(slots=1) as server:
        core = OpenAICore("engine", "m", base_url=server.base_url, max_batch=1, keep_slots=60.0)
        async with make_kernel(cores=[core]) as kernel:
            await kernel.agent("ann").achat(turn("build the docs"), max_tokens=8)
            assert core.holds_slot_for("ann")
            waiting = asyncio.create_task(kernel.agent("bob").achat(turn("lint the code"), max_tokens=8))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # the only slot is held for ann
            kernel.end_agent("ann")
            assert not core.holds_slot_for("ann")
            # far sooner than the 60 s lease: ending ann freed the room and started bob
            reply = await asyncio.wait_for(waiting, timeout=20)
        assert reply.usage.completion_tokens > 0


def test_the_pause_clock_forgets_the_programs_it_has_not_seen_for_longest():
    clock = PauseClock(max_programs=2)
    for i, (program, pause) in enumerate((("ann", 3.0), ("bob", 0.5), ("cid", 0.5))):
        clock.ended(program, 10.0 * i)
        clock.arrived(program, 10.0 * i + pause)
    # ann's own pauses are forgotten (two programs kept): it borrows everyone's mean, no longer its own 3.0
    assert clock.typical("ann") != pytest.approx(3.0)
    assert clock.typical("bob") == pytest.approx(0.5) and clock.typical("cid") == pytest.approx(0.5)
    clock.ended("bob", 40.0)
    clock.arrived("bob", 42.0)
    assert clock.typical("bob") == pytest.approx(1.25)  # bob's own two pauses: 0.5, then 2.0
    clock.forget("cid")  # cid's agent ended
    assert clock.typical("cid") != pytest.approx(0.5)


async def agent_that_keeps_coming_back(make_kernel, keep: float, **kernel_options: Any) -> tuple[float, int, dict[str, Any]]:
    """ann loops on a one-slot server, back within its lease after every call, while bob's one call waits.

    How long bob waited, how many calls ann made, and the core's counters.
    """
    with SlotServer(slots=1, reply_words=2, step=0.005) as server:
        core = OpenAICore("engine", "m", base_url=server.base_url, max_batch=1, keep_slots=keep)
        async with make_kernel(cores=[core], **kernel_options) as kernel:
            bob_done = asyncio.Event()
            ann_calls = 0

            async def ann() -> None:
                nonlocal ann_calls
                deadline = time.monotonic() + 8.0
                while not bob_done.is_set() and time.monotonic() < deadline:
                    await kernel.agent("ann").achat(turn("watch the queue", f"call {ann_calls}"), max_tokens=4)
                    ann_calls += 1
                    await asyncio.sleep(0.02)  # a short tool call: back well within a lease of two such pauses

            looping = asyncio.create_task(ann())
            while ann_calls < 3:  # ann's pauses are learned and it holds the slot between its calls
                await asyncio.sleep(0.01)
            asked = time.monotonic()
            await kernel.agent("bob").achat(turn("lint the code"), max_tokens=4)
            waited = time.monotonic() - asked
            bob_done.set()
            await looping
            stats = core.stats().as_dict()
    return waited, ann_calls, stats


async def test_an_agent_that_keeps_coming_back_cannot_keep_a_held_slot_from_a_waiting_call_past_the_bound(make_kernel):
    """ann returns after every call within its lease, so without a bound its held slot would never be anyone else's."""
    keep = 0.2
    bound = keep * HELD_OUT_LEASES
    waited, ann_calls, stats = await agent_that_keeps_coming_back(make_kernel, keep)
    # bob ran after at most the bound of being kept out, plus one of ann's calls, not after ann's 8 s of calls
    assert bound < waited < bound + 1.5, f"bob waited {waited:.2f} s while ann made {ann_calls} calls"
    assert stats["slot_leases_used"] >= 3  # ann's held slot was really used between its calls
    assert stats["slot_leases_yielded"] >= 1  # and bob took it once it had kept bob out for the bound


async def test_held_room_gives_way_to_a_call_the_scheduler_judges_starving(make_kernel):
    """PLAS's max_wait bounds every wait, the wait for held room included, though held room's own bound is far longer."""
    keep = 1.0
    assert keep * HELD_OUT_LEASES > 8.0  # held room's own bound would outlast ann's whole loop
    waited, ann_calls, stats = await agent_that_keeps_coming_back(make_kernel, keep, scheduler="plas",
                                                                  scheduler_options={"max_wait": 0.5})
    assert 0.5 < waited < 0.5 + 1.5, f"bob waited {waited:.2f} s while ann made {ann_calls} calls"
    assert stats["slot_leases_yielded"] >= 1


@pytest.mark.parametrize(("props", "keep_slots", "held"), [(True, "auto", True), (False, "auto", False), (True, 0, False)])
async def test_keep_slots_auto_holds_slots_only_on_a_server_that_says_it_is_llama_server(make_kernel, props, keep_slots, held):
    with SlotServer(slots=2, props=props) as server:
        core = OpenAICore("engine", "m", base_url=server.base_url, max_batch=2, keep_slots=keep_slots)
        async with make_kernel(cores=[core]) as kernel:
            await kernel.agent("ann").achat(turn("build the docs"), max_tokens=8)
            assert core.holds_slot_for("ann") is held
            assert ("slot_leases_granted" in core.stats().as_dict()) is held
        # an explicit keep_slots asks the server nothing
        assert server.props_asked == (1 if keep_slots == "auto" else 0)


async def test_keep_slots_auto_says_when_max_batch_is_not_the_servers_slot_count(make_kernel, caplog):
    with SlotServer(slots=4, props=True) as server:
        core = OpenAICore("engine", "m", base_url=server.base_url, max_batch=8)
        with caplog.at_level("WARNING", logger="aios_core.cores.openai_core"):
            async with make_kernel(cores=[core]):
                pass
    assert any("max_batch is 8 but the server has 4 slots" in r.getMessage() for r in caplog.records)


async def test_keep_slots_auto_with_a_server_that_is_not_up_holds_nothing_and_the_kernel_starts(make_kernel):
    core = OpenAICore("engine", "m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_batch=2)
    async with make_kernel(cores=[core]):
        assert not core.holds_slot_for("ann") and core.slot_holders() == set()


async def wait_for(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_keep_slots_auto_asks_again_once_a_server_that_was_not_up_streams_a_call(make_kernel):
    server = SlotServer(slots=2, props=True)  # not started yet: the kernel starts first
    core = OpenAICore("engine", "m", base_url=server.base_url, max_batch=2, max_retries=0)
    async with make_kernel(cores=[core]) as kernel:
        with server:
            await kernel.agent("ann").achat(turn("build the docs"), max_tokens=8)
            await wait_for(lambda: server.props_asked == 1 and "slot_leases_granted" in core.stats().as_dict())
            # from the next call on, a finished call's slot is held for its agent's next turn
            await kernel.agent("ann").achat(turn("build the docs", "done", "and then?"), max_tokens=8)
            assert core.holds_slot_for("ann")


async def test_keep_slots_auto_asks_a_loading_server_again_but_not_on_every_call(make_kernel):
    # loading at start and when asked again: asked twice in all, however many calls stream
    with SlotServer(slots=2, props=True, loading=2) as server:
        core = OpenAICore("engine", "m", base_url=server.base_url, max_batch=2)
        async with make_kernel(cores=[core]) as kernel:
            assert server.props_asked == 1
            await kernel.agent("ann").achat(turn("build the docs"), max_tokens=8)
            await wait_for(lambda: server.props_asked == 2)
            for i in range(3):
                await kernel.agent("ann").achat(turn("build the docs", "done", f"step {i}?"), max_tokens=8)
            assert server.props_asked == 2 and not core.holds_slot_for("ann")
    # loaded by the second question: slots are held from then on
    with SlotServer(slots=2, props=True, loading=1) as server:
        core = OpenAICore("engine", "m", base_url=server.base_url, max_batch=2)
        async with make_kernel(cores=[core]) as kernel:
            await kernel.agent("ann").achat(turn("build the docs"), max_tokens=8)
            await wait_for(lambda: "slot_leases_granted" in core.stats().as_dict())
            await kernel.agent("ann").achat(turn("build the docs", "done", "and then?"), max_tokens=8)
            assert server.props_asked == 2 and core.holds_slot_for("ann")


async def test_keep_slots_auto_with_a_props_page_that_is_not_json_holds_nothing_and_does_not_ask_again(make_kernel):
    """An answer that is not JSON (a proxy's page, another server's) says the server is not llama-server: like a 404,
    nothing is held and the question is not asked again, however many calls stream; the calls themselves are served."""
    with SlotServer(slots=2, props="html") as server:
        core = OpenAICore("engine", "m", base_url=server.base_url, max_batch=2)
        async with make_kernel(cores=[core]) as kernel:
            for i in range(3):
                response = await kernel.agent("ann").achat(turn("build the docs", "done", f"step {i}?"), max_tokens=8)
                assert response.content
            assert server.props_asked == 1
            assert not core.holds_slot_for("ann") and "slot_leases_granted" not in core.stats().as_dict()
