"""The scheduler study (bench.schedulers) on virtual time: every setup runs, each setup's bound holds, the
engine's own prefix cache (b2) is a real baseline, and PLAS beats FIFO where programs are heavy-tailed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from aios.bench.studies.schedulers import (
    DEFAULT_RATES,
    PLAIN_PROFILE,
    SETUP_KEYS,
    Engines,
    alone_times,
    default_rate,
    load_costs,
    lower_bound,
    main,
    setups,
    slo_throughput,
    study,
)
from aios.bench.studies.workload import FAMILIES, WorkloadError, make_family

from aios_core.cores.sim import SimCosts

COSTS = load_costs()


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return study(60, 0, 8, 0.3, COSTS, tmp_path_factory.mktemp("study"), family="pareto")


@pytest.fixture(scope="module")
def bimodal(tmp_path_factory):
    return study(40, 1, 8, 0.5, COSTS, tmp_path_factory.mktemp("bimodal"), family="bimodal", only=["b", "b2", "e", "g"])


def test_every_setup_runs_every_agent_and_no_schedule_beats_its_own_lower_bound(result):
    rows = {r["setup"]: r for r in result["rows"]}
    assert list(rows) == SETUP_KEYS
    for r in rows.values():
        assert len(r["completion"]) == 60
        assert r["makespan"] >= r["lower_bound"] * 0.999  # virtual time: exact up to float rounding
        assert 0 < r["efficiency"] <= 1.001
        assert 0 < r["jain_fairness"] <= 1
    # a setup that can share prefill has a lower bound than one that cannot
    assert rows["b2"]["lower_bound"] < rows["b"]["lower_bound"]


def test_the_setups_differ_the_way_their_mechanisms_say(result):
    rows = {r["setup"]: r for r in result["rows"]}
    assert rows["a"]["mean_batch"] == 1.0 and rows["c"]["mean_batch"] > 2  # serial engine vs batching
    assert rows["a"]["makespan"] > rows["c"]["makespan"]
    assert rows["b2"]["prefix_hit_rate"] > 0.5 and rows["b"]["prefix_hit_rate"] == 0 and rows["c"]["prefix_hit_rate"] == 0
    assert rows["b2"]["makespan"] < rows["b"]["makespan"]  # the engine's own cache computes shared prompts once
    assert rows["e"]["completion_mean"] == pytest.approx(rows["b2"]["completion_mean"], rel=0.05)  # kernel FIFO = engine FCFS
    assert rows["d"]["snapshots"] > 0  # round robin preempts with snapshots


def test_knowing_the_lengths_beats_first_come_first_served_on_heavy_tailed_programs(result):
    # the oracle (h) bounds what ordering alone can gain; PLAS vs FIFO is reported, not asserted (docs/benchmarks.md)
    rows = {r["setup"]: r for r in result["rows"]}
    assert rows["c"]["completion_mean"] > 1.2 * rows["h"]["completion_mean"]
    assert "plas_vs_fifo_mean" in result["ratios"] and "g_vs_b2_mean" in result["ratios"]


def test_conversations_are_reused_across_turns_and_the_bound_holds_with_history(bimodal):
    rows = {r["setup"]: r for r in bimodal["rows"]}
    assert bimodal["trace"]["with_history"] == 40
    for r in rows.values():
        assert r["makespan"] >= r["lower_bound"] * 0.999
    # system prompts and each agent's own conversation come from the cache
    assert rows["b2"]["prefix_hit_rate"] > 0.6 > rows["b"]["prefix_hit_rate"]


def test_every_family_builds_and_unknown_families_are_refused():
    for family in FAMILIES:
        trace = make_family(family, agents=10, seed=3, arrival_rate=1.0)
        assert len(trace) == 10 and all(p.calls for p in trace)
        assert trace == make_family(family, agents=10, seed=3, arrival_rate=1.0)  # a seed is a trace
    with pytest.raises(WorkloadError, match="unknown workload family"):
        make_family("nope", agents=1, seed=0, arrival_rate=1.0)


def test_the_slo_search_brackets_the_highest_rate_that_meets_the_slo(tmp_path):
    # a synthetic p99 slowdown growing with the rate: the SLO (2x) breaks at exactly 0.4 agents/s
    def measure(setup, family, agents, seed, rate, max_batch, costs, data_dir):
        return 1 + rate / 0.4

    found = slo_throughput(setups(8)[2], "pareto", 10, 0, 8, COSTS, tmp_path, measure=measure, refine=8)
    assert found["rate"] <= 0.4 < found["first_failing_rate"]
    assert found["rate"] == pytest.approx(0.4, rel=0.05)


def test_the_lower_bound_counts_shared_prefill_only_where_the_setup_can_share():
    trace = make_family("pareto", agents=20, seed=0, arrival_rate=1.0)
    by = {s.key: s for s in setups(8)}
    assert lower_bound(trace, COSTS, 8, by["b2"])["work"] < lower_bound(trace, COSTS, 8, by["b"])["work"]
    assert lower_bound(trace, COSTS, 8, by["a"])["work"] > lower_bound(trace, COSTS, 8, by["b"])["work"]  # one slot


def test_the_command_writes_json_and_png_per_family_and_seed_and_a_summary(tmp_path, capsys):
    assert main(["--family", "replay", "--agents", "12", "--seeds", "0-1", "--setups", "b2,g", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "(b2)" in out and "lower bound" in out
    paths = sorted(tmp_path.glob("schedulers-replay-s*.json"))
    assert len(paths) == 2 and len(list(tmp_path.glob("schedulers-replay-s*.png"))) == 2
    saved = json.loads(paths[0].read_text())
    assert {r["setup"] for r in saved["rows"]} == {"b2", "g"} and saved["config"]["family"] == "replay"
    (summary,) = tmp_path.glob("schedulers-summary-*.json")
    assert len(json.loads(summary.read_text())["runs"]) == 2


def test_scheduler_options_reach_the_plas_setups_only_and_bad_ones_are_refused_up_front(tmp_path, capsys):
    by = {s.key: s for s in setups(8, (("starvation_ratio", 50), ("rank", "gittins")))}
    assert dict(by["g"].options) == {"starvation_ratio": 50, "rank": "gittins"}
    assert dict(by["g2"].options)["rank"] == "levels"  # a setup's own option wins: (g2) is the levels rank
    assert by["e"].options == () and by["b2"].options == ()
    assert main(["--family", "replay", "--agents", "6", "--setups", "b2,g", "--scheduler-option", "starvation_ratio=50", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("schedulers-replay-s0-*.json")
    assert json.loads(path.read_text())["config"]["plas_options"] == {"starvation_ratio": 50}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--family", "replay", "--agents", "6", "--scheduler-option", "rank=fastest", "--out", str(tmp_path / "bad")])
    assert exc.value.code == 2 and "rank must be one of" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    for bad, says in [("kv_share=2", "kv_share"), ("application_min_samples=0", "application_min_samples"), ("max_hold=0", "max_hold")]:
        with pytest.raises(SystemExit) as exc:
            main(["--family", "replay", "--agents", "6", "--scheduler-option", bad, "--out", str(tmp_path / "bad")])
        assert exc.value.code == 2 and says in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()


def test_setups_without_aios_run_on_the_baseline_engine_and_are_judged_against_it(tmp_path):
    slower = replace(COSTS, b=COSTS.b * 2, t0=COSTS.t0 * 1.5)
    engines = Engines(kernel=COSTS, baseline=slower)
    assert engines.for_setup(setups(8)[2]) is slower and engines.for_setup(setups(8)[7]) is COSTS
    mixed = study(20, 0, 8, 0.3, engines, tmp_path / "mixed", family="replay", only=["b2", "g"])
    alike = study(20, 0, 8, 0.3, COSTS, tmp_path / "alike", family="replay", only=["b2", "g"])
    slow = study(20, 0, 8, 0.3, slower, tmp_path / "slow", family="replay", only=["b2", "g"])
    by = {name: {r["setup"]: r for r in res["rows"]} for name, res in [("mixed", mixed), ("alike", alike), ("slow", slow)]}
    # (b2) is the run on the slower engine, (g) the run on the kernel's, to the last digit (virtual time)
    assert by["mixed"]["b2"]["completion"] == by["slow"]["b2"]["completion"]
    assert by["mixed"]["g"]["completion"] == by["alike"]["g"]["completion"]
    assert by["mixed"]["b2"]["lower_bound"] == by["slow"]["b2"]["lower_bound"]
    # slowdown is against the setup's own engine alone: the faster engine earns no credit there
    trace = make_family("replay", agents=20, seed=0, arrival_rate=0.3)
    assert max(alone_times(trace, slower).values()) > max(alone_times(trace, COSTS).values())
    assert by["mixed"]["b2"]["slowdown_mean"] == by["slow"]["b2"]["slowdown_mean"]
    assert mixed["config"]["baseline_costs"]["b"] == slower.b and mixed["config"]["costs"]["b"] == COSTS.b
    assert alike["config"]["baseline_costs"] == alike["config"]["costs"]


def test_the_command_takes_a_baseline_profile_and_refuses_a_missing_one(tmp_path, capsys):
    assert main(["--family", "replay", "--agents", "6", "--setups", "b2,g", "--baseline-profile", str(PLAIN_PROFILE), "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("schedulers-replay-s0-*.json")
    saved = json.loads(path.read_text())
    assert saved["baseline_profile"] == str(PLAIN_PROFILE)
    assert saved["config"]["baseline_costs"] == load_costs(PLAIN_PROFILE).as_dict() != saved["config"]["costs"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["--family", "replay", "--agents", "6", "--baseline-profile", str(tmp_path / "nope.json"), "--out", str(tmp_path / "bad")])
    assert exc.value.code == 2 and "nope.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_the_default_rate_is_a_load_the_baseline_engine_gets_whatever_its_speed():
    reference = SimCosts(t0=0.01827, a=0.005, b=0.011157, c=0.0)  # the engine the rates were chosen on
    for family, rate in DEFAULT_RATES.items():
        assert default_rate(family, reference) == pytest.approx(rate, rel=1e-3)
        twice = replace(reference, t0=reference.t0 / 2, b=reference.b / 2)
        assert default_rate(family, twice) == pytest.approx(2 * rate, rel=1e-3)
    # with the plain engine as the baseline, the setups without AIOS get about the load they had
    assert default_rate("replay", load_costs(PLAIN_PROFILE)) < default_rate("replay", COSTS)
