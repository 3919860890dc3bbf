"""The managers' and the server's benchmarks, run small: they finish, write their results, and their checks hold."""

from __future__ import annotations

import json

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
