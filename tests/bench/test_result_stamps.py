"""Result files are named by a claimed time stamp: runs that start or end in the same second keep every file."""

from __future__ import annotations

import json
import time

import pytest
from aios.bench import result_stamps
from aios.bench.result_stamps import claim_stamp
from aios.bench.suites.report import write_json


@pytest.fixture
def one_second(monkeypatch):
    """Every stamp taken in the test falls in the same second, as for runs started together."""
    frozen, strftime = time.localtime(), time.strftime
    monkeypatch.setattr(result_stamps.time, "strftime", lambda fmt, t=None: strftime(fmt, frozen))


def test_two_runs_in_one_second_get_different_stamps_and_leave_no_claim(tmp_path, one_second):
    first, held = claim_stamp(tmp_path, "schedulers")
    second, other = claim_stamp(tmp_path, "schedulers")
    with held, other:
        assert first != second
        assert second == f"{first}-2"
    assert not list(tmp_path.iterdir())  # the claims are gone once the runs end


def test_a_stamp_used_by_a_finished_run_is_not_reused_but_another_kinds_file_does_not_count(tmp_path, one_second):
    stamp, claim = claim_stamp(tmp_path, "agents")
    with claim:
        (tmp_path / f"agents-local-{stamp}.json").write_text("{}")
    again, claim = claim_stamp(tmp_path, "agents")
    with claim:
        assert again == f"{stamp}-2"
    other, claim = claim_stamp(tmp_path, "cores")
    with claim:
        assert other == stamp  # the agents file is no cores result
    assert claim_stamp(tmp_path / "new" / "dir", "rows")[0] == stamp  # a missing directory is made


def test_suite_results_written_in_the_same_second_are_both_kept(tmp_path, one_second):
    results = [{"suite": "humaneval", "framework": "autogen", "options": {"model": "sim"}, "round": n} for n in (1, 2)]
    paths = [write_json(r, tmp_path) for r in results]
    assert paths[0] != paths[1]
    assert [json.loads(p.read_text())["round"] for p in paths] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
