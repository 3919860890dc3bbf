"""aios bench agents: the synthetic multi-turn workload, its metrics, and a whole run on the sim core through ``aios serve``."""

from __future__ import annotations

import json
import statistics
import tomllib

import pytest
from aios.bench.studies.agents import StudyOptions, WorkloadSpec, agreement, main, make_servers, make_workload, markdown, ratios, summarize
from aios.bench.suites.agents import llama_cpp_server as ls

from aios_core.errors import ConfigError


def test_workload_is_deterministic_per_seed_and_differs_across_seeds():
    spec = WorkloadSpec(agents=8, turns=4, seed=3)
    assert make_workload(spec, tag="t") == make_workload(spec, tag="t")
    other = make_workload(WorkloadSpec(agents=8, turns=4, seed=4), tag="t")
    assert [t.max_tokens for p in other for t in p.turns] != [t.max_tokens for p in make_workload(spec, tag="t") for t in p.turns]


def test_output_lengths_are_heavy_tailed_and_within_bounds():
    plans = make_workload(WorkloadSpec(agents=400, turns=4, mean_tokens=64, min_tokens=8, max_tokens=2048, seed=0))
    per_agent = sorted(p.output_tokens for p in plans)
    assert all(8 <= t.max_tokens <= 2048 for p in plans for t in p.turns)
    median, top = statistics.median(per_agent), per_agent[-1]
    # a Pareto(1.5) tail: the longest program is many times the median one, and the mean sits above the median
    assert top > 8 * median
    assert statistics.fmean(per_agent) > 1.1 * median


def test_shared_and_unshared_system_prompts():
    shared = make_workload(WorkloadSpec(agents=5, shared=True, system_words=50), tag="round 1")
    assert len({p.system for p in shared}) == 1
    unshared = make_workload(WorkloadSpec(agents=5, shared=False, system_words=50), tag="round 1")
    systems = [p.system for p in unshared]
    assert len(set(systems)) == 5
    assert len({len(s.split()) for s in systems}) <= 2  # same length, give or take the agent number
    # the round tag opens every prompt: no round reuses the KV of another
    assert make_workload(WorkloadSpec(agents=1), tag="round 2")[0].system != make_workload(WorkloadSpec(agents=1), tag="round 1")[0].system


def test_tool_delays_sit_between_turns_only():
    plans = make_workload(WorkloadSpec(agents=6, turns=3, tool_delay=0.5))
    assert all(p.turns[-1].tool_delay == 0 for p in plans)
    assert all(t.tool_delay >= 0 for p in plans for t in p.turns) and any(t.tool_delay > 0 for p in plans for t in p.turns)
    assert all(t.tool_delay == 0 for p in make_workload(WorkloadSpec(agents=3, tool_delay=0)) for t in p.turns)


@pytest.mark.parametrize("kw", [{"agents": 0}, {"turns": 0}, {"min_tokens": 9, "max_tokens": 8}, {"alpha": 1.0}])
def test_bad_workloads_are_refused(kw):
    with pytest.raises(ValueError):
        make_workload(WorkloadSpec(**{"agents": 2, **kw}))


def _round(setup: str, index: int, texts: dict[tuple[str, int], str], makespan: float = 10.0) -> dict:
    agents: dict[str, list] = {}
    for (agent, turn), text in texts.items():
        agents.setdefault(agent, []).append({"agent": agent, "turn": turn, "text": text, "error": None})
    return {
        "round": index, "setup": setup, "makespan": makespan, "completion_mean": makespan / 2, "completion_p50": makespan / 2,
        "completion_p99": makespan, "completion_tokens": 100, "prompt_tokens": 10, "cached_prompt_share": None,
        "tokens_per_s": 1.0, "errors": 0, "agents": [{"agent": a, "calls": c} for a, c in agents.items()],
    }


def test_agreement_counts_identical_calls_within_each_round():
    a = {("a0", 0): "1, 2", ("a0", 1): "3, 4", ("a1", 0): "x", ("a1", 1): "y"}
    rounds = [
        _round("llama_server", 1, a),
        _round("aios", 1, {**a, ("a1", 1): "z"}),  # one call differs
        _round("native", 1, {k: v for k, v in a.items() if k != ("a0", 1)}),  # one call missing
    ]
    result = agreement(rounds, ["native", "llama_server", "aios"])
    assert result["calls"] == 4
    assert result["identical_all"] == pytest.approx(2 / 4)
    assert result["identical_vs_aios"]["llama_server"] == pytest.approx(3 / 4)
    assert result["identical_vs_aios"]["native"] == pytest.approx(2 / 4)
    # texts of different rounds are never compared with each other
    r2 = [_round("llama_server", 2, {("a0", 0): "q"}), _round("aios", 2, {("a0", 0): "q"})]
    assert agreement(r2, ["llama_server", "aios"])["identical_all"] == 1.0


