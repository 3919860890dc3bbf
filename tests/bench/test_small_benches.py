"""The managers' and the server's benchmarks, run small: they finish, write their results, and their checks hold."""

from __future__ import annotations

import json

import pytest
from aios.bench.studies import managers, server_load


def test_the_managers_benchmark_runs_and_lru_k_beats_lru(tmp_path):
    assert managers.main(["--ops", "600", "--items", "60", "--calls", "4", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "managers.json").read_text())
    hit = {row["setup"]: row["hit rate"] for row in result["memory"]}
    assert hit["no limit (all resident)"] == 1.0 and 0 < hit["LRU-2 (default)"] < 1
    assert hit["LRU-2 (default)"] >= hit["LRU (K=1)"]
    assert result["speedups"]["io_wait"] > 2  # 4 independent 50 ms calls: run together, not one after another


def test_the_server_load_test_loses_nothing_and_memory_stays_flat(tmp_path):
    out = tmp_path / "load.json"
    assert server_load.main(["--clients", "20", "--duration", "1.5", "--warmup", "0.5", "--sequential", "20", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    http = result["http"]
    assert http["sent"] == http["answered"] and http["lost"] == 0 and http["sent"] > 20
    assert http["kernel_completed"] + http["kernel_failed"] == http["sent"]
    assert result["embedded"]["ok"] > 0 and result["sequential_median_ms"]


def test_the_micro_batch_study_refuses_bad_options_before_loading_anything(capsys):
    from aios.bench.studies import ubatch

    for argv in (["--ubatch", "0"], ["--ubatch", "600"], ["--sequences", "1"], ["--sequences", "90"], ["--prompt", "5000"], ["--streams", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            ubatch.main(argv)
        assert exit_info.value.code == 2, argv
    err = capsys.readouterr().err
    assert "--ubatch values must be" in err and "--streams must be" in err


def test_the_logits_digest_refuses_bad_options_before_loading_anything(capsys):
    from aios.bench.studies import logits_digest

    for argv in (["--sequences", "0"], ["--sequences", "11"], ["--steps", "-1"], ["--steps", "201"]):
        with pytest.raises(SystemExit) as exit_info:
            logits_digest.main(argv)
        assert exit_info.value.code == 2, argv
    assert "--sequences must be 1..10" in capsys.readouterr().err


def test_the_micro_batch_study_table_gives_each_size_against_the_first():
    from aios.bench.studies import ubatch
    from rich.console import Console

    result = {
        "options": {"sequences": 16, "threads": 1}, "cells_per_sequence": 600,
        "median_ms": {"512": {"mixed": 2000.0}, "63": {"mixed": 1000.0}, "60": {"mixed": 800.0}},
    }
    console = Console(width=200, record=True)
    console.print(ubatch.render(result))
    text = console.export_text()
    assert "2.00x" in text and "2.50x" in text and "512 / 63" in text and "512 / 60" in text


def test_the_logits_rows_study_refuses_bad_options_before_loading_anything(capsys):
    from aios.bench.studies import rows

    for argv in (["--max-rows", "0"], ["--max-rows", "13"], ["--sequences", "90", "--max-rows", "5"], ["--prompt", "4"], ["--rounds", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            rows.main(argv)
        assert exit_info.value.code == 2, argv
    assert "--max-rows must be" in capsys.readouterr().err


def test_the_logits_rows_study_compares_each_batch_with_one_logits_row_more():
    from aios.bench.studies import rows
    from rich.console import Console

    shapes = rows.batches(3)
    assert list(shapes) == ["1 decoding rows", "2 decoding rows", "3 decoding rows", *(f"8 rows, {j} with logits" for j in range(1, 9))]
    assert shapes["3 decoding rows"] == ([(0, 1), (1, 1), (2, 1)], [1, 1, 1])
    assert shapes["8 rows, 3 with logits"] == ([(0, 8)], [3])
    med = {name: 100.0 for name in shapes} | {"3 decoding rows": 150.0, "8 rows, 8 with logits": 50.0}
    console = Console(width=200, record=True)
    console.print(rows.render({"options": {"sequences": 12, "threads": 1, "max_rows": 3}, "cells_per_sequence": 350, "median_ms": med}))
    text = console.export_text()
    # 2 rows (100 ms) against 3 (150 ms); 7 logits rows (100 ms) against 8 (50 ms)
    assert "0.67x" in text and "2.00x" in text


@pytest.mark.model
def test_the_logits_rows_study_times_the_row_pass_on_the_model(tmp_path):
    """A small run through the C tap (its callback needs the tap's own data: without it ggml's first call crashed)."""
    from aios.bench.studies import rows

    assert rows.main(["--row-pass", "--max-rows", "2", "--sequences", "2", "--rounds", "1", "--prompt", "8", "--decode", "1",
                      "--out", str(tmp_path)]) == 0
    [path] = tmp_path.glob("rows-*.json")
    result = json.loads(path.read_text())
    assert result["options"]["row_pass"] is True and not result["options"]["head"]
    assert all(result["median_ms"][f"{k} decoding rows, row pass"] > 0 for k in (1, 2))
    assert not any(name.endswith(", head") for name in result["median_ms"])
