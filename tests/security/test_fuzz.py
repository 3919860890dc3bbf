"""Fuzzed, not just probed (issue 12, item 6): the properties of ``aios bench fuzz``, bounded for CI.

What must hold is written with each property in aios.bench.studies.fuzz: the
kernel never crashes, the server never answers 5xx, every refusal is a typed
error with a message, and nothing stored changes on a refused call. The
longer run is ``aios bench fuzz``.
"""

from __future__ import annotations

import pytest
from aios.bench.studies import fuzz


@pytest.mark.parametrize("name", sorted(fuzz.PROPERTIES))
def test_pure_property_holds(name):
    outcome = fuzz.run_property(name, 150)
    assert outcome.ok, outcome.failure


def test_storage_syscalls_by_a_hostile_agent(tmp_path):
    outcome = fuzz.fuzz_storage(40, tmp_path / "data")
    assert outcome.ok, outcome.failure


def test_the_http_api_never_answers_5xx(tmp_path):
    outcome = fuzz.fuzz_api(60, tmp_path / "data")
    assert outcome.ok, outcome.failure