def test_ratios_are_baseline_over_aios_from_medians_and_per_round():
    rounds = [
        _round("llama_server", 1, {}, makespan=30), _round("aios", 1, {}, makespan=10),
        _round("aios", 2, {}, makespan=20), _round("llama_server", 2, {}, makespan=30),
    ]
    summary = summarize(rounds, ["llama_server", "aios"])
    r = ratios(rounds, summary)["llama_server"]
    assert r["makespan"] == pytest.approx(30 / 15) and r["makespan_per_round"] == [3.0, 1.5]
    assert r["same_completion_tokens"] is True


async def test_each_agent_ends_when_its_own_conversation_ends_not_at_the_round_end(monkeypatch):
    # mutation caught: every agent ended together after the round, so PLAS learnt nothing from the agents
    # that finished early while the others still ran (it ranks by the sizes of ended programs)
    import asyncio
    import time

    from aios.bench.studies import agents as study

    events: list[tuple[str, str]] = []

    async def fake_agent(client, base_url, model, api_key, plan, t0, seed, **_):
        await asyncio.sleep(0.01 if plan.name == "agent000" else 0.2)
        events.append(("done", plan.name))
        return study.AgentResult(agent=plan.name, start=0.0, end=time.perf_counter() - t0)

    class Server:
        key = "aios"

        async def api_keys(self, client, names):
            return {n: "k" for n in names}

        def counters(self):
            return {}

        async def end_agents(self, client, names):
            events.append(("ended", *names))

    monkeypatch.setattr(study, "run_agent", fake_agent)
    plans = make_workload(WorkloadSpec(agents=2, turns=1, tool_delay=0))
    await study.run_round(Server(), "http://unused", "m", plans, round_index=0, seed=0)
    assert events == [("done", "agent000"), ("ended", "agent000"), ("done", "agent001"), ("ended", "agent001")]


def test_the_study_runs_three_setups_on_the_sim_core_through_aios_serve(tmp_path, capsys):
    """The whole harness: serial and batching stand-in servers and ``aios serve`` (a separate process), rotated per round."""
    code = main([
        "--model", "sim", "--agents", "3", "--shared", "yes", "--setups", "native,llama_server,aios", "--turns", "2",
        "--rounds", "3", "--mean-tokens", "6", "--max-tokens", "12", "--tool-delay", "0.02", "--system-words", "30",
        "--out", str(tmp_path),
    ])
    assert code == 0
    [path] = tmp_path.glob("agents-sim-*.json")
    assert path.with_suffix(".png").stat().st_size > 10_000
    result = json.loads(path.read_text())
    # the JSON names the llama.cpp builds: the patches the wheel carries and the server binary's own record
    assert result["llama_cpp"]["patches"] == ls.patches_hash() and result["llama_cpp"]["server"] == ls.build_record()
    [level] = result["levels"]
    assert level["agents"] == 3 and level["slots"] == 3 and level["shared"] is True
    assert [(r["round"], r["setup"]) for r in level["rounds"]] == [
        (1, "native"), (1, "llama_server"), (1, "aios"),
        (2, "llama_server"), (2, "aios"), (2, "native"),
        (3, "aios"), (3, "native"), (3, "llama_server"),
    ]
    for r in level["rounds"]:
        assert r["errors"] == 0 and len(r["agents"]) == 3
        assert all(len(a["calls"]) == 2 and a["end"] >= a["start"] for a in r["agents"])
        # every call generated exactly its budget: the same tokens on every side
        assert r["completion_tokens"] == level["planned_output_tokens"]
    for b in ("llama_server", "native"):
        assert level["ratios"][b]["makespan"] > 0 and len(level["ratios"][b]["makespan_per_round"]) == 3
        assert level["ratios"][b]["same_completion_tokens"] is True
    assert level["agreement"]["calls"] == 3 * 3 * 2
    assert 0.0 <= level["agreement"]["identical_all"] <= 1.0
    text = markdown(result)
    assert "llama-server / AIOS makespan" in text and "| 3 | 3 | yes |" in text
    assert "results:" in capsys.readouterr().out


def test_missing_llama_server_is_reported_with_the_build_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AIOS_LLAMA_SERVER_CACHE", str(tmp_path))
    monkeypatch.delenv("AIOS_LLAMA_SERVER", raising=False)
    assert main(["--model", "local", "--agents", "1", "--out", str(tmp_path)]) == 2
    assert "build_llama_server.sh" in capsys.readouterr().err


def test_a_core_option_without_a_value_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--model", "sim", "--agents", "1", "--core-option", "prefix_slots", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--core-option takes KEY=VALUE" in capsys.readouterr().err


def test_a_scheduler_option_without_a_value_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--model", "sim", "--agents", "1", "--scheduler-option", "levels", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--scheduler-option takes KEY=VALUE" in capsys.readouterr().err


