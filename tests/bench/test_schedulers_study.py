"""The scheduler study (bench.schedulers) on virtual time: every setup runs, the bound holds, PLAS beats FIFO."""

from __future__ import annotations

import json

import pytest

from aios.bench.studies.schedulers import GEMMA_COSTS, main, study


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return study(120, 0, 8, 0.3, GEMMA_COSTS, tmp_path_factory.mktemp("study"))


def test_every_setup_runs_every_agent_and_no_schedule_beats_the_lower_bound(result):
    rows = {r["setup"]: r for r in result["rows"]}
    assert sorted(rows) == list("abcdefgh")
    bound = result["lower_bound"]["bound"]
    for r in rows.values():
        assert len(r["completion"]) == 120
        assert r["makespan"] >= bound * 0.999  # virtual time: exact up to float rounding
        assert 0 < r["efficiency"] <= 1.001
        assert 0 < r["jain_fairness"] <= 1


def test_the_setups_differ_the_way_their_mechanisms_say(result):
    rows = {r["setup"]: r for r in result["rows"]}
    assert rows["a"]["mean_batch"] == 1.0 and rows["c"]["mean_batch"] > 4  # serial engine vs batching
    assert rows["a"]["makespan"] > 2 * rows["c"]["makespan"]
    assert rows["e"]["prefix_hit_rate"] > 0.5 and rows["c"]["prefix_hit_rate"] == 0
    assert rows["e"]["makespan"] < rows["c"]["makespan"]  # shared system prompts are computed once
    assert rows["d"]["snapshots"] > 0  # round robin preempts with snapshots
    assert rows["h"]["completion_mean"] <= rows["f"]["completion_mean"]  # SRPT with known lengths is the ceiling


def test_plas_beats_fifo_on_mean_and_p99_completion(result):
    ratios = result["ratios"]
    assert ratios["plas_vs_fifo_mean"] > 1.1
    assert ratios["plas_vs_fifo_p99"] > 1.0


def test_the_command_writes_json_and_png(tmp_path, capsys):
    assert main(["--agents", "30", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "PLAS vs FIFO" in out and "lower bound" in out
    (path,) = tmp_path.glob("schedulers-*.json")
    saved = json.loads(path.read_text())
    assert {r["setup"] for r in saved["rows"]} == set("abcdefgh")
    assert list(tmp_path.glob("schedulers-*.png"))
