"""Guessed tokens and marked rows that keep a micro-batch's logits rows even (the embedded core's "Even logits rows").

Without the model: the n-gram lookup, where rows go and the row marking. With it: guesses change no output (with
one row per micro-batch, so every sequence's numbers are independent of its batch, a core that guesses runs of
tokens at every step gives the same text as one that never does: a wrong verification, a rejected guess left in
the KV cache or a pick read from the wrong row changes it), and the default core guesses and marks rows where a
micro-batch's logits rows are odd.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
import pytest_asyncio

from aios_core.cores.base import Generation
from aios_core.cores.llamacpp_drafts import (
    SOLO_ACCEPTANCE,
    STEP_COST_ROWS_RANGE,
    NgramLookup,
    StepCost,
    even_outputs,
    first_ubatch_logits,
    plan_guesses,
)
from aios_core.syscalls import LLMRequest, Message

# --------------------------------------------------------------------------- without the model


def test_a_guess_is_what_followed_the_latest_earlier_occurrence_of_the_longest_ending():
    tokens = [5, 1, 2, 3, 9, 7, 2, 3, 4, 1, 2, 3]
    lookup = NgramLookup(tokens)
    # "1 2 3" occurred at the start, followed by 9 ("2 3" was followed later by 4, but the longer ending wins)
    assert (lookup.guess().tokens, lookup.guess().match) == ((9,), 3)
    tokens += [8, 2, 3]  # the sequence grows: the lookup reads its list, no copy
    # "8 2 3" never occurred; "2 3" last came before 8
    assert (lookup.guess().tokens, lookup.guess().match) == ((8,), 2)


def test_a_sequence_without_repeats_gets_a_filler_guess_and_tokens_only_grow():
    tokens: list[int] = []
    lookup = NgramLookup(tokens)
    assert lookup.guess().match == 0
    tokens += [4, 5, 6]
    assert lookup.guess().match == 0
    tokens.pop()
    with pytest.raises(ValueError):
        lookup.guess()


def test_acceptance_follows_the_latest_guesses():
    lookup = NgramLookup([])
    assert lookup.acceptance == SOLO_ACCEPTANCE
    for _ in range(10):
        lookup.record(False)
    assert lookup.acceptance < 0.1
    for _ in range(10):
        lookup.record(True)
    assert lookup.acceptance > 0.85


def test_a_longer_guess_copies_on_from_the_match_and_into_what_it_copies():
    # "1 2 3" came first at the start: what followed it, then on
    tokens = [1, 2, 3, 9, 8, 7, 6, 1, 2, 3]
    assert NgramLookup(tokens).guess(4).tokens == (9, 8, 7, 6)
    # the copy runs past the end of the tokens into itself: a repeating pattern goes on repeating
    assert NgramLookup([5, 4, 5, 4, 5]).guess(5).tokens == (4, 5, 4, 5, 4)
    assert NgramLookup([7, 7, 7]).guess(3).tokens == (7, 7, 7)
    # without a match there is one filler token, however many were asked for
    assert NgramLookup([1, 2, 3]).guess(4).tokens == (3,)


def test_the_first_micro_batch_counts_decoding_and_guess_rows_and_prompts_ending_in_it():
    # 4 decoding and guess rows, then a 50-row chunk ending at row 54 and a 20-row one ending at row 74
    assert first_ubatch_logits(4, [(50, True), (20, True)], 63) == 5
    assert first_ubatch_logits(4, [(50, False)], 63) == 4
    assert first_ubatch_logits(4, [(50, True), (5, True)], 63) == 6
    # rows beyond the micro-batch are not in it
    assert first_ubatch_logits(70, [(5, True)], 63) == 63


def lookup_of(tokens: list[int], acceptance: float = SOLO_ACCEPTANCE) -> NgramLookup:
    lookup = NgramLookup(tokens)
    lookup.acceptance = acceptance
    return lookup


ECHOING = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3]  # guesses 4, 5, 6, ...


def test_one_guess_evens_out_odd_rows_and_goes_to_the_likeliest():
    echo, fresh = lookup_of(ECHOING), lookup_of([7, 8, 9])
    three = [("fresh", fresh, 4), ("echo", echo, 4), ("other", lookup_of([10, 11]), 4)]
    assert plan_guesses(three, 3, [], 63, 10) == {"echo": [4]}
    # four decoding rows are even already: nothing is likely enough for a pair
    assert plan_guesses([*three, ("fourth", lookup_of([12]), 4)], 4, [], 63, 10) == {}
    # no match anywhere: a filler still beats the odd row
    assert plan_guesses([("fresh", fresh, 4), ("other", lookup_of([10, 11]), 4), ("x", lookup_of([5]), 4)], 3, [], 63, 10) == {"fresh": [9]}
    # a prompt ending in the first micro-batch makes the rows odd too; one ending beyond it does not
    two = three[:2]
    assert plan_guesses(two, 2, [(30, True)], 63, 10) == {"echo": [4]}
    assert plan_guesses(two, 2, [(70, True)], 63, 10) == {}
    # no room in the batch, or nobody to guess for
    assert plan_guesses(three, 3, [], 63, 0) == {} and plan_guesses([], 3, [], 63, 10) == {}


def test_alone_a_sequence_is_guessed_for_only_with_a_match_and_a_good_record():
    assert plan_guesses([("echo", lookup_of(ECHOING), 4)], 1, [], 63, 10) == {"echo": [4]}
    assert plan_guesses([("fresh", lookup_of([7, 8, 9]), 4)], 1, [], 63, 10) == {}
    assert plan_guesses([("echo", lookup_of(ECHOING, acceptance=0.2), 4)], 1, [], 63, 10) == {}


def test_pairs_of_rows_more_go_where_they_raise_the_tokens_a_step_makes_for_its_cost():
    # right 95 % of the time: alone, a run of several tokens (the copy from the match on), rows kept even
    sure = lookup_of(ECHOING * 3, acceptance=0.95)
    alone = plan_guesses([("sure", sure, 15)], 1, [], 63, 20)["sure"]
    assert len(alone) >= 5 and len(alone) % 2 == 1
    assert alone == [4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2][: len(alone)]
    # the run stops where the sequence must (max_tokens, its context, its grant), and where the batch ends
    assert plan_guesses([("sure", sure, 3)], 1, [], 63, 20) == {"sure": [4, 5, 6]}
    assert plan_guesses([("sure", sure, 15)], 1, [], 63, 2) == {"sure": [4]}
    # ... or the micro-batch: 60 decoding rows leave room for 3 guesses, and the rows stay even
    many = [(i, lookup_of(ECHOING * 3, acceptance=0.99), 15) for i in range(60)]
    assert sum(len(g) for g in plan_guesses(many, 60, [], 63, 100).values()) == 2
    # the more sequences decode together, the more a step already makes per row: fewer guesses each
    eight = plan_guesses([(i, lookup_of(ECHOING * 3, acceptance=0.95), 15) for i in range(8)], 8, [], 63, 60)
    assert max(len(g) for g in eight.values()) < len(alone) and sum(len(g) for g in eight.values()) % 2 == 0
    # a poor record gets no more than the row that evens out an odd count
    poor = [(k, lookup_of(ECHOING * 3, acceptance=0.3), 15) for k in "abc"]
    assert plan_guesses(poor, 3, [], 63, 20) == {"a": [4]}


def test_the_step_cost_is_fitted_from_the_steps_seen_and_follows_a_change():
    cost = StepCost(6.5)
    assert cost.rows() == 6.5 and cost.fit() is None and cost.weight == 0  # nothing seen yet
    for _ in range(100):
        cost.add(16, 0.14)
    assert cost.fit() is None and cost.rows() == 6.5  # steps of one size do not determine a line
    assert 60 < cost.weight < 100  # older steps count less
    rng = np.random.default_rng(0)
    for _ in range(300):
        rows = int(rng.integers(1, 17))
        cost.add(rows, 0.025 + 0.007 * rows + rng.normal(0, 0.001))
    fixed, per_row = cost.fit()
    assert abs(fixed - 0.025) < 0.003 and abs(per_row - 0.007) < 0.0005
    assert abs(cost.rows() - 0.025 / 0.007) < 0.5
    # the machine gets slower per row (longer contexts): the recent steps decide
    for _ in range(1500):
        rows = int(rng.integers(1, 17))
        cost.add(rows, 0.025 + 0.0125 * rows)
    assert abs(cost.rows() - 2.0) < 0.1


def test_a_step_cost_line_that_makes_no_sense_is_not_used_and_a_fit_is_bounded():
    falling = StepCost(2.5)
    for i in range(200):
        falling.add(1 + i % 16, 0.2 - 0.01 * (i % 16))  # cheaper with more rows: noise, not a cost
    assert falling.fit() is None and falling.rows() == 2.5
    flat = StepCost(2.5)
    for i in range(200):
        flat.add(1 + i % 16, 0.1 + 0.00001 * (i % 16))  # rows cost next to nothing: a huge fixed part
    assert flat.rows() == STEP_COST_ROWS_RANGE[1]


def test_odd_logits_rows_of_three_or_more_get_one_more_row_in_their_own_micro_batch():
    # micro-batches of 4 rows: [1 1 1 0] odd (3) -> marked; [1 0 0 0] one row stays; [1 1 1 1] even; [1 1 1] no free row
    flags = np.array([1, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1], dtype=np.int8)
    assert even_outputs(flags, 15, 4) == 1
    assert flags.tolist() == [1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    # rows beyond n_rows belong to no micro-batch
    flags = np.array([1, 1, 1, 0, 0], dtype=np.int8)
    assert even_outputs(flags, 3, 63) == 0 and flags.tolist() == [1, 1, 1, 0, 0]


# --------------------------------------------------------------------------- with the model

from aios_core.cores.llamacpp import LlamaCppCore  # noqa: E402 - installed by scripts/setup.sh: missing fails, not skips

ECHO = "Repeat after me, word for word, three times: the quick brown fox jumps over the lazy dog."


class GuessEveryStep(LlamaCppCore):
    """Guesses three tokens (prompt lookup) for every decoding sequence at every step, where the default guesses
    only where rows pay: most guesses are wrong, so every step cuts cells."""

    def _guess(self, plan, n_decoding, budget) -> None:  # noqa: ANN001 - the core's private plan
        for seq, _, _ in plan.items[:n_decoding]:
            st = seq.state
            if st.chooser.verifies_guesses and seq.n_generated + 4 <= seq.gen.request.max_tokens and st.grant.covers(st.n_past + 4):
                if st.lookup is None:
                    st.lookup = NgramLookup(st.tokens)
                plan.guesses[seq.id] = (list(st.lookup.guess(3).tokens) * 3)[:3]


class Recording(LlamaCppCore):
    """Records the tokens each prompt was answered with, for :class:`GuessRight`."""

    def __init__(self, **kw) -> None:  # noqa: ANN003
        super().__init__(**kw)
        self.answers: dict[str, list[int]] = {}

    def _run_plan(self, plan):  # noqa: ANN001, ANN202 - the core's private plan
        chosen = super()._run_plan(plan)
        for seq, tokens in chosen:
            self.answers.setdefault(seq.gen.request.messages[-1].content, []).extend(tokens)
        return chosen


class GuessRight(LlamaCppCore):
    """Guesses the next three tokens of a recorded answer for every decoding sequence: several sequences' runs of
    guesses in one batch, all kept."""

    def __init__(self, answers: dict[str, list[int]], **kw) -> None:  # noqa: ANN003
        super().__init__(**kw)
        self.answers = answers
        self.steps_with_several = 0

    def _guess(self, plan, n_decoding, budget) -> None:  # noqa: ANN001 - the core's private plan
        for seq, _, _ in plan.items[:n_decoding]:
            st = seq.state
            done = len(st.tokens) - st.n_prompt
            room = min(3, seq.gen.request.max_tokens - done - 1, st.grant.shared + st.grant.cells - st.n_past - 1)
            guesses = []
            for token in self.answers[seq.gen.request.messages[-1].content][done : done + max(0, room)]:
                if self._ends(token):
                    break
                guesses.append(token)
            if guesses:
                st.lookup = st.lookup or NgramLookup(st.tokens)  # keeps the record of the sequence's guesses
                plan.guesses[seq.id] = guesses
        self.steps_with_several += len(plan.guesses) > 1


def ask(user: str, max_tokens: int) -> LLMRequest:
    return LLMRequest(messages=[Message(role="user", content=user)], max_tokens=max_tokens, temperature=0.0)


async def text_of(core, request: LLMRequest, *, preempt_after: int | None = None, resume=None, gid: str | None = None):
    gid = gid or uuid.uuid4().hex
    chunks = []
    n = 0
    async for chunk in core.generate(Generation(id=gid, request=request, resume=resume)):
        chunks.append(chunk)
        n += chunk.tokens
        if chunk.finish_reason is None and preempt_after is not None and n >= preempt_after:
            core.preempt(gid)
            preempt_after = None
    return "".join(c.text for c in chunks), chunks


# one row per micro-batch: a sequence's numbers do not depend on its batch. They do depend on the order of its KV
# cells (attention sums over them in cell order), and a rejected guess's cell is removed and reused by whichever
# sequence comes next, so exact equality is asked of wrong guesses one sequence at a time, of right ones together.
ONE_ROW = dict(n_ctx=2048, max_batch=3, n_threads=1, n_ubatch=1, prefix_slots=2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair():
    plain = Recording(name="plain", **ONE_ROW)
    guessing = GuessEveryStep(name="guessing", **ONE_ROW)
    await plain.start()
    await guessing.start()
    yield plain, guessing
    await guessing.stop()
    await plain.stop()


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_wrong_and_right_guesses_change_no_output(pair):
    plain, guessing = pair
    requests = [ask(ECHO, 40), ask("Count from 1 to 30, separated by commas.", 40), ask("Name three colours.", 24)]
    for request in requests:
        expected, expected_chunks = await text_of(plain, request)
        got, chunks = await text_of(guessing, request)
        assert got == expected
        # every token counted once, max_tokens kept, although kept guesses give a sequence several tokens in a step
        assert sum(c.tokens for c in chunks) == sum(c.tokens for c in expected_chunks)
    m = guessing.metrics()
    # both paths ran: right guesses kept their cells, wrong ones were removed
    assert 0 < m.guesses_accepted < m.guesses, (m.guesses_accepted, m.guesses)
    assert plain.metrics().guesses == 0


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_several_sequences_runs_of_guesses_in_one_batch_change_no_output(pair):
    plain, _ = pair
    prompts = ["Repeat after me, word for word, twice: pack my box with five dozen liquor jugs.", "Count from 1 to 30, separated by commas.", "Name three colours."]
    requests = [ask(p, 32) for p in prompts]
    plain.answers.clear()
    expected = await asyncio.gather(*(text_of(plain, r) for r in requests))
    right = GuessRight(dict(plain.answers), name="right", **ONE_ROW)
    await right.start()
    try:
        got = await asyncio.gather(*(text_of(right, r) for r in requests))
    finally:
        await right.stop()
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [sum(c.tokens for c in chunks) for _, chunks in got] == [sum(c.tokens for c in chunks) for _, chunks in expected]
    m = right.metrics()
    assert m.guesses > 30 and m.guesses_accepted == m.guesses, m
    assert right.steps_with_several > 0


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_a_sequence_preempted_between_guesses_resumes_exactly(pair):
    plain, guessing = pair
    request = ask(ECHO, 36)
    full, _ = await text_of(plain, request)
    gid = uuid.uuid4().hex
    first, chunks = await text_of(guessing, request, preempt_after=11, gid=gid)
    assert chunks[-1].finish_reason == "preempted"
    rest, _ = await text_of(guessing, request, resume=chunks[-1].snapshot, gid=gid)
    assert first + rest == full


@pytest.mark.model
@pytest.mark.asyncio
async def test_the_default_core_evens_out_odd_logits_rows():
    # on llama.cpp's output layer (the row pass, where it is measured faster, takes odd counts as they are)
    core = LlamaCppCore(name="even", n_ctx=4096, max_batch=4, n_threads=1, prefix_slots=2, row_pass=False)
    await core.start()
    try:
        # three greedy sequences decode together: three logits rows, so one of them gets a guess each step
        greedy = [ask(ECHO, 20), ask("Count from 1 to 30, separated by commas.", 20), ask("Spell the word banana.", 20)]
        results = await asyncio.gather(*(text_of(core, r) for r in greedy))
        assert all(sum(c.tokens for c in chunks) <= 20 for _, chunks in results)
        assert core.metrics().guesses >= 1 and core.metrics().marked_rows == 0
        # sampled sequences cannot be guessed for: two decode while a third prompt ends in the same step
        # (three logits rows and prompt rows without): one prompt row's logits are computed too
        sampled = [LLMRequest(messages=[Message(role="user", content=f"Tell me about {w}.")], max_tokens=24, temperature=0.8, seed=7) for w in ("owls", "rivers", "glass")]
        before = core.stats().generated_tokens
        first = [asyncio.ensure_future(text_of(core, r)) for r in sampled[:2]]
        while core.stats().generated_tokens < before + 4:
            await asyncio.sleep(0.01)
        await asyncio.gather(text_of(core, sampled[2]), *first)
        m = core.metrics()
        assert m.marked_rows >= 1, m
        extra = core.stats().extra
        assert (extra["guesses"], extra["guesses_accepted"], extra["marked_rows"]) == (m.guesses, m.guesses_accepted, m.marked_rows)
    finally:
        await core.stop()
    off = LlamaCppCore(name="odd", n_ctx=4096, max_batch=4, n_threads=1, prefix_slots=2, even_logits=False)
    await off.start()
    try:
        await asyncio.gather(*(text_of(off, r) for r in greedy))
        assert off.metrics().guesses == 0 and off.metrics().marked_rows == 0
    finally:
        await off.stop()
