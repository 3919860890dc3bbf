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
    for name in ("geographer-0", "naturalist-1", "astronomer-2"):
        assert name in out
    assert "What is the capital of Italy?" in out and "What is the capital of Japan?" in out  # both calls of the program
    assert "failed agents" in out and "makespan" in out and "prefix cache hit rate" in out and "mean batch" in out
    assert "model" in out and "sim" in out


def test_run_frames_questions_few_shot_and_shares_the_frame():
    from aios_core.run_job import EXAMPLES, SYSTEM, frame

    first = frame("What is the capital of Italy?")
    assert first[0] == {"role": "system", "content": SYSTEM}
    assert [m["role"] for m in first[1:]] == ["user", "assistant"] * len(EXAMPLES) + ["user"]
    assert first[-1]["content"] == "Q: What is the capital of Italy?"
    follow = frame("What is the capital of Japan?", (("What is the capital of Italy?", "Rome"),))
    assert follow[: len(first) - 1] == first[:-1]  # every call starts with the same shared prefix
    assert follow[-3:] == [
        {"role": "user", "content": "Q: What is the capital of Italy?"},
        {"role": "assistant", "content": "Rome"},
        {"role": "user", "content": "Q: What is the capital of Japan?"},
    ]


@pytest.mark.parametrize(
    ("raw", "question", "answer", "echo"),
    [
        ("Rome<junk after>\nQ: What is", "What is the capital of Italy?", "Rome<junk after>", False),
        ("A: Tokyo", "What is the capital of Japan?", "Tokyo", False),
        ("\n\n  Seven days", "How many days are in a week?", "Seven days", False),
        ("Short questions, each answered with a word or a short phrase.", "What is two plus two?", None, True),
        ("What is the capital of Italy? Rome is", "What is the capital of Italy?", None, True),
        ("capital of France", "What is the capital of Italy?", None, True),
        ("", "What do bees make?", "", True),
    ],
)
def test_answers_are_cut_to_their_line_and_echoes_are_detected(raw, question, answer, echo):
    from aios_core.run_job import clean_answer, is_echo

    cleaned = clean_answer(raw)
    if answer is not None:
        assert cleaned == answer
    assert is_echo(cleaned, question) is echo


def test_an_echo_is_marked_and_never_shown_as_the_answer():
    from rich.console import Console

    from aios_core.run_job import SYSTEM, AgentOutcome, render

    echoed = AgentOutcome(
        "poet-0", ["What is two plus two?", "What is ten minus one?"], [SYSTEM, "Nine"], [True, False], [False, True],
        2, 10, 0.1, 0.2, 0.3, 0,
    )
    result = {
        "outcomes": [echoed], "model": "gemma-3-270m", "embedded_default": True, "makespan": 1.0, "tokens": 10,
        "tokens_per_second": 10.0, "mean_batch": 1.0, "prefix_hit_rate": 0.5, "snapshots": {"saved": 0, "restored": 0},
        "scheduler": "plas", "cores": "llamacpp (gemma-3-270m)", "answers": 2, "echoes": 1, "correct": 1, "failed": 0,
    }
    console = Console(width=200, record=True)
    console.print(render(result))
    text = console.export_text()
    assert "echo, no answer" in text and "1 echoed the prompt" in text
    assert "Nine ✓" in text
    assert "--model-path" in text  # how to run a larger model


def test_run_model_path_selects_a_llamacpp_core_with_that_file(tmp_path, config_file):
    from aios_core.cli import _kernel_from_args, build_parser

    gguf = tmp_path / "bigger.gguf"
    args = build_parser().parse_args(["run", "--config", str(config_file), "--model-path", str(gguf), "--no-confirm"])
    cores = _kernel_from_args(args).config.cores
    assert [(c.kind, c.options().get("model_path")) for c in cores] == [("llamacpp", str(gguf))]


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


COMMANDS = ("run", "serve", "ps", "top", "plugins", "audit", "config")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        aios_main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text and f"aios {command}" in text.split("example", 1)[1]


def test_top_level_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        aios_main(["--help"])
    assert "examples:" in capsys.readouterr().out


def test_bench_help_lists_studies_and_a_study_shows_its_own_options(capsys):
    assert aios_main(["bench", "--help"]) == 0
    listing = capsys.readouterr().out
    for study in ("schedulers", "overhead", "humaneval"):
        assert study in listing
    assert "example" in listing
    with pytest.raises(SystemExit) as exit_:
        code = aios_main(["bench", "humaneval", "--help"])
        raise SystemExit(code)
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--framework" in text and "usage: aios bench <study>" not in text
