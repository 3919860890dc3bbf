"""aios-notes, installed as a distribution, used through a kernel on the sim core."""

from __future__ import annotations

import pytest

from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.managers.audit import read_audit
from aios_core.plugins import PluginHost

TOOLS = ["note_add", "note_list", "note_read", "notes_clear", "text_stats"]


@pytest.fixture
def kernel_factory(tmp_path):
    started: list[Kernel] = []

    def build(**options):
        kernel = Kernel(cores=[SimCore(t0=0.0005, a=0.0, b=0.0)], scheduler="fifo", data_dir=tmp_path / "data", **options)
        started.append(kernel.start())
        return kernel

    yield build
    for kernel in started:
        kernel.stop()


def test_the_entry_point_registers_the_tools_under_the_distribution_name():
    report = PluginHost().report()
    [notes] = [p for p in report["plugins"] if p["name"] == "notes"]
    assert notes["origin"] == "entry point aios-notes 0.1.0"
    assert notes["module"] == "aios_notes.plugin"
    assert sorted(notes["contributes"]["tools"]) == TOOLS
    assert [e for e in report["errors"] if e["plugin"] == "notes"] == []


def test_side_effect_classes_are_declared():
    host = PluginHost()
    effects = {name: host.get("tools", name).side_effect for name in TOOLS}
    assert effects == {"note_add": "write", "note_list": "read", "note_read": "read", "notes_clear": "irreversible", "text_stats": "none"}


def test_tools_run_through_the_kernel(kernel_factory):
    kernel = kernel_factory()
    ada = kernel.agent("ada-run")
    stats, added = ada.call_tools(
        [
            {"name": "text_stats", "arguments": {"text": "two words\nand a line"}},
            {"name": "note_add", "arguments": {"title": "plan", "body": "write the tests first"}},
        ]
    )
    assert stats.ok and stats.output == {"words": 5, "characters": 20, "lines": 2}
    assert added.ok and added.output == {"title": "plan", "replaced": False, "notes": 1}
    listed, read = ada.call_tools([{"name": "note_list"}, {"name": "note_read", "arguments": {"title": "plan"}}])
    assert listed.output == ["plan"]
    assert read.output == "write the tests first"


def test_each_agent_has_its_own_notebook(kernel_factory):
    kernel = kernel_factory()
    kernel.agent("ada-own").call_tools([{"name": "note_add", "arguments": {"title": "secret", "body": "42"}}])
    [other] = kernel.agent("bob-own").call_tools([{"name": "note_read", "arguments": {"title": "secret"}}])
    assert not other.ok and other.error_type == "tool_error"
    assert "bob-own has no note titled 'secret'" in other.error


def test_arguments_are_validated_against_the_schema_before_the_tool_runs(kernel_factory):
    kernel = kernel_factory()
    ada = kernel.agent("ada-schema")
    [bad] = ada.call_tools([{"name": "note_add", "arguments": {"title": "no body"}}])
    assert not bad.ok and "'body' is a required property" in bad.error
    [extra] = ada.call_tools([{"name": "text_stats", "arguments": {"text": "x", "shout": True}}])
    assert not extra.ok and "Additional properties are not allowed" in extra.error
    [listed] = ada.call_tools([{"name": "note_list"}])
    assert listed.output == []


def test_an_irreversible_tool_is_denied_without_a_confirmation_and_audited(kernel_factory, tmp_path):
    kernel = kernel_factory()
    ada = kernel.agent("ada-deny")
    ada.call_tools([{"name": "note_add", "arguments": {"title": "keep", "body": "me"}}])
    [cleared] = ada.call_tools([{"name": "notes_clear"}])
    assert not cleared.ok and cleared.error_type == "access_denied"
    assert "denied by default" in cleared.error
    [listed] = ada.call_tools([{"name": "note_list"}])
    assert listed.output == ["keep"], "a denied irreversible tool must not have run"
    kernel.stop()
    denials = [e for e in read_audit(tmp_path / "data" / "audit.db", agent="ada-deny") if e.resource == "notes_clear"]
    assert [(e.decision, e.irreversible) for e in denials] == [("deny", True)]


def test_an_irreversible_tool_runs_once_confirmed(kernel_factory):
    asked: list[tuple[str, str, str]] = []

    def confirm(agent, action, detail):
        asked.append((agent, action, detail["resource"]))
        return True

    kernel = kernel_factory(confirm=confirm)
    ada = kernel.agent("ada-confirm")
    ada.call_tools(
        [{"name": "note_add", "arguments": {"title": "a", "body": "1"}}, {"name": "note_add", "arguments": {"title": "b", "body": "2"}}]
    )
    [cleared] = ada.call_tools([{"name": "notes_clear"}])
    assert cleared.ok and cleared.output == {"deleted": 2}
    assert asked == [("ada-confirm", "tool", "notes_clear")], "only the irreversible tool asks"


def test_a_model_turn_calls_a_plugin_tool(kernel_factory):
    kernel = kernel_factory()
    ada = kernel.agent("ada-model")
    offered = [s for s in kernel.managers.tools.specs() if s.name == "text_stats"]
    reply = ada.chat("How many words are in 'to be or not to be'?", tools=offered, tool_choice="required")
    [call] = reply.tool_calls
    assert call.name == "text_stats"
    [result] = ada.call_tools([call])
    assert result.ok and set(result.output) == {"words", "characters", "lines"}


def test_the_plugin_can_be_disabled_by_configuration(tmp_path):
    host = PluginHost(disabled={"notes"})
    assert "notes" not in host.plugins
    assert "note_add" not in host.names("tools")
