"""The with/without harness on the sim core: the three setups run (serial server, llama-server's stand-in, AIOS), the
result document, table and plots are produced, and only the suite that ran is reported (no score for a set that was not run)."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
from aios.bench.suites.calls import CallRecord, HttpCallRecorder
from aios.bench.suites.report import plot, print_report, write_json
from aios.bench.suites.run import Options, compare, main
from rich.console import Console

SUITE_NAMES = {"humaneval": "HumanEval", "mint": "MINT", "gaia": "GAIA", "swebench": "SWE-bench"}


def _options(suite: str, **kw) -> Options:
    base = dict(suite=suite, framework="sdk", agents=2, model="sim", rounds=1, limit=2, max_tokens=64, progress=False)
    base.update(kw)
    return Options(**base)


def _report(result) -> str:
    buf = io.StringIO()
    print_report(result, Console(file=buf, width=200))
    return buf.getvalue()


@pytest.mark.parametrize("suite", ["humaneval", "mint", "gaia", "swebench"])
async def test_each_suite_runs_three_setups_on_the_sim_core(suite, tmp_path):
    result = await compare(_options(suite))
    assert [r["setup"] for r in result["rounds"]] == ["native", "llama_server", "aios"]
    for r in result["rounds"]:
        assert r["tasks"] == 2 and len(r["agents"]) == 2 and r["errors"] == 0
        assert r["llm_calls"] >= 2 and r["makespan"] > 0 and 0.0 <= r["queue_wait_share"] <= 1.0
        assert all(a["end"] >= a["start"] and a["replies"] >= 1 for a in r["agents"])
    aios = next(r for r in result["rounds"] if r["setup"] == "aios")
    assert aios["overhead_us_median"] is not None and aios["engine"]["sim"]["steps"] > 0
    engine = aios["engine"]["sim"]
    assert engine["busy_seconds"] > 0  # the engine's time in steps, for the round alone
    assert 1 <= engine["prompt_steps"] <= engine["steps"] and 0 < engine["prompt_step_seconds"] <= engine["busy_seconds"]
    assert set(result["summary"]) == {"native", "llama_server", "aios"}
    assert list(result["ratios"]) == ["llama_server", "native"]  # llama-server is the baseline reported first
    assert all(r["makespan"] > 0 for r in result["ratios"].values())
    assert result["agreement"]["replies_compared"] >= 2 and 0 <= result["agreement"]["replies_identical_all"] <= 1
    json.dumps(result)  # the document is plain JSON
    text = _report(result)
    assert SUITE_NAMES[suite] in text and "llama-server / AIOS" in text and "serial server / AIOS" in text
    for other, name in SUITE_NAMES.items():
        if other != suite:
            assert name not in text, f"the {suite} report names {name}, which did not run"
    if not result["task_set"]["official"]:
        assert "NOT a score on the official benchmark" in text


async def test_rotating_order_and_medians_over_rounds():
    result = await compare(_options("humaneval", rounds=2))
    assert [(r["round"], r["setup"]) for r in result["rounds"]] == [
        (1, "native"), (1, "llama_server"), (1, "aios"), (2, "llama_server"), (2, "aios"), (2, "native"),
    ]
    assert len(result["ratios"]["llama_server"]["makespan_per_round"]) == 2
    assert result["summary"]["aios"]["attempts"] == 4


async def test_two_setups_alternate_and_agreement_compares_reply_texts():
    result = await compare(_options("humaneval", rounds=2, setups=("llama_server", "aios")))
    assert [(r["round"], r["setup"]) for r in result["rounds"]] == [(1, "llama_server"), (1, "aios"), (2, "aios"), (2, "llama_server")]
    assert list(result["ratios"]) == ["llama_server"]
    # the sim's text is a function of the request: the same conversation gets the same replies on both servers
    assert result["agreement"]["replies_identical_vs_aios"]["llama_server"] is not None
    assert all(a["texts"] and len(a["texts"]) == a["replies"] for r in result["rounds"] for a in r["agents"])


async def test_every_round_starts_with_empty_prompt_caches_on_both_batching_setups():
    """The rounds of a task suite send the same prompts. AIOS's cores are emptied as a round begins; llama-server (here
    its stand-in, the batched sim server with a prefix cache) must be too, or its second round skips the prefill the
    first one did and the comparison credits it with a warm cache."""
    result = await compare(_options("humaneval", rounds=2, setups=("llama_server", "aios")))
    share = {(r["round"], r["setup"]): r["cached_prompt_share"] for r in result["rounds"]}
    assert share[(1, "llama_server")] is not None and share[(1, "aios")] is not None
    for setup in ("llama_server", "aios"):
        assert share[(2, setup)] == pytest.approx(share[(1, setup)], abs=0.05), setup


def test_call_records_read_the_cached_prompt_tokens_a_server_reports():
    from aios.bench.suites.calls import _usage

    openai = json.dumps({"usage": {"prompt_tokens": 40, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 32}}}).encode()
    assert _usage(openai, sse=False) == (40, 3, 32)
    # llama-server streams its prompt cache hit in the last chunk's timings
    stream = (
        'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n'
        'data: {"choices": [{"delta": {}}], "usage": {"prompt_tokens": 50, "completion_tokens": 1}, "timings": {"cache_n": 48}}\n\n'
        "data: [DONE]\n\n"
    ).encode()
    assert _usage(stream, sse=True) == (50, 1, 48)
    assert _usage(b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n', sse=True) == (0, 1, None)
    assert _usage(b"not json", sse=False) == (0, 0, None)


def test_agreement_counts_differing_and_missing_replies():
    from aios.bench.suites.run import _verdict_agreement

    def rnd(setup, texts, passed=False):
        return {"round": 1, "setup": setup, "agents": [{"task_id": "t1", "passed": passed, "texts": texts}]}

    ag = _verdict_agreement([rnd("native", ["a", "b"]), rnd("llama_server", ["a", "c"]), rnd("aios", ["a", "b", "d"], passed=True)])
    assert ag["replies_compared"] == 3
    assert ag["replies_identical_all"] == pytest.approx(1 / 3)
    assert ag["replies_identical_vs_aios"] == {"native": pytest.approx(2 / 3), "llama_server": pytest.approx(1 / 3)}
    assert ag["tasks_with_different_verdicts"] == ["t1"]


async def test_aios_batches_and_native_queues_on_the_sim_core():
    result = await compare(_options("humaneval", agents=4, limit=4))
    nat, ai = result["summary"]["native"], result["summary"]["aios"]
    assert ai["mean_batch"] > 1.5  # four agents' calls decoded together
    assert nat["queue_wait_share"] > ai["queue_wait_share"]  # the serial server makes agents wait
    assert result["summary"]["llama_server"]["errors"] == 0


async def test_json_and_png_are_written(tmp_path):
    result = await compare(_options("humaneval"))
    path = write_json(result, tmp_path)
    assert json.loads(path.read_text())["suite"] == "humaneval"
    png = plot(result, path.with_suffix(".png"))
    assert png is not None and png.stat().st_size > 10_000


def test_command_line_writes_results_and_reports_bad_data(tmp_path, capsys):
    code = main("humaneval", ["--model", "sim", "--limit", "2", "--agents", "2", "--rounds", "1", "--no-progress", "--out", str(tmp_path)])
    assert code == 0
    assert len(list(tmp_path.glob("humaneval-sdk-sim-*.json"))) == 1 and len(list(tmp_path.glob("*.png"))) == 1
    out = capsys.readouterr().out
    assert "HumanEval" in out and "MINT" not in out
    code = main("gaia", ["--model", "sim", "--data", str(tmp_path / "missing"), "--no-progress", "--out", str(tmp_path)])
    assert code == 2 and "no GAIA metadata.jsonl" in capsys.readouterr().out


def test_unknown_framework_is_refused():
    from aios.bench.suites.agents import get_framework
    from aios.bench.suites.agents.base import FrameworkUnavailable

    with pytest.raises(FrameworkUnavailable, match="unknown framework"):
        get_framework("crewai")


async def test_http_recorder_derives_queue_wait_for_a_serial_server():
    """Three requests sent together to a server answering one at a time: waits 0, 1 and 2 service times."""
    import asyncio

    from aios.bench.suites.agents.backends import SimBackend

    backend = SimBackend(max_batch=1, seed=0, costs={"t0": 0.02, "a": 0.0, "b": 0.0})
    endpoint = backend.start_native()
    recorder = HttpCallRecorder(endpoint.base_url)
    recorder.install()
    try:
        async with httpx.AsyncClient() as client:
            body = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
            await asyncio.gather(*(client.post(f"{endpoint.base_url}/chat/completions", json=body) for _ in range(3)))
    finally:
        recorder.uninstall()
        backend.stop_native()
    calls = sorted(recorder.take(), key=lambda c: c.end)
    assert len(calls) == 3 and all(c.completion_tokens >= 1 for c in calls)
    # ordered, not timed: served one at a time, each call waited longer than the one that ended before it
    assert calls[0].wait == 0.0 and 0.0 < calls[1].wait < calls[2].wait  # catches: the clock started at the response, not the request


def test_serial_derivation_is_exact_on_synthetic_timestamps():
    recorder = HttpCallRecorder("http://x/v1")
    now = time.perf_counter()
    recorder.calls = [
        CallRecord(start=now, end=now + 1.0, latency=1.0),
        CallRecord(start=now, end=now + 2.0, latency=2.0),
        CallRecord(start=now + 5.0, end=now + 5.5, latency=0.5),
    ]
    calls = sorted(recorder.take(), key=lambda c: c.end)
    assert [round(c.wait, 6) for c in calls] == [0.0, 1.0, 0.0]
    assert [round(c.service, 6) for c in calls] == [1.0, 1.0, 0.5]
