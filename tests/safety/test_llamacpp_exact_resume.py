"""Exact text on the real llama.cpp core after a KV-full pause and after a snapshot spilled to disk and read back.

Both compare, token for token, with each prompt run alone and uninterrupted
(greedy). Batched cores use ``n_ubatch=1`` (batch-independent numerics), and prompts
the model continues with confident tokens (counting), so the only way the texts
can differ is a resume that does not continue the sequence exactly (see the
docstring of tests/cores/test_llamacpp.py).

Mutations these catch, which the older tests (token counts only) let through:
- text generated before a pause or preemption lost or changed when the
  generation is requeued (the token counts stay right)
- a snapshot whose bytes changed between pause and resume (e.g. a spilled
  file read back wrong): the core falls back to recomputing from the text,
  so ``restore_fallbacks`` must stay 0
- the pause or the spill never happening (the test asserts both did)
"""

from __future__ import annotations

import asyncio

import pytest

from aios_core.cores.llamacpp import LlamaCppCore


def counting(start: int, n: int) -> str:
    return f"Continue the list: {', '.join(str(k) for k in range(start, start + n))},"


async def _alone(make_kernel, prompts: list[str], max_tokens: int, **core_options: int) -> list[str]:
    """Each prompt on its own, one at a time: nothing paused, preempted or batched."""
    core = LlamaCppCore(n_threads=1, prefix_slots=0, max_batch=1, n_ctx=512, **core_options)
    async with make_kernel(cores=[core], scheduler="fifo") as kernel:
        agent = kernel.agent("alone")
        texts = [(await agent.achat(p, max_tokens=max_tokens)).content for p in prompts]
        assert core.stats().snapshots == 0
        return texts


@pytest.mark.model
async def test_a_kv_full_pause_resumes_to_exactly_the_uninterrupted_text(make_kernel):
    # three sequences of ~45 prompt + 40 generated tokens need more than the 224 cells there are: one pauses
    prompts = [counting(100 + 50 * i, 10) for i in range(3)]
    expected = await _alone(make_kernel, prompts, 40, n_ubatch=1)
    core = LlamaCppCore(n_threads=1, n_ubatch=1, prefix_slots=0, max_batch=3, n_ctx=224, decode_reserve=16)
    async with make_kernel(cores=[core], scheduler="fifo") as kernel:
        replies = await asyncio.gather(*[kernel.agent(f"k{i}").achat(p, max_tokens=40) for i, p in enumerate(prompts)])
        stats = core.stats()
    assert stats.extra["kv_pauses"] >= 1 and stats.restores >= 1, "the cache really filled and a sequence paused"
    assert stats.extra["restore_fallbacks"] == 0, "resumed from its cells, not recomputed from text"
    assert [r.content for r in replies] == expected


@pytest.mark.model
async def test_a_snapshot_spilled_to_disk_resumes_to_exactly_the_uninterrupted_text(make_kernel):
    # ~130-token prompts make each KV snapshot ~2 MiB, past a 1 MiB budget: every held snapshot goes to disk.
    # One slot: round robin still preempts (others wait) and nothing is batched, so the numerics are those of a
    # sequence alone and the default n_ubatch (fast prefill) keeps the comparison exact
    prompts = [counting(200 + 100 * i, 40) for i in range(3)]
    expected = await _alone(make_kernel, prompts, 12)
    core = LlamaCppCore(n_threads=1, prefix_slots=0, max_batch=1, n_ctx=512)
    async with make_kernel(cores=[core], scheduler="rr", scheduler_options={"quantum": 3}, snapshot_budget_mb=1) as kernel:
        replies = await asyncio.gather(*[kernel.agent(f"s{i}").achat(p, max_tokens=12) for i, p in enumerate(prompts)])
        spilled, restored = kernel.context.stats.spilled, kernel.context.stats.restored
        stats = core.stats()
    assert spilled >= 1 and restored >= 1, "a snapshot really went to disk and came back"
    assert stats.extra["restore_fallbacks"] == 0
    assert [r.content for r in replies] == expected
