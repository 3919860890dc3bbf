"""The llama.cpp core's KV books and prefix policy, without a model.

Mutations each test catches (checked by hand on the code):
- make_room that stops one eviction early, or evicts the entry it was told to keep -> test_make_room_*
- a grant that does not grow in decode_reserve steps, or grows past its limit -> test_grow_*
- claim that hands out a slot twice or forgets to count the promise -> test_claim_*, the random walk
- give_back that leaves the cells counted (the cache would fill with ghosts of ended sequences) -> test_pause_*
- PrefixCache.reserve that evicts an entry still being published -> test_reserve_never_evicts_*
- plan_shared_start that waits for a prefix already computed, or shares one too short to pay, or publishes or waits
  for a system prompt an agent back from a tool call would copy back from host RAM anyway -> test_plan_*
- idle entries kept in the KV cache past hot_cells (no trim, or prefixes left out of it), a conversation dropped instead of copied
  to host RAM, retain evicting a published system prompt, a copy kept after the conversation continued,
  or host RAM past its budget -> test_host_ram_*
- cells() counting a system prompt once per conversation that holds it (each entry's length summed, the
  pre-fix code) -> test_cells_shared_*; evictable_cells counting cells a kept entry still holds -> the same tests
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from aios_core.cores.kv_ledger import MAX_PAUSED, KVLedger
from aios_core.cores.llamacpp_prefix import (
    MIN_PREFIX_GAIN,
    MIN_RETAINED,
    MIN_SHARED_PREFIX,
    CellSource,
    EntryKind,
    PrefixCache,
    StartPlan,
    common_prefix,
    plan_shared_start,
)


class FakeCells:
    """Records the KV-cell operations the cache asks for (instead of llama.cpp)."""

    def __init__(self) -> None:
        self.ops: list[tuple] = []

    def drop(self, slot: int) -> None:
        self.ops.append(("drop", slot))

    def share(self, src: int, dst: int, n: int) -> None:
        self.ops.append(("share", src, dst, n))

    def save(self, slot: int) -> bytes:
        self.ops.append(("save", slot))
        return bytes(10) * slot  # the size tells the slots apart


def toks(*parts: int | range) -> np.ndarray:
    out: list[int] = []
    for p in parts:
        out.extend(p if isinstance(p, range) else [p])
    return np.asarray(out, dtype=np.int32)


def make(capacity: int = 1000, slots: int = 4, reserve: int = 100, prefix_slots: int = 4) -> tuple[KVLedger, PrefixCache, FakeCells]:
    cells = FakeCells()
    cache = PrefixCache(list(range(slots, slots + prefix_slots)), cells)
    return KVLedger(capacity, list(range(slots)), reserve, cache), cache, cells


def test_first_promise_is_prompt_plus_decode_reserve_capped_at_the_limit_minus_what_is_shared():
    ledger, _, _ = make(reserve=100)
    assert ledger.first_reserve(50, limit=1000) == 150
    assert ledger.first_reserve(50, limit=80) == 80
    assert ledger.first_reserve(50, limit=1000, shared=20) == 130


def test_claim_takes_distinct_slots_and_counts_the_promise():
    ledger, _, _ = make(slots=2)
    s1, g1 = ledger.claim(10, limit=500)
    s2, g2 = ledger.claim(20, limit=500)
    assert s1 != s2 and {s1, s2} == {0, 1}
    assert ledger.reserved == g1.cells + g2.cells == 110 + 120
    assert not ledger.has_slot()
    with pytest.raises(RuntimeError, match="no free slot"):
        ledger.claim(1, limit=10)


def test_a_promise_beyond_capacity_is_refused_when_nothing_can_be_evicted():
    ledger, _, _ = make(capacity=300, reserve=100)
    assert ledger.make_room(ledger.first_reserve(150, limit=1000))  # 250 fits
    ledger.claim(150, limit=1000)
    assert not ledger.fits(100) and ledger.fits(50)
    assert not ledger.make_room(ledger.first_reserve(10, limit=1000))  # 110 more would be 360 > 300


def test_make_room_evicts_least_recently_used_unused_prefixes_first_and_never_the_kept_one():
    ledger, cache, cells = make(capacity=400, reserve=10)
    a = cache.adopt(toks(range(100)), slot=0)
    b = cache.adopt(toks(range(1000, 1100)), slot=1)
    c = cache.adopt(toks(range(2000, 2100)), slot=2)
    assert a and b and c and cache.cells() == 300
    cache.use(a)  # a becomes most recently used (and is in use: not evictable)
    cache.unuse(a)
    # 100 promised + 300 cached + 150 asked = 550 > 400: b goes first (least recent), c is kept, so a goes next
    ledger.claim(90, limit=1000)
    assert ledger.make_room(150, keep=c)
    assert [e.slot for e in cache.entries.values()] == [c.slot]
    assert [op for op in cells.ops if op[0] == "drop"] == [("drop", b.slot), ("drop", a.slot)]
    assert not ledger.make_room(250 + 1, keep=c)  # only c is left and it is kept
    assert ledger.make_room(250)  # without keep, c goes: 100 + 250 fits
    assert not cache.entries


def test_an_entry_in_use_is_not_evicted_and_its_cells_stay_counted_after_a_forced_eviction():
    ledger, cache, _ = make(capacity=300, reserve=10, prefix_slots=1)
    a = cache.adopt(toks(range(100)), slot=0)
    cache.use(a)
    assert ledger.committed() == 100  # held and not evictable
    assert not ledger.make_room(250)
    # a new prefix needs the only prefix slot: the entry in use goes, but its cells stay as a ghost
    b = cache.reserve(toks(range(500, 520)))
    assert b is not None and a.evicted and cache.cells() == 120
    cache.unuse(a)
    assert cache.cells() == 20


def test_grow_adds_decode_reserve_steps_up_to_the_limit():
    ledger, _, _ = make(capacity=1000, reserve=100)
    _, grant = ledger.claim(50, limit=320, shared=0)
    assert grant.cells == 150 and grant.covers(150) and not grant.covers(151)
    assert ledger.grow(grant) and grant.cells == 250
    assert ledger.grow(grant) and grant.cells == 320  # capped at the limit
    assert not ledger.grow(grant) and grant.cells == 320
    assert ledger.reserved == 320


def test_grow_is_refused_when_the_cache_is_full_and_evicts_unused_prefixes_when_that_helps():
    ledger, cache, _ = make(capacity=300, reserve=100)
    _, grant = ledger.claim(50, limit=1000)  # 150
    cache.adopt(toks(range(100)), slot=0)  # 250 in all
    assert ledger.grow(grant)  # 100 more: the prefix goes
    assert not cache.entries and ledger.reserved == 250
    assert not ledger.grow(grant) and grant.cells == 250


def test_pause_gives_the_cells_back_and_remembers_what_resuming_needs():
    ledger, _, _ = make(capacity=1000, reserve=100)
    slot, grant = ledger.claim(300, limit=900)
    ledger.grow(grant)
    ledger.pause("g1", n_tokens=420, limit=900)
    ledger.give_back(grant)
    ledger.free_slot(slot)
    assert ledger.reserved == 0 and ledger.free_slots == 4
    assert ledger.paused_need("g1") == 520
    ledger.forget_paused("g1")
    assert ledger.paused_need("g1") is None


def test_paused_needs_are_bounded():
    ledger, _, _ = make()
    for i in range(MAX_PAUSED + 5):
        ledger.pause(f"g{i}", 10, 100)
    assert ledger.paused_need("g0") is None and ledger.paused_need(f"g{MAX_PAUSED + 4}") == 100


def test_a_slot_cannot_be_freed_twice_or_be_foreign():
    ledger, _, _ = make(slots=2)
    slot, _ = ledger.claim(1, limit=10)
    ledger.free_slot(slot)
    with pytest.raises(ValueError):
        ledger.free_slot(slot)
    with pytest.raises(ValueError):
        ledger.free_slot(99)


def test_clear_frees_everything():
    ledger, _, _ = make(slots=3)
    ledger.claim(10, limit=100)
    ledger.pause("g", 10, 100)
    ledger.clear()
    assert ledger.reserved == 0 and ledger.free_slots == 3 and ledger.paused_need("g") == 100
    ledger.clear(paused=True)
    assert ledger.paused_need("g") is None


def test_random_walk_keeps_the_books_consistent():
    """Admit, grow, pause, finish and cache prefixes in random order; the invariants hold after every step."""
    rng = random.Random(7)
    ledger, cache, _ = make(capacity=2000, slots=6, reserve=64, prefix_slots=5)
    live: dict[int, object] = {}
    for step in range(3000):
        op = rng.random()
        if op < 0.35 and ledger.has_slot():
            n = rng.randint(1, 400)
            limit = n + rng.randint(1, 600)
            if ledger.make_room(ledger.first_reserve(n, limit)):
                slot, grant = ledger.claim(n, limit)
                assert slot not in live
                live[slot] = grant
        elif op < 0.6 and live:
            ledger.grow(rng.choice(list(live.values())))  # type: ignore[arg-type]
        elif op < 0.85 and live:
            slot = rng.choice(list(live))
            ledger.give_back(live.pop(slot))  # type: ignore[arg-type]
            ledger.free_slot(slot)
        else:
            start = rng.randint(0, 50) * 1000
            cache.adopt(toks(range(start, start + rng.randint(MIN_SHARED_PREFIX, 200))), slot=0)
            ledger.make_room(0)
        promised = sum(g.cells for g in live.values())  # type: ignore[attr-defined]
        assert ledger.reserved == promised, step
        assert ledger.free_slots + len(live) == 6, step
        assert all(g.cells <= g.limit - g.shared for g in live.values()), step  # type: ignore[attr-defined]
        # what was promised always fits; cached prefixes may overflow only until the next make_room
        assert ledger.reserved <= ledger.capacity, step
        if ledger.make_room(0):
            assert ledger.reserved + cache.cells() <= ledger.capacity, step


# --------------------------------------------------------------------------- the prefix policy


def test_match_needs_a_long_enough_common_start_and_leaves_one_token_to_decode():
    cache = PrefixCache([10, 11], FakeCells())
    entry = cache.adopt(toks(range(40)), slot=0)
    assert cache.match(toks(range(40))) == (entry, 39)
    assert cache.match(toks(range(MIN_SHARED_PREFIX - 1), 999)) == (None, 0)
    assert cache.match(toks(range(20), 999)) == (entry, 20)
    assert common_prefix(toks(1, 2, 3), toks(1, 2, 4)) == 2 and common_prefix(toks(), toks(1)) == 0


def test_reserve_never_evicts_an_entry_still_being_published():
    cells = FakeCells()
    cache = PrefixCache([10], cells)
    publishing = cache.reserve(toks(range(30)))
    assert publishing is not None and not publishing.ready
    assert cache.reserve(toks(range(100, 130))) is None
    assert cache.entries[10] is publishing


def test_retain_keeps_a_finished_conversation_and_drops_the_earlier_turn_it_contains():
    cells = FakeCells()
    cache = PrefixCache([10, 11, 12], cells)
    assert cache.retain(toks(range(MIN_RETAINED - 1)), slot=0) is None  # too short to pay
    turn1 = cache.retain(toks(range(40)), slot=0)
    assert turn1 is not None
    turn2 = cache.retain(toks(range(60)), slot=1)
    assert turn2 is not None and turn1.evicted and list(cache.entries.values()) == [turn2]
    assert cache.retain(toks(range(50)), slot=2) is None  # already covered
    assert ("share", 1, turn2.slot, 60) in cells.ops


def test_publish_length_only_for_a_long_uncovered_system_prompt():
    cache = PrefixCache([10], FakeCells())
    prompt = toks(range(100))
    assert cache.publish_length(prompt, system_len=40, shared=0) == 40
    assert cache.publish_length(prompt, system_len=MIN_SHARED_PREFIX - 1, shared=0) == 0
    assert cache.publish_length(prompt, system_len=40, shared=40) == 0
    cache.adopt(toks(range(50)), slot=0)
    assert cache.publish_length(prompt, system_len=40, shared=0) == 0
    assert PrefixCache([], FakeCells()).publish_length(prompt, system_len=40, shared=0) == 0


class Running:
    def __init__(self, slot: int, prompt: np.ndarray, n_past: int) -> None:
        self.slot, self._prompt, self.n_past, self.publish = slot, prompt, n_past, 0
        self.source = CellSource()

    def prompt_array(self) -> np.ndarray:
        return self._prompt


def test_plan_shares_a_computed_common_start_at_once():
    cache = PrefixCache([10, 11], FakeCells())
    common = MIN_PREFIX_GAIN + 10
    other = Running(0, toks(range(common), 500, 501), n_past=common + 2)
    assert plan_shared_start(cache, toks(range(common), 900, 901), [other]) is StartPlan.SHARED_NOW
    assert cache.match(toks(range(common), 900, 901))[1] == common


def test_plan_waits_for_a_common_start_still_being_prefilled_and_asks_for_it_to_be_published():
    cache = PrefixCache([10, 11], FakeCells())
    common = MIN_PREFIX_GAIN + 10
    other = Running(0, toks(range(common), 500), n_past=5)
    assert plan_shared_start(cache, toks(range(common), 900), [other]) is StartPlan.WAIT
    assert other.publish == common and not cache.entries


def test_plan_goes_alone_when_the_gain_is_too_small():
    cache = PrefixCache([10, 11], FakeCells())
    other = Running(0, toks(range(MIN_PREFIX_GAIN + 10), 500), n_past=100)
    assert plan_shared_start(cache, toks(range(MIN_PREFIX_GAIN - 1), 900), [other]) is StartPlan.ALONE
    # already sharing most of it from the cache: the rest gains too little
    cache.adopt(toks(range(20)), slot=1)
    assert plan_shared_start(cache, toks(range(MIN_PREFIX_GAIN + 10), 900), [other]) is StartPlan.ALONE
    assert plan_shared_start(cache, toks(range(50)), []) is StartPlan.ALONE


def test_plan_leaves_alone_an_agent_whose_conversation_host_ram_holds():
    """An agent back from a tool call copies its conversation back from host RAM. A running agent with the same
    system prompt offers it less: publishing that prompt for it (an entry evicted as soon as it is idle) or waiting
    for it to be prefilled is churn and delay for nothing."""
    cache = PrefixCache(list(range(10, 20)), FakeCells(), hot_cells=0, spill_bytes=10_000)
    system = toks(range(MIN_PREFIX_GAIN + 40))
    conversation = np.concatenate([system, toks(range(1000, 1040))])
    cache.retain(conversation, slot=0)  # idle: to host RAM at once
    assert len(cache.spilled) == 1 and not cache.entries
    returning = np.concatenate([conversation, toks(range(3000, 3010))])
    computed = Running(1, np.concatenate([system, toks(range(2000, 2030))]), n_past=len(system) + 5)
    assert plan_shared_start(cache, returning, [computed]) is StartPlan.ALONE and not cache.entries
    prefilling = Running(2, np.concatenate([system, toks(range(2000, 2030))]), n_past=5)
    assert plan_shared_start(cache, returning, [prefilling]) is StartPlan.ALONE and prefilling.publish == 0
    # a new agent with that system prompt, whose conversation is nowhere, still shares it
    newcomer = np.concatenate([system, toks(range(4000, 4010))])
    assert plan_shared_start(cache, newcomer, [computed]) is StartPlan.SHARED_NOW


def _conversation(cache: PrefixCache, system, slot: int, turn_tokens: range):
    """A sequence that started from ``system`` (sharing all of it) and is retained with its own turn."""
    source = CellSource(system, system.tokens.shape[0])
    tokens = np.concatenate([system.tokens, toks(turn_tokens)])
    return cache.retain(tokens, slot, source)


def test_cells_shared_by_conversations_that_start_with_one_system_prompt_count_once():
    cache = PrefixCache(list(range(10, 30)), FakeCells())
    system = cache.adopt(toks(range(300)), slot=0)
    convs = [_conversation(cache, system, 1, range(1000 * (i + 1), 1000 * (i + 1) + 100)) for i in range(8)]
    assert all(convs) and not system.evicted  # a published prefix stays when conversations containing it are kept
    assert cache.cells() == 300 + 8 * 100  # not 300 + 8 * 400
    cache.evict(system)
    assert cache.cells() == 300 + 8 * 100  # its cells stay, tagged by the eight conversations
    assert cache.evictable_cells() == cache.cells()
    cache.use(convs[0])
    # with one conversation in use, only the other seven's own cells could be freed
    assert cache.evictable_cells() == 7 * 100
    cache.evict(convs[1])
    assert cache.cells() == 300 + 7 * 100


def test_cells_shared_with_a_kept_system_prompt_and_a_partial_span():
    cache = PrefixCache(list(range(10, 30)), FakeCells())
    system = cache.adopt(toks(range(200)), slot=0)
    cache.use(system)  # a running sequence holds it: retain does not evict it
    a = _conversation(cache, system, 1, range(5000, 5050))
    assert a is not None and not system.evicted
    assert cache.cells() == 250
    # a sequence that shared only the first 120 of the system prompt's cells, then computed 80 of its own
    b = cache.retain(np.concatenate([toks(range(120)), toks(range(7000, 7080))]), 2, CellSource(system, 120))
    assert b is not None and cache.cells() == 250 + 80
    cache.unuse(system)
    cache.evict(system)
    assert cache.cells() == 250 + 80  # the cells stay while a conversation is tagged with them
    cache.evict(a)
    assert cache.cells() == 200  # b holds the first 120 system cells and its own 80


def _conv(base: int, n: int = 100) -> np.ndarray:
    return toks(range(base, base + n))


def test_host_ram_takes_idle_conversations_past_hot_cells_least_recent_first():
    cells = FakeCells()
    cache = PrefixCache(list(range(10, 20)), cells, hot_cells=150, spill_bytes=10_000)
    a = cache.retain(_conv(1000), slot=0)
    b = cache.retain(_conv(2000), slot=1)
    assert a and b and a.kind is EntryKind.CONVERSATION
    # 200 idle cells > 150: a (least recently kept) goes to host RAM, its cells are freed
    assert a.evicted and not b.evicted and ("save", a.slot) in cells.ops
    assert cache.cells() == 100 and len(cache.spilled) == 1 and cache.spills == 1
    # its agent returns: the host copy matches the continued prompt, and is taken
    spilled, n = cache.match_spilled(np.concatenate([_conv(1000), toks(range(9000, 9010))]))
    assert spilled is not None and n == 100
    cache.take(spilled, n)
    assert not cache.spilled and cache.spilled_bytes == 0 and cache.unspills == 1


def test_host_ram_copy_only_borrowed_by_a_prompt_that_starts_like_it_stays_for_its_agent():
    cache = PrefixCache(list(range(10, 20)), FakeCells(), hot_cells=0, spill_bytes=10_000)
    system = toks(range(60))
    cache.retain(np.concatenate([system, toks(range(1000, 1040))]), slot=0)  # agent A's conversation, to host RAM
    # agent B: the same system prompt, its own question; it copies A's first 60 cells and leaves the copy
    spilled, n = cache.match_spilled(np.concatenate([system, toks(range(2000, 2020))]))
    assert spilled is not None and n == 60
    cache.take(spilled, n)
    assert len(cache.spilled) == 1 and cache.unspills == 0
    # agent A comes back: its whole conversation is still there, and now it is moved
    spilled, n = cache.match_spilled(np.concatenate([system, toks(range(1000, 1040)), toks(range(3000, 3010))]))
    assert n == 100
    cache.take(spilled, n)
    assert not cache.spilled and cache.unspills == 1


def test_start_counts_a_start_that_only_host_ram_holds_as_admission_would_copy_it():
    cache = PrefixCache(list(range(10, 20)), FakeCells(), hot_cells=0, spill_bytes=10_000)
    system = toks(range(60))
    cache.retain(np.concatenate([system, toks(range(1000, 1040))]), slot=0)  # to host RAM at once
    assert not cache.entries and len(cache.spilled) == 1
    other = np.concatenate([system, toks(range(2000, 2020))])
    assert cache.match(other)[1] == 0
    start = cache.start(other)
    assert start.reused == start.copied == cache.match_spilled(other)[1] == 60
    assert start.spilled is not None and start.entry is None and start.shared == 0  # copied cells are its own
    assert cache.start(toks(range(5000, 5100))).reused == 0
    # a longer start in the KV cache wins, as in admission
    kept = cache.adopt(np.concatenate([system, toks(range(2000, 2010))]), slot=1)
    cache.use(kept)
    start = cache.start(other)
    assert start.reused == start.shared == 70 and start.entry is kept and start.spilled is None


def test_host_ram_copy_goes_when_the_conversation_is_kept_again_longer():
    cache = PrefixCache(list(range(10, 20)), FakeCells(), hot_cells=0, spill_bytes=10_000)
    cache.retain(_conv(1000), slot=0)
    assert len(cache.spilled) == 1
    longer = cache.retain(np.concatenate([_conv(1000), toks(range(5000, 5050))]), slot=1)
    # the earlier turn's copy is contained in the new one: it goes; the new one is idle past 0 cells: to host RAM
    assert longer is not None and len(cache.spilled) == 1
    assert next(iter(cache.spilled.values())).tokens.shape[0] == 150


def test_host_ram_keeps_within_its_budget_and_without_one_conversations_are_dropped():
    cells = FakeCells()
    cache = PrefixCache(list(range(10, 20)), cells, hot_cells=0, spill_bytes=250)  # FakeCells.save: 10 bytes per slot number
    for i, slot in enumerate((11, 12, 13)):
        cache.retain(_conv(1000 * (i + 1)), slot=slot)
    assert cache.spilled_bytes <= 250 and len(cache.spilled) == 2  # 110 + 120 + 130 > 250: the oldest went
    none = PrefixCache(list(range(10, 20)), FakeCells(), hot_cells=0, spill_bytes=0)
    entry = none.retain(_conv(1000), slot=0)
    assert entry is not None and entry.evicted and not none.spilled
    assert not any(op[0] == "save" for op in none.kv.ops)


def test_host_ram_tier_leaves_published_prefixes_in_the_kv_cache():
    cells = FakeCells()
    cache = PrefixCache(list(range(10, 20)), cells, hot_cells=0, spill_bytes=10_000)
    system = cache.adopt(toks(range(300)), slot=0)
    assert system is not None and system.kind is EntryKind.PREFIX
    cache.use(system)  # another agent's sequence runs on it
    conv = cache.retain(np.concatenate([toks(range(300)), toks(range(7000, 7100))]), 1, CellSource(system, 300))
    # the conversation contains the system prompt: the prompt stays (in use), the idle conversation goes to RAM
    assert conv is not None and conv.evicted and not system.evicted
    assert cache.cells() == 300
    # once nobody uses it, an idle prefix counts against hot_cells too, and is evicted (not copied)
    cache.unuse(system)
    cache.trim()
    assert system.evicted and len(cache.spilled) == 1 and cache.cells() == 0
    system = cache.adopt(toks(range(300)), slot=0)
    # make-room eviction spills conversations and evicts prefixes
    c2 = cache.adopt(toks(range(8000, 8100)), slot=2)
    assert c2 is not None
    c2.kind = EntryKind.CONVERSATION
    assert cache.evict_unused(keep=system) and c2.evicted and len(cache.spilled) == 2
    assert cache.forget_spilled() == 2 and not cache.spilled
