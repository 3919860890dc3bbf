"""The calibration machinery, against an engine whose costs are known: a sim core on the real clock."""

from __future__ import annotations

import pytest

from aios_core.cores.sim import SimCore
from aios.bench.studies.calibration import calibrate, small_trace

TRUE = {"t0": 0.004, "a": 0.00002, "b": 0.001}


def _engine(prefix_slots: int) -> SimCore:
    return SimCore(max_batch=4, kv_capacity=8192, context_length=8192, prefix_cache=prefix_slots, **TRUE)


def test_fit_recovers_known_costs_and_the_sim_predicts_each_setup():
    trace = small_trace(3, seed=1, arrival_rate=4.0, max_tokens=16)
    result = calibrate(agents=3, seed=1, max_batch=4, threads=1, n_ctx=8192, arrival_rate=4.0, make_core=_engine, trace=trace)
    costs = result["fitted_costs"]
    assert costs["t0"] == pytest.approx(TRUE["t0"], rel=0.5)
    assert costs["b"] == pytest.approx(TRUE["b"], rel=0.5)
    assert [r["setup"] for r in result["rows"]] == list("abcdefgh")
    # the "real" engine here is the sim itself: predictions are close (real-clock jitter only)
    assert result["mean_abs_error"]["makespan"] < 0.25
    for row in result["rows"]:
        assert row["measured"]["makespan"] > 0 and row["predicted"]["makespan"] > 0