def test_scheduler_and_core_options_reach_the_kernel_config(tmp_path):
    options = StudyOptions(
        levels=(2,), shared=(False,), setups=("aios",), model="sim",
        core_options=(("prefix_cache", 4),), scheduler_options=(("levels", 12), ("rank", "gittins")),
    )
    servers, _ = make_servers(options, 2, tmp_path)
    serve = servers["aios"].serve
    config = serve.config
    assert config["scheduler"] == "plas" and config["scheduler_options"] == {"levels": 12, "rank": "gittins"}
    assert config["cores"][0]["prefix_cache"] == 4
    # the file aios serve reads says the same
    assert tomllib.loads(serve._toml()) == config


def test_an_ablated_core_is_a_second_kernel_with_its_options_changed(tmp_path):
    options = StudyOptions(
        levels=(2,), shared=(False,), setups=("llama_server", "aios"), model="sim",
        core_options=(("prefix_cache", 4),), ablate_core_options=(("prefix_cache", 1),),
    )
    assert options.all_setups == ("llama_server", "aios", "aios_ablated")
    servers, _ = make_servers(options, 2, tmp_path)
    aios, ablated = servers["aios"].serve.config, servers["aios_ablated"].serve.config
    assert aios["cores"][0]["prefix_cache"] == 4 and ablated["cores"][0]["prefix_cache"] == 1
    # nothing else differs, and the two kernels keep their data apart
    assert {k: v for k, v in ablated.items() if k not in ("cores", "data_dir")} == {k: v for k, v in aios.items() if k not in ("cores", "data_dir")}
    assert ablated["data_dir"] != aios["data_dir"]
    with pytest.raises(ConfigError, match="add aios to the setups"):
        StudyOptions(setups=("llama_server",), ablate_core_options=(("prefix_cache", 1),))


def test_the_ablated_setup_runs_in_the_rotation_with_its_ratios_and_table(tmp_path, capsys):
    code = main([
        "--model", "sim", "--agents", "2", "--shared", "no", "--setups", "llama_server,aios", "--turns", "1",
        "--rounds", "2", "--mean-tokens", "4", "--max-tokens", "8", "--tool-delay", "0.01", "--system-words", "10",
        "--ablate-core-option", "prefix_cache=1", "--out", str(tmp_path),
    ])
    assert code == 0
    [path] = tmp_path.glob("agents-sim-*.json")
    result = json.loads(path.read_text())
    [level] = result["levels"]
    assert [(r["round"], r["setup"]) for r in level["rounds"]] == [
        (1, "llama_server"), (1, "aios"), (1, "aios_ablated"), (2, "aios"), (2, "aios_ablated"), (2, "llama_server"),
    ]
    assert all(r["errors"] == 0 and r["completion_tokens"] == level["planned_output_tokens"] for r in level["rounds"])
    assert level["ratios"]["aios_ablated"]["makespan"] > 0 and level["ratios"]["aios_ablated"]["same_completion_tokens"]
    assert "aios_ablated" in level["agreement"]["identical_vs_aios"]
    assert "AIOS ablated / AIOS makespan" in markdown(result)


def test_an_ablation_without_the_aios_setup_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--model", "sim", "--agents", "1", "--setups", "llama_server", "--ablate-core-option", "prefix_cache=1", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "add aios to --setups" in capsys.readouterr().err


def test_extra_llama_server_arguments_reach_its_command_line(tmp_path, monkeypatch):
    from aios.bench.suites.agents import llama_cpp_server

    started = []
    monkeypatch.setattr(llama_cpp_server.LlamaServer, "start", lambda self, timeout=300.0: started.append(self.config) or "http://x/v1")
    options = StudyOptions(levels=(2,), shared=(False,), setups=("llama_server",), model="local", llama_server_args=("-ub", "63"))
    servers, _ = make_servers(options, 2, tmp_path)
    servers["llama_server"].start()
    assert started and started[0].extra_args == ("-ub", "63") and started[0].slots == 2


def test_an_option_the_kernel_refuses_stops_the_study_before_any_round(tmp_path, capsys):
    """Checked with ``aios serve --check`` before the baselines' rounds, not found when aios serve starts after them."""
    with pytest.raises(SystemExit) as exit_:
        main([
            "--model", "sim", "--agents", "2", "--setups", "llama_server,aios", "--scheduler-option", "rank=bogus",
            "--out", str(tmp_path),
        ])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "aios serve refused the configuration" in err and "rank must be one of levels, gittins" in err
    assert not list(tmp_path.glob("agents-sim-*.json"))


def test_a_core_option_the_kernel_refuses_is_found_by_the_check(tmp_path):
    import asyncio

    from aios.bench.studies.agents import check_setups

    from aios_core.errors import ConfigError

    good = StudyOptions(levels=(2, 16), shared=(False,), setups=("llama_server", "aios"), model="sim")
    asyncio.run(check_setups(good, tmp_path / "good"))
    bad = StudyOptions(levels=(2, 16), shared=(False,), setups=("llama_server", "aios"), model="sim", core_options=(("t0", -1),))
    with pytest.raises(ConfigError, match="aios serve refused the configuration: .*sim cost t0 must be a number >= 0"):
        asyncio.run(check_setups(bad, tmp_path / "bad"))
