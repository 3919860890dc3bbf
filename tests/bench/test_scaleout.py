"""aios bench scaleout: the multi-application workload, and AIOS vs LiteLLM's Router over two sim engines, one killed."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from aios.bench.studies.scaleout import ScaleoutOptions, markdown, multi_app_workload, round_plans, run_variant


def test_applications_have_their_own_shared_prompt():
    plans = multi_app_workload(10, 3, turns=2, seed=0, system_words=20, mean_tokens=8, max_tokens=16, tool_delay=0.1, tag="r1")
    assert len(plans) == 10 and len({p.name for p in plans}) == 10
    by_app: dict[str, set[str]] = {}
    for p in plans:
        by_app.setdefault(p.name.split("-")[0], set()).add(p.system)
    assert sorted(len(plans_of) for plans_of in by_app.values()) == [1, 1, 1]  # one prompt per application
    assert len(set().union(*by_app.values())) == 3  # and the applications' prompts differ
    assert [sum(p.name.startswith(f"app{a}-") for p in plans) for a in range(3)] == [4, 3, 3]
    with pytest.raises(ValueError, match="at least one agent per application"):
        multi_app_workload(2, 3, turns=1, seed=0, system_words=5, mean_tokens=4, max_tokens=4, tool_delay=0, tag="x")


def test_new_agents_each_round_are_the_same_workload_under_names_no_earlier_round_used():
    options = ScaleoutOptions(agents=6, apps=2, turns=2, system_words=20, mean_tokens=8, max_tokens=16)
    same = [round_plans(options, i, tag="t") for i in range(2)]
    assert [p.name for p in same[0]] == [p.name for p in same[1]]  # as the study always ran: the kernel knows them in round 2
    fresh = [round_plans(dataclasses.replace(options, new_agents_each_round=True), i, tag="t") for i in range(2)]
    assert not {p.name for p in fresh[0]} & {p.name for p in fresh[1]}
    for plans in fresh:  # the same prompts, turns and answer lengths as without new names
        assert [(p.system, p.turns) for p in plans] == [(p.system, p.turns) for p in same[0]]
        assert [p.name.rsplit("-r", 1)[0] for p in plans] == [p.name for p in same[0]]


@pytest.mark.frameworks  # imports LiteLLM (installed with Open-Interpreter), which is slow to import
@pytest.mark.timeout(900)  # two engines restarted per run, aios serve and LiteLLM: minutes on a loaded 2-core machine
def test_aios_and_litellm_over_two_sim_engines_with_one_killed(tmp_path):
    options = ScaleoutOptions(agents=4, apps=2, turns=2, rounds=1, model="sim", system_words=20, mean_tokens=6, max_tokens=10,
                              tool_delay=0.02, kill_after=0.05, end_agents=True, ablate_batch_by_speed=True, kill_engine=0,
                              ablate_new_agents=True)
    killed = asyncio.run(run_variant(options, options.kill_after, tmp_path))
    assert killed["variant"] == "one engine killed" and killed["kill_engine"] == 0
    # engine 0 was the one killed: every agent's last turn ran on engine 1
    assert {a["calls"][-1]["served_by"] for a in killed["rounds"][0]["agents"]} == {"aios-engine-1"}
    # the ablations run in the same round: the same kernel with its cores at each engine's fastest batch, and the
    # same kernel meeting the agents under new names
    assert [r["setup"] for r in killed["rounds"]] == ["aios", "litellm", "aios-by-speed", "aios-new-agents"]
    assert killed["ratios_aios_over_by_speed"]["makespan"] > 0 and killed["ratios_new_agents_over_aios"]["makespan"] > 0
    assert killed["summary"]["aios-by-speed"]["lost_calls"] == 0 and killed["summary"]["aios-new-agents"]["lost_calls"] == 0
    new_round = killed["rounds"][3]
    assert {a["agent"] for a in new_round["agents"]} == {a["agent"] + "-r1" for a in killed["rounds"][0]["agents"]}
    assert new_round["engine"]["requests"] >= 4 * 2  # its own kernel's cores
    for s in ("aios", "litellm"):
        assert killed["summary"][s]["planned_calls"] == 4 * 2
        assert killed["summary"][s]["lost_calls"] >= 0 and killed["summary"][s]["makespan"] > 0
    # with an engine gone, the kernel moves the calls to the other core: nothing lost
    assert killed["summary"]["aios"]["lost_calls"] == 0
    # what the kernel's cores did in the run: its requests, none of LiteLLM's
    aios_round, litellm_round, by_speed_round, _ = killed["rounds"]
    assert aios_round["engine"]["requests"] >= 4 * 2 and litellm_round["engine"] == {}
    assert by_speed_round["engine"]["requests"] >= 4 * 2  # its own kernel's cores
    # each engine's measured steps by batch size, as the kernel saw them (what batch_by_speed weighs)
    curves = aios_round["step_ms_by_batch"]
    assert set(curves) == {"engine-0", "engine-1"} and litellm_round["step_ms_by_batch"] == {}
    assert any(curves.values()) and all(ms > 0 for curve in curves.values() for ms in curve.values())
    # with end_agents, each agent ended itself after its last turn, as an SDK agent does: the kernel holds nothing for it
    assert aios_round["agents_registered_after"] == [] and litellm_round["agents_registered_after"] == []
    assert killed["ratios"]["makespan"] > 0
    table = markdown({"variants": [killed]})
    assert "one engine killed" in table and "fastest batch" in table and "meeting new agents" in table


def test_the_engine_to_kill_is_one_of_the_two():
    from aios_core.errors import ConfigError

    assert ScaleoutOptions().kill_engine == 1  # as the study always ran
    with pytest.raises(ConfigError, match="kill_engine must be 0 or 1"):
        ScaleoutOptions(kill_engine=2)


def test_new_agents_cannot_be_measured_against_agents_that_do_not_return():
    from aios_core.errors import ConfigError

    with pytest.raises(ConfigError, match="needs the agents of the other setups to return"):
        ScaleoutOptions(ablate_new_agents=True, new_agents_each_round=True)


def test_slots_are_held_only_on_llama_server_engines(tmp_path):
    from aios.bench.studies.scaleout import Engines, aios_config

    def cores(model: str, keep: float) -> list[dict]:
        engines = Engines(model, slots=4, n_ctx=1024, threads=1, seed=0, work=tmp_path)
        return aios_config(engines, tmp_path, "plas", keep)["cores"]

    assert [c["keep_slots"] for c in cores("local", 5.0)] == [5.0, 5.0]
    assert [c["keep_slots"] for c in cores("local", 0.0) + cores("sim", 5.0)] == [0.0] * 4
    engines = Engines("local", slots=4, n_ctx=1024, threads=1, seed=0, work=tmp_path)
    assert [c["batch_by_speed"] for c in aios_config(engines, tmp_path, "plas", 5.0)["cores"]] == [False, False]
    assert [c["batch_by_speed"] for c in aios_config(engines, tmp_path, "plas", 5.0, batch_by_speed=True)["cores"]] == [True, True]


@pytest.mark.parametrize("bad", ["-1", "nan", "inf"])
def test_a_bad_keep_slots_stops_the_study_before_anything_starts(tmp_path, capsys, bad):
    from aios.bench.studies.scaleout import main

    with pytest.raises(SystemExit) as exit_:
        main(["--model", "sim", "--keep-slots", bad, "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "--keep-slots must be 0 (off) or a number of seconds" in capsys.readouterr().err
    assert not list(tmp_path.glob("scaleout-*.json"))


def test_a_scheduler_the_kernel_does_not_know_stops_the_study_before_the_engines_start(tmp_path, capsys):
    from aios.bench.studies.scaleout import main

    with pytest.raises(SystemExit) as exit_:
        main(["--model", "sim", "--agents", "2", "--apps", "1", "--scheduler", "nosuch", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "aios serve refused the configuration" in err and "nosuch" in err
    assert not list(tmp_path.glob("scaleout-*.json"))


def test_the_load_average_is_taken_before_the_run(monkeypatch):
    """A benchmark's load average says whether the machine was idle when it started; taken afterwards it is the
    benchmark's own load (it was, in every scale-out JSON before this test)."""
    from aios.bench.studies import scaleout

    load = [0.1, 0.2, 0.3]
    monkeypatch.setattr(scaleout.os, "getloadavg", lambda: tuple(load))

    async def busy_variant(options, kill_after, work, console=None):
        load[:] = [1.9, 1.5, 1.2]  # the run loads the machine
        return {"variant": "healthy"}

    monkeypatch.setattr(scaleout, "run_variant", busy_variant)
    result = asyncio.run(scaleout.run_study(ScaleoutOptions(model="sim")))
    assert result["load_average_at_start"] == [0.1, 0.2, 0.3]
