"""The metrics every study reports alike: percentiles, fairness, per-round ratios, and what a round did to an engine."""

from __future__ import annotations

import math

import pytest
from aios.bench.metrics import counter_changes, jain, per_round_ratios, percentile


def test_percentile_interpolates_and_an_empty_sample_is_nan():
    assert percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)
    assert percentile([1, 2, 3, 4, 5], 99) == pytest.approx(4.96)
    assert math.isnan(percentile([], 50))


def test_jain_is_one_for_equal_shares_and_one_over_n_for_one_taker():
    assert jain([3, 3, 3]) == pytest.approx(1.0)
    assert jain([1, 0, 0, 0]) == pytest.approx(0.25)


def test_per_round_ratios_pair_the_setups_of_each_round_and_skip_a_round_one_missed():
    rounds = [
        {"round": 1, "setup": "aios", "makespan": 10.0}, {"round": 1, "setup": "llama_server", "makespan": 20.0},
        {"round": 2, "setup": "llama_server", "makespan": 30.0}, {"round": 2, "setup": "aios", "makespan": 20.0},
        {"round": 3, "setup": "llama_server", "makespan": 5.0},
    ]
    assert per_round_ratios(rounds, "llama_server") == [2.0, 1.5]


def test_counter_changes_difference_counters_and_keep_gauges_as_at_the_end():
    before = {"steps": 100, "decode_seconds": 1.25, "step_rows": 16}
    after = {"steps": 160, "decode_seconds": 2.0, "step_rows": 24, "guesses": 7}
    assert counter_changes(before, after, ("step_rows",)) == {"steps": 60, "decode_seconds": 0.75, "step_rows": 24, "guesses": 7}
