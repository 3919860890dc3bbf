"""Process-wide settings of the llama.cpp engine thread."""

from __future__ import annotations

import sys

import pytest

from aios_core.cores.llamacpp_runtime import ENGINE_SWITCH_INTERVAL, shorten_switch_interval


def test_the_gil_switch_interval_is_shortened_for_the_engine_and_never_lengthened():
    # agents patched into the same process keep the event loop's thread busy: with Python's 5 ms interval the
    # engine thread could wait that long each time it takes the GIL back after a llama.cpp or torch call
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        shorten_switch_interval()
        assert sys.getswitchinterval() == pytest.approx(ENGINE_SWITCH_INTERVAL)
        sys.setswitchinterval(ENGINE_SWITCH_INTERVAL / 5)  # a user's shorter choice stands
        shorten_switch_interval()
        assert sys.getswitchinterval() == pytest.approx(ENGINE_SWITCH_INTERVAL / 5)
    finally:
        sys.setswitchinterval(before)
