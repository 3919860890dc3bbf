"""Every program of examples/quickstarts/ runs as a new user would run it: no key, no framework config, one added line.

Each program is run unchanged in a subprocess with no ``OPENAI_API_KEY`` (nor
any other provider variable) and an empty ``HOME``, on the sim core. The
kernel's own records (a recorder plugin's copy of every finished syscall, and
the audit log) must show every model call and tool call as a scheduled
syscall of the right agent, the tool's result in the next model call of that
agent, and the process must exit cleanly (nothing on stderr but the
framework's own import-time notices).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from quickstart_runner import Run, run_quickstart

pytestmark = pytest.mark.frameworks

PREAPPROVE_PYTHON = '[managers.access.groups.default]\npreapproved = ["tool:python"]\n'

LOGURU_TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+(?: [+-]\d\d:?\d\d)?"

#: what frameworks themselves print to stderr while being imported (also without AIOS); anything else fails a test
FRAMEWORK_IMPORT_NOTICES = (
    # MetaGPT logs to stderr through loguru, INFO and WARNING records included; loguru 0.8 added the UTC offset to its
    # default time stamp ("2026-12-07 14:48:53.420 +00:00 | INFO ..."), 0.7 had none
    re.compile(rf"^{LOGURU_TIME} \| (INFO|WARNING) +\| metagpt\.|^{LOGURU_TIME} \| INFO +\| __main__:"),
    # deprecation notices of packages MetaGPT's and Open-Interpreter's imports pull in (google, qianfan, pkg_resources)
    re.compile(r"(FutureWarning|UserWarning|DeprecationWarning): |^\s+(warnings\.warn|import \S+)|^\[WARNING\].*redis_rate_limiter"),
)


def _stray_stderr(stderr: str) -> list[str]:
    """stderr lines that are not a framework's own import-time notice (or a continuation of a multi-line one)."""
    stray = []
    for line in stderr.splitlines():
        if not line.strip() or any(p.search(line) for p in FRAMEWORK_IMPORT_NOTICES):
            continue
        stray.append(line)
    return stray


def _google_notice_body(line: str) -> bool:
    # google.generativeai's FutureWarning spans several prose lines
    return any(s in line for s in ("All support for the `google.generativeai`", "updates or bug fixes", "See README", "deprecated-generative-ai-python"))


def test_the_stderr_filter_knows_loguru_07_and_08_stamps_and_nothing_more():
    notices = [
        "2026-12-07 14:48:56.756 | INFO     | metagpt.team:invest:93 - Investment: $3.0.",  # loguru 0.7
        "2026-12-07 14:48:56.756 +00:00 | INFO     | metagpt.team:invest:93 - Investment: $3.0.",  # loguru 0.8
        "2026-12-07 14:48:56.955 +01:00 | WARNING  | metagpt.utils.cost_manager:update_cost:49 - Model sim not found",
        "2026-12-07 14:48:56.956 +00:00 | INFO     | __main__:_act:70 - Ben(Editor): to do ReviewSlogan",
    ]
    assert _stray_stderr("\n".join(notices)) == []
    stray = [
        "2026-12-07 14:48:56.956 +00:00 | ERROR    | metagpt.roles.role:_act:403 - failed",
        "2026-12-07 14:48:56.956 +00:00 | WARNING  | __main__:main:80 - a warning of the program itself",
        "Traceback (most recent call last):",
    ]
    assert _stray_stderr("\n".join(stray)) == stray


def assert_scheduled(run: Run, agents: set[str]) -> None:
    """Every model and tool call reached the kernel's queue as a syscall of one of ``agents``, allowed and without error."""
    assert run.records, "the kernel scheduled nothing: the framework's calls did not reach it"
    for record in run.records:
        assert record["kind"] in ("llm", "tool"), record
        assert record["agent"] in agents, f"{record['kind']} call scheduled under {record['agent']!r}, expected one of {agents}"
        assert record["queued"] and record["error"] is None, record
    allowed = {(r.agent, r.action) for r in run.audit if r.decision == "allow"}
    for record in run.records:
        assert (record["agent"], record["kind"]) in allowed, f"no audit record allows {record['agent']}'s {record['kind']} call"


def assert_tool_result_reached_agent(run: Run, tool: str, result: str) -> dict[str, Any]:
    """The tool syscall ``tool`` happened, and the same agent's next model call was shown ``result`` as a tool message."""
    order = run.records
    index = next((i for i, r in enumerate(order) if r["kind"] == "tool" and r["calls"][0]["name"] == tool), None)
    assert index is not None, f"no tool syscall {tool}; syscalls: {[(r['kind'], r['agent']) for r in order]}"
    call = order[index]
    following = next((r for r in order[index + 1 :] if r["kind"] == "llm" and r["agent"] == call["agent"]), None)
    assert following is not None, f"{call['agent']} made no model call after its {tool} call"
    tool_messages = [m["content"] or "" for m in following["messages"] if m["role"] == "tool"]
    assert any(result in content for content in tool_messages), f"{result!r} not among the tool results shown: {tool_messages}"
    return call


