"""The calibration machinery, against an engine whose costs are known: a sim core on the real clock."""

from __future__ import annotations

import json

import pytest
from aios.bench.studies.calibration import calibrate, fit_decode, main, profile, small_trace, write_profile
from aios.bench.studies.schedulers import DEFAULT_PROFILE, PLAIN_PROFILE, ProfileError, load_costs

from aios_core.cores.sim import SimCore, SimCosts

TRUE = {"t0": 0.01, "a": 0.00002, "b": 0.002, "c": 0.00001}


def _engine(prefix_slots: int) -> SimCore:
    return SimCore(max_batch=4, kv_capacity=8192, context_length=8192, prefix_cache=prefix_slots, **TRUE)


def test_fit_recovers_known_costs_including_the_context_term_and_the_sim_predicts_each_setup():
    trace = small_trace(3, seed=1, arrival_rate=4.0, max_tokens=16)
    result = calibrate(agents=3, seed=1, max_batch=4, threads=1, n_ctx=8192, arrival_rate=4.0, make_core=_engine, trace=trace)
    costs = result["fitted_costs"]
    assert costs["t0"] == pytest.approx(TRUE["t0"], rel=0.5)
    assert costs["b"] == pytest.approx(TRUE["b"], rel=0.5)
    assert costs["c"] == pytest.approx(TRUE["c"], rel=0.5)
    assert {g["context_tokens"] for g in costs["decode_groups"]} != {costs["decode_groups"][0]["context_tokens"]}
    assert [r["setup"] for r in result["rows"]] == ["a", "b", "b2", "c", "d", "e", "f", "g", "g2", "h", "h2"]
    # the "real" engine here is the sim itself: predictions are close (real-clock jitter only)
    assert result["mean_abs_error"]["makespan"] < 0.25
    for row in result["rows"]:
        assert row["measured"]["makespan"] > 0 and row["predicted"]["makespan"] > 0
    written = profile(costs, name="test", command="test", config={}, load=(0.5, 0.4, 0.3))
    assert SimCosts.from_dict(written["costs"]).c == costs["c"]
    assert written["load_average_at_start"] == [0.5, 0.4, 0.3]  # as taken before the measurement, not after


def test_the_decode_fit_is_exact_on_exact_data_and_never_negative():
    truth = (0.02, 0.01, 0.00003)
    groups = [(k, ctx, truth[0] + truth[1] * k + truth[2] * ctx) for k in (1, 2, 4, 8) for ctx in (30 * k, 400 * k, 900 * k)]
    t0, b, c, r2 = fit_decode(groups)
    assert (t0, b, c) == pytest.approx(truth, rel=1e-6) and r2 == pytest.approx(1.0)
    # step times that fall with context (noise on a busy machine) must not yield a negative context cost
    falling = [(k, ctx, 0.03 + 0.01 * k - 0.00001 * ctx) for k, ctx, _ in groups]
    assert min(fit_decode(falling)[:3]) >= 0.0


def test_the_study_loads_the_shipped_profile_and_refuses_broken_ones(tmp_path):
    shipped = json.loads(DEFAULT_PROFILE.read_text())
    assert shipped["kind"] == "aios-sim-profile" and "calibration" in shipped["command"]
    costs = load_costs()
    assert costs.c > 0 and costs.a > costs.c  # the fitted profile has the context term
    with pytest.raises(ProfileError, match="missing"):
        load_costs(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"costs": {"t0": -1}}))
    with pytest.raises(ProfileError, match="t0"):
        load_costs(bad)


def test_the_shipped_profiles_name_the_engine_they_were_fitted_to():
    # the kernel's core as it ships (its greedy head) and the same engine as llama-server runs it
    kernel, plain = (json.loads(path.read_text()) for path in (DEFAULT_PROFILE, PLAIN_PROFILE))
    assert kernel["config"]["core_options"].get("fast_head_rows", 1) != 0
    assert plain["config"]["core_options"]["fast_head_rows"] == 0
    for shipped in (kernel, plain):
        assert "--core-option" in shipped["command"] and shipped["config"]["llama_cpp"]["patches"]
        assert shipped["fit"]["r2_decode"] > 0.9  # a profile the linear model does not fit is not shipped
    # llama.cpp's output layer on every row costs more per sequence than the head's greedy rows
    assert load_costs(PLAIN_PROFILE).b > load_costs().b


@pytest.mark.parametrize(("option", "says"), [("bogus=1", "bogus"), ("fast_head_rows=-1", "fast_head_rows must be >= 0"), ("even_logits", "KEY=VALUE")])
def test_a_bad_core_option_is_a_usage_error_before_any_model_loads(option, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--fit-only", "--core-option", option, "--profile-out", str(tmp_path / "p.json")])
    assert exc.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


def test_a_profile_written_into_a_missing_directory_loads_as_written(tmp_path):
    shipped = json.loads(DEFAULT_PROFILE.read_text())
    path = write_profile(tmp_path / "new" / "dir" / "p.json", shipped)
    assert json.loads(path.read_text()) == shipped
    assert load_costs(path) == load_costs()
