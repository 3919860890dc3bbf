"""Each framework's agent runs the same episodes without and with AIOS (patched), on the sim core."""

from __future__ import annotations

import pytest
from aios.bench.suites.agents import get_framework
from aios.bench.suites.agents.interpreter_agent import messages_as_text
from aios.bench.suites.run import Options, compare

pytestmark = pytest.mark.frameworks

FRAMEWORKS = ["langchain", "autogen", "metagpt", "open-interpreter"]


def _require(name: str) -> None:
    """scripts/setup.sh installs the four frameworks: FrameworkUnavailable here is a broken install and fails the test."""
    get_framework(name)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_framework_agents_run_both_setups(framework):
    _require(framework)
    result = await compare(Options(suite="humaneval", framework=framework, agents=2, model="sim", rounds=1, limit=2, max_tokens=32, progress=False))
    native, aios = (next(r for r in result["rounds"] if r["setup"] == s) for s in ("native", "aios"))
    assert native["errors"] == 0 and aios["errors"] == 0
    # without AIOS the calls went to the server over HTTP; with AIOS they were kernel syscalls (the adapter routed them)
    assert native["llm_calls"] >= 2 and aios["llm_calls"] >= 2
    assert aios["engine"]["sim"]["steps"] > 0
    assert result["adapter"] == framework


@pytest.mark.parametrize("framework", ["autogen", "metagpt"])
async def test_framework_agents_keep_the_conversation_over_turns(framework):
    _require(framework)
    result = await compare(Options(suite="mint", framework=framework, agents=2, model="sim", rounds=1, limit=2, max_tokens=32, progress=False))
    for r in result["rounds"]:
        assert r["errors"] == 0
        assert all(a["replies"] == 5 for a in r["agents"])  # the sim never answers: every episode uses its 5 turns


def test_open_interpreter_messages_become_a_reply_with_fenced_code():
    text = messages_as_text(
        [
            {"role": "user", "type": "message", "content": "task"},
            {"role": "assistant", "type": "message", "content": "Here:"},
            {"role": "assistant", "type": "code", "format": "python", "content": "def f():\n    return 1"},
            {"role": "computer", "type": "console", "format": "output", "content": "ignored"},
        ]
    )
    assert text == "Here:\n```python\ndef f():\n    return 1\n```"
