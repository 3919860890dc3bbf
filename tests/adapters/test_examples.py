"""Every example of examples/ runs unchanged, as its README says, with the kernel's core swapped for the sim core.

(The MetaGPT team and the Open-Interpreter streaming examples are run by their adapter's test module.)
"""

from __future__ import annotations

import importlib

import pytest
from example_runner import run_example

# the four frameworks are installed by scripts/setup.sh: a missing or broken install is a collection error here
# (and a failing example), not a skip; MetaGPT's roles first, its own import order
for _framework in ("metagpt.roles", "autogen_agentchat", "langchain_openai", "langgraph", "interpreter"):
    importlib.import_module(_framework)

pytestmark = pytest.mark.frameworks

PREAPPROVE_PYTHON = '[managers.access.groups.default]\npreapproved = ["tool:python"]\n'


def _allowed(audit_log, action):
    return {(r.agent, r.resource) for r in audit_log if r.action == action and r.decision == "allow"}


def test_autogen_weather_agent(tmp_path):
    proc, audit_log = run_example(tmp_path, "autogen", "weather_agent.py")
    assert "73 degrees and Sunny" in proc.stdout  # the tool ran and its result came back to the agent
    assert ("weather_agent", "autogen.get_weather") in _allowed(audit_log, "tool")
    assert {agent for agent, _ in _allowed(audit_log, "llm")} == {"weather_agent"}


def test_autogen_reflection_team(tmp_path):
    proc, audit_log = run_example(tmp_path, "autogen", "team.py")
    assert "primary" in proc.stdout and "critic" in proc.stdout
    assert {agent for agent, _ in _allowed(audit_log, "llm")} == {"primary", "critic"}


def test_langchain_chain_streams_and_batches(tmp_path):
    proc, audit_log = run_example(tmp_path, "langchain", "chain.py")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 3 and lines[1].startswith("- ") and lines[2].startswith("- ")
    assert sum(1 for r in audit_log if r.action == "llm" and r.decision == "allow") == 3


def test_langgraph_weather_agent(tmp_path):
    proc, audit_log = run_example(tmp_path, "langchain", "weather_agent.py")
    assert "It's always sunny in" in proc.stdout
    assert ("weather-agent", "langchain.get_weather") in _allowed(audit_log, "tool")


def test_metagpt_simple_coder(tmp_path):
    proc, audit_log = run_example(tmp_path, "metagpt", "simple_coder.py")
    assert _allowed(audit_log, "llm")


def test_open_interpreter_quickstart(tmp_path):
    proc, audit_log = run_example(tmp_path, "open_interpreter", "quickstart.py", config=PREAPPROVE_PYTHON)
    assert _allowed(audit_log, "llm")
