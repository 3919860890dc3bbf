"""The ``aios`` command: run on the sim core, audit, config, bench dispatch and help, as a user calls them."""

from __future__ import annotations

import json
import os

import pytest

from aios_core.cli import main as aios_main
from aios_core.config import load_config
from aios_core.kernel import Kernel
from aios_core.syscalls import StorageSyscall, ToolCall, ToolSyscall


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("AIOS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "aios.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\nentry_point_plugins = false\n'
        '[[cores]]\nkind = "sim"\nt0 = 0.0005\n'
        '[managers.embeddings]\nkind = "hashing"\n'
        '[managers.access]\naudit_file = "logs/decisions.db"\n'
    )
    return path


def _make_history(config_file):
    """One kernel session that leaves allowed and denied decisions in the audit log."""
    kernel = Kernel(load_config(config_file)).start()
    try:
        kernel.register_agent("alice")
        kernel.register_agent("bob")
        kernel.call(StorageSyscall(agent="alice", op="write", path="notes.txt", data="hi"))
        kernel.call(ToolSyscall(agent="bob", calls=[ToolCall(name="python", arguments={"code": "print(1)"})]))  # irreversible, nobody asked
    finally:
        kernel.stop()


def test_audit_shows_the_configured_log_and_filters_it(config_file, capsys):
    _make_history(config_file)
    assert aios_main(["audit", "--config", str(config_file), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {(r["agent"], r["action"], r["decision"]) for r in records} >= {("alice", "storage.write", "allow"), ("bob", "tool", "deny")}
    assert aios_main(["audit", "--config", str(config_file), "--json", "--decision", "deny"]) == 0
    denied = json.loads(capsys.readouterr().out)
    assert denied and all(r["decision"] == "deny" for r in denied)
    assert aios_main(["audit", "--config", str(config_file), "--agent", "bob"]) == 0
    table = capsys.readouterr().out
    assert "bob" in table and "irreversible" in table and "alice" not in table


def test_audit_of_a_fresh_data_dir_says_there_is_nothing_yet(config_file, capsys):
    assert aios_main(["audit", "--config", str(config_file)]) == 0
    assert "no audit records" in capsys.readouterr().out


def test_run_on_the_sim_core_reports_every_agent(config_file, capsys):
    assert aios_main(["run", "--config", str(config_file), "--agents", "3", "--max-tokens", "8", "--no-confirm"]) == 0
    out = capsys.readouterr().out
    for name in ("poet-0", "mathematician-1", "historian-2"):
        assert name in out
    assert "failed agents" in out and "makespan" in out


def test_config_prints_the_effective_configuration(config_file, capsys):
    assert aios_main(["config", "--config", str(config_file)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cores"][0]["kind"] == "sim" and shown["managers"]["access"]["audit_file"] == "logs/decisions.db"


def test_unknown_bench_and_bad_arguments_fail_with_a_message(config_file, capsys):
    assert aios_main(["bench", "nonsense"]) == 2
    assert "choose one of" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        aios_main(["run", "--frobnicate"])


def test_help_names_every_command(capsys):
    assert aios_main([]) == 0
    text = capsys.readouterr().out
    for command in ("run", "serve", "ps", "top", "plugins", "audit", "bench", "config"):
        assert command in text
