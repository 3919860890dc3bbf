"""Guessed tokens and marked rows that keep a micro-batch's logits rows even (the embedded core's "Even logits rows").

Without the model: the n-gram lookup and the row marking. With it: a guess changes no output (with one row per
micro-batch, so every sequence's numbers are independent of its batch, a core that guesses at every step gives the
same text as one that never does: a wrong verification, or a rejected guess left in the KV cache, changes it), and
the default core guesses and marks rows where a micro-batch's logits rows are odd.
"""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
import pytest_asyncio

from aios_core.cores.base import Generation
from aios_core.cores.llamacpp_drafts import SOLO_ACCEPTANCE, NgramLookup, even_outputs, first_ubatch_logits, pick_guess
from aios_core.syscalls import LLMRequest, Message

# --------------------------------------------------------------------------- without the model


def test_a_guess_is_what_followed_the_latest_earlier_occurrence_of_the_longest_ending():
    tokens = [5, 1, 2, 3, 9, 7, 2, 3, 4, 1, 2, 3]
    lookup = NgramLookup(tokens)
    # "1 2 3" occurred at the start, followed by 9 ("2 3" was followed later by 4, but the longer ending wins)
    assert (lookup.guess().token, lookup.guess().match) == (9, 3)
    tokens += [8, 2, 3]  # the sequence grows: the lookup reads its list, no copy
    # "8 2 3" never occurred; "2 3" last came before 8
    assert (lookup.guess().token, lookup.guess().match) == (8, 2)


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


def test_the_first_micro_batch_counts_decoding_rows_and_prompts_ending_in_it():
    # 3 decoding rows, the guess's row, then a 50-row chunk ending at row 54 and a 20-row one ending at row 74
    assert first_ubatch_logits(3, [(50, True), (20, True)], 63) == 4
    assert first_ubatch_logits(3, [(50, False)], 63) == 3
    assert first_ubatch_logits(3, [(50, True), (5, True)], 63) == 5


def lookup_of(tokens: list[int], acceptance: float = SOLO_ACCEPTANCE) -> NgramLookup:
    lookup = NgramLookup(tokens)
    lookup.acceptance = acceptance
    return lookup


def test_the_guess_goes_to_the_longest_match_and_alone_only_to_a_good_record():
    echo, fresh = lookup_of([1, 2, 3, 4, 1, 2, 3]), lookup_of([7, 8, 9])
    assert pick_guess([("fresh", fresh), ("echo", echo)], 3) == ("echo", 4)
    assert pick_guess([("fresh", fresh), ("echo", echo)], 4) is None
    # three rows with no match anywhere: a filler still beats the odd row
    assert pick_guess([("fresh", fresh)], 3) == ("fresh", 9)
    # alone, the second row costs: only a matching sequence with a good record is guessed for
    assert pick_guess([("echo", echo)], 1) == ("echo", 4)
    assert pick_guess([("fresh", fresh)], 1) is None
    assert pick_guess([("echo", lookup_of([1, 2, 3, 4, 1, 2, 3], acceptance=0.2))], 1) is None
    assert pick_guess([], 3) is None


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
    """Guesses for every decoding sequence at every step (where the default guesses only to even out rows)."""

    def _guess(self, plan, n_decoding) -> None:  # noqa: ANN001 - the core's private plan
        for seq, _, n in plan.items:
            st = seq.state
            if n == 1 and len(st.tokens) - st.n_past == 1 and st.chooser.verifies_guesses and seq.n_generated + 2 <= seq.gen.request.max_tokens:
                if st.lookup is None:
                    st.lookup = NgramLookup(st.tokens)
                plan.guesses[seq.id] = st.lookup.guess().token


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


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair():
    # one row per micro-batch: a sequence's numbers do not depend on its batch, so outputs must match exactly
    plain = LlamaCppCore(name="plain", n_ctx=2048, max_batch=3, n_threads=1, n_ubatch=1, prefix_slots=2)
    guessing = GuessEveryStep(name="guessing", n_ctx=2048, max_batch=3, n_threads=1, n_ubatch=1, prefix_slots=2)
    await plain.start()
    await guessing.start()
    yield plain, guessing
    await guessing.stop()
    await plain.stop()


@pytest.mark.model
@pytest.mark.asyncio(loop_scope="module")
async def test_guessed_tokens_change_no_output(pair):
    plain, guessing = pair
    requests = [ask(ECHO, 40), ask("Count from 1 to 30, separated by commas.", 40), ask("Name three colours.", 24)]
    expected = await asyncio.gather(*(text_of(plain, r) for r in requests))
    got = await asyncio.gather(*(text_of(guessing, r) for r in requests))
    assert [t for t, _ in got] == [t for t, _ in expected]
    # every token counted once, max_tokens kept, although a right guess gives a sequence two tokens in a step
    assert [sum(c.tokens for c in chunks) for _, chunks in got] == [sum(c.tokens for c in chunks) for _, chunks in expected]
    m = guessing.metrics()
    # both paths ran: right guesses kept their cell, wrong ones were removed
    assert 0 < m.guesses_accepted < m.guesses, (m.guesses_accepted, m.guesses)
    assert plain.metrics().guesses == 0


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
    core = LlamaCppCore(name="even", n_ctx=4096, max_batch=4, n_threads=1, prefix_slots=2)
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