def assert_clean_exit(run: Run, *, framework_notices: bool = False) -> None:
    if not framework_notices:
        assert run.stderr == "", run.stderr
        return
    stray = [line for line in _stray_stderr(run.stderr) if not _google_notice_body(line)]
    assert not stray, "\n".join(stray)


def test_autogen_assistant_with_a_function_tool(tmp_path):
    pytest.importorskip("autogen_agentchat")
    run = run_quickstart(tmp_path, "autogen_assistant.py")
    assert_scheduled(run, {"timetable_agent"})
    assert [r["kind"] for r in run.records] == ["llm", "tool", "llm"]  # tool call, tool, reflection: nothing unscheduled
    call = assert_tool_result_reached_agent(run, "autogen.next_train", "leaves at 14:05 from platform 3")
    assert f"The next train from {call['calls'][0]['arguments']['station']} leaves at 14:05" in run.stdout
    assert_clean_exit(run)


def test_autogen_round_robin_team(tmp_path):
    pytest.importorskip("autogen_agentchat")
    run = run_quickstart(tmp_path, "autogen_team.py")
    assert_scheduled(run, {"writer", "reviewer"})
    # MaxMessageTermination(5): the task and four turns, alternating, all one team program
    assert [r["agent"] for r in run.records] == ["writer", "reviewer", "writer", "reviewer"]
    assert len({r["program"] for r in run.records}) == 1
    assert_clean_exit(run)


def test_langchain_bind_tools_and_pass_results_back(tmp_path):
    pytest.importorskip("langchain_openai")
    run = run_quickstart(tmp_path, "langchain_tools.py")
    model_agents = {r["agent"] for r in run.calls("llm")}
    assert len(model_agents) == 1 and next(iter(model_agents)).startswith("langchain.ChatOpenAI.")
    assert_scheduled(run, model_agents)  # the tool call the model asked for runs under the model's agent
    assert [r["kind"] for r in run.records] == ["llm", "tool", "llm"]
    tool = run.calls("tool")[0]["calls"][0]
    a, b = tool["arguments"]["a"], tool["arguments"]["b"]
    expected = a * b if tool["name"] == "langchain.multiply" else a + b
    assert_tool_result_reached_agent(run, tool["name"], str(expected))
    assert f"-> {expected}" in run.stdout
    assert_clean_exit(run)


def test_langgraph_react_agent(tmp_path):
    pytest.importorskip("langgraph")
    run = run_quickstart(tmp_path, "langgraph_react.py")
    model_agents = {r["agent"] for r in run.calls("llm")}
    assert len(model_agents) == 1
    assert_scheduled(run, model_agents)
    assert [r["kind"] for r in run.records] == ["llm", "tool", "llm"]  # reason, act, observe and answer
    assert_tool_result_reached_agent(run, "langchain.get_opening_hours", "is open from 10:00 to 18:00")
    assert "Tool Message" in run.stdout
    assert_clean_exit(run)


def test_metagpt_team_without_config_or_key(tmp_path):
    pytest.importorskip("metagpt")
    run = run_quickstart(tmp_path, "metagpt_team.py")
    assert_scheduled(run, {"Ada", "Ben"})
    assert [r["agent"] for r in run.records] == ["Ada", "Ben"]  # two rounds: the copywriter, then the editor
    assert len({r["program"] for r in run.records}) == 1  # the team run is one program
    # the editor's call saw the copywriter's message (MetaGPT passed it on through the team's environment)
    assert "Copywriter: " in run.records[1]["messages"][-1]["content"]
    assert not (tmp_path / "home" / ".metagpt").exists()  # nothing was written into the user's home
    assert_clean_exit(run, framework_notices=True)


def test_open_interpreter_chat_runs_code_in_the_kernel(tmp_path):
    pytest.importorskip("interpreter")
    run = run_quickstart(
        tmp_path, "open_interpreter_chat.py", config=PREAPPROVE_PYTHON, core="scripted-sim",
        env={"AIOS_QUICKSTART_CODE": "print(7 * 24 * 60 * 60)"},
    )
    agents = {r["agent"] for r in run.records}
    assert len(agents) == 1 and next(iter(agents)).startswith("open-interpreter.")
    assert_scheduled(run, agents)
    assert [r["kind"] for r in run.records] == ["llm", "tool", "llm"]
    assert_tool_result_reached_agent(run, "python", "604800")
    assert_clean_exit(run, framework_notices=True)
