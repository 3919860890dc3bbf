"""aios.bench.studies.cores on the embedded model: its three setups do the same work, and a tiny run reports every column."""

from __future__ import annotations

import pytest

# imports llama_cpp, installed by scripts/setup.sh: a missing or broken install is a collection error, not a skip
from aios.bench.studies.cores import Bench, agent_prompt, run

pytestmark = pytest.mark.model


async def test_engine_kernel_and_one_llama_decode_the_same_greedy_text():
    bench = Bench(levels=[1], tokens=12, threads=1, n_ctx=1024)
    await bench.start()
    try:
        engine = await bench.measure("engine", 1)
        raw_text = bench.llama.detokenize(bench.engine.last_tokens[0]).decode("utf-8", errors="replace")
        kernel_reply = await bench.kernel.agent("same").achat(agent_prompt(0), max_tokens=12)
        bench.llama.reset()
        llama_reply = bench.llama.create_completion(bench.prompts[0], max_tokens=12, temperature=0.0, top_k=1, repeat_penalty=1.0)
    finally:
        await bench.stop()
    assert engine.tokens == 12 and engine.decode_tokens == 11
    assert kernel_reply.usage.completion_tokens == 12 and llama_reply["usage"]["completion_tokens"] == 12
    assert kernel_reply.usage.prompt_tokens == len(bench.prompts[0]) == llama_reply["usage"]["prompt_tokens"]
    assert raw_text == kernel_reply.content == llama_reply["choices"][0]["text"]


async def test_a_small_run_reports_rates_and_efficiency_for_each_level():
    result = await run([1, 2], tokens=6, threads=1, rounds=1, n_ctx=1024, progress=False, batched_bench=False)
    rows = {r["agents"]: r for r in result["rows"]}
    assert set(rows) == {1, 2}
    # per-round raw data: every measurement with its position in the round; the kernel's decode window opens at the
    # batch's first token and counts every token after it
    raw = [x for x in result["raw"] if x["setup"] == "kernel" and x["agents"] == 2]
    assert len(raw) == 1 and raw[0]["round"] == 1 and raw[0]["decode_tokens"] == 12 - 1
    assert len(raw[0]["first_tokens"]) == 2 and raw[0]["decode_seconds"] <= raw[0]["seconds"]
    assert raw[0]["seconds"] - raw[0]["decode_seconds"] == pytest.approx(min(raw[0]["first_tokens"]), abs=0.05)
    assert {x["setup"] for x in result["raw"]} == {"engine", "kernel", "one_llama"} and result["ceiling"].startswith("engine")
    for n, r in rows.items():
        assert r["engine_tokens"] == 6 * n and r["kernel_tokens"] == [6 * n] and r["one_llama_tokens"] == [6 * n]
        assert r["engine_decode_peak_tok_s"] > 0 and r["kernel_decode_tok_s"] > 0 and r["one_llama_tok_s"] > 0
        assert 0 < r["efficiency"] and 0 < r["speedup_vs_one_llama"]
    assert result["kernel_core_stats"]["mean_batch"] > 1  # the two agents were decoded together
