"""Every benchmark registered under the ``aios.bench`` entry-point group loads and answers ``--help`` itself.

Catches: a study module moved without its entry point (or with a stale import inside it, which would
only show as "not available" in ``aios bench --help``), and ``aios bench <study> --help`` printing the
generic usage instead of the study's own options.
"""

from __future__ import annotations

import pytest

from aios_core.cli import bench_studies, main

STUDIES = sorted(bench_studies())


def test_the_studies_are_registered() -> None:
    assert {"schedulers", "cores", "overhead", "managers", "server", "calibration", "humaneval", "mint", "gaia", "swebench"} <= set(STUDIES)


@pytest.mark.parametrize("study", STUDIES)
def test_each_study_owns_its_help(study: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert callable(bench_studies()[study].load())
    assert main(["bench", study, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "--" in out.split("usage:", 1)[1], out  # the study's own options are listed


def test_bench_help_lists_every_study_with_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for study in STUDIES:
        line = next(line for line in out.splitlines() if line.strip().startswith(study + " "))
        assert "not available" not in line and len(line.split(None, 1)[1]) > 10, line
