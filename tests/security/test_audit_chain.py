"""The audit log is tamper-evident and safe to read (issue 12, item 4).

Attacks: a process that can write the file edits, deletes or forges records
(the append-only triggers are dropped first, as anyone with the file can);
an agent puts a NUL in a path to cut the recorded resource short, or terminal
escapes and bidi marks in it to mislead the operator reading ``aios audit``;
a lone surrogate once killed the writer thread (every later denial hung).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_core.agents import AgentRecord
from aios_core.cli import main as aios_main
from aios_core.errors import AccessDeniedError, StorageError
from aios_core.managers.audit import AuditLog, AuditRecord, printable, read_audit, verify_audit
from aios_core.managers.embeddings import HashingEmbedder
from aios_core.managers.factory import ManagersConfig, build_managers
from aios_core.managers.sandbox_paths import SandboxPathError, normalize_path

HOSTILE = "\x1b[2J\x1b]0;owned\x07\x9b31m\u202egnp.exe\u2066x\u2069\x00tail"


def _rec(agent: str, resource: str = "calculator", decision: str = "allow") -> AuditRecord:
    return AuditRecord(time.time(), agent, "default", "tool", resource, decision, "reason", False, {"n": 1})  # type: ignore[arg-type]


def _log_with(path, n: int = 6) -> None:
    log = AuditLog(path)
    for i in range(n):
        log.append(_rec(f"agent{i}", decision="deny" if i % 2 else "allow")).result(5)
    log.close()


def _tamper(path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def test_an_untouched_log_verifies_and_reports_its_head(tmp_path):
    path = tmp_path / "audit.db"
    _log_with(path)
    report = verify_audit(path)
    assert report.ok and report.records == 6 and report.broken_at is None
    assert report.head == read_audit(path)[-1].hash


@pytest.mark.parametrize(
    ("statements", "broken_at", "problem"),
    [
        (["UPDATE audit SET decision = 'allow' WHERE id = 4"], 4, "changed"),
        (["UPDATE audit SET resource = 'x', hash = 'f' || substr(hash, 2) WHERE id = 3"], 3, "changed"),
        (["DELETE FROM audit WHERE id = 2"], 3, "does not follow"),
        (["DELETE FROM audit WHERE id >= 5"], 5, "missing"),
        (["INSERT INTO audit(time, agent, grp, action, resource, decision, reason) VALUES (0, 'x', 'g', 'tool', 'r', 'allow', 'forged')"], 7, "no chain link"),
        (["UPDATE audit SET prev = NULL, hash = NULL WHERE id <= 2"], 3, "does not follow"),
    ],
)
def test_tampering_is_reported_at_the_first_broken_link(tmp_path, statements, broken_at, problem):
    path = tmp_path / "audit.db"
    _log_with(path)
    _tamper(path, *statements)
    report = verify_audit(path)
    assert not report.ok and report.broken_at == broken_at and problem in (report.problem or "")


def test_rewriting_one_record_with_a_fresh_hash_breaks_the_next_link(tmp_path):
    from aios_core.managers.audit import record_hash

    path = tmp_path / "audit.db"
    _log_with(path)
    conn = sqlite3.connect(path)
    row = conn.execute("SELECT time, agent, grp, action, resource, decision, reason, irreversible, detail, prev FROM audit WHERE id = 2").fetchone()
    forged = (*row[:5], "allow", *row[6:9])
    conn.close()
    _tamper(path, f"UPDATE audit SET decision = 'allow', hash = '{record_hash(row[9], forged)}' WHERE id = 2")
    report = verify_audit(path)
    assert not report.ok and report.broken_at == 3


def test_the_chain_continues_across_reopening(tmp_path):
    path = tmp_path / "audit.db"
    _log_with(path, 3)
    _log_with(path, 3)
    assert verify_audit(path).ok and verify_audit(path).records == 6


def test_aios_audit_verify_exits_1_and_names_the_record(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    _log_with(data / "audit.db")
    config = tmp_path / "aios.toml"
    config.write_text(f'data_dir = "{data}"\n')
    monkeypatch.delenv("AIOS_CONFIG", raising=False)
    assert aios_main(["audit", "--config", str(config), "--verify"]) == 0
    assert "chain intact" in capsys.readouterr().out
    _tamper(data / "audit.db", "UPDATE audit SET reason = 'nothing to see' WHERE id = 5")
    assert aios_main(["audit", "--config", str(config), "--verify"]) == 1
    assert "broken at record 5" in capsys.readouterr().out


def test_a_nul_in_a_path_is_recorded_whole(tmp_path):
    async def attempt() -> None:
        m = build_managers(ManagersConfig(), data_dir=tmp_path / "data", plugin_tools={}, embedder=HashingEmbedder(dim=32))
        try:
            with pytest.raises(SandboxPathError):
                await m.storage.read(AgentRecord(name="mallory", group="default"), "notes.txt\x00../../etc/passwd")
            m.audit.flush()
            assert read_audit(m.audit.path, decision="deny")[-1].resource == "mallory/notes.txt\x00../../etc/passwd"
        finally:
            await m.aclose()

    asyncio.run(attempt())
    assert verify_audit(tmp_path / "data" / "audit.db").ok


def test_a_lone_surrogate_does_not_stop_the_writer(tmp_path):
    log = AuditLog(tmp_path / "audit.db")
    log.append(_rec("mallory", resource="a\ud800b", decision="deny")).result(5)
    assert log.append(_rec("alice", decision="deny")).result(5) > 0  # the writer is alive
    log.close()
    resources = [r.resource for r in read_audit(tmp_path / "audit.db")]
    assert resources == ["a\\ud800b", "calculator"]
    assert verify_audit(tmp_path / "audit.db").ok


def test_any_resource_text_is_stored_whole_and_chained(tmp_path):
    path = tmp_path / "audit.db"
    log = AuditLog(path)

    @settings(max_examples=80, deadline=None)
    @given(resource=st.text(max_size=40))
    def store(resource: str) -> None:
        row_id = log.append(_rec("a", resource=resource, decision="deny")).result(5)
        stored = [r for r in read_audit(path, limit=1) if r.id == row_id]
        assert stored and stored[0].resource == resource.encode("utf-8", "backslashreplace").decode("utf-8")

    try:
        store()
    finally:
        log.close()
    assert verify_audit(path).ok


def test_aios_audit_prints_no_terminal_control_characters(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    log = AuditLog(data / "audit.db")
    log.append(_rec(f"mallory{HOSTILE}", resource=f"mallory/{HOSTILE}", decision="deny")).result(5)
    log.close()
    config = tmp_path / "aios.toml"
    config.write_text(f'data_dir = "{data}"\n')
    monkeypatch.delenv("AIOS_CONFIG", raising=False)
    for extra in ([], ["--json"]):
        assert aios_main(["audit", "--config", str(config), *extra]) == 0
        out = capsys.readouterr().out
        for ch in "\x1b\x07\x9b\u202e\u2066\u2069\x00":
            assert ch not in out, f"{ch!r} reached the terminal ({extra})"
        assert "gnp.exe" in out  # the text is still there, its controls escaped


def test_printable_escapes_controls_and_keeps_ordinary_text():
    assert printable("plain / ünïcode 文字") == "plain / ünïcode 文字"
    assert printable("\x1b[31m") == "\\x1b[31m"
    assert printable("a\u202eb\x9bc") == "a\\u202eb\\x9bc"


@pytest.mark.parametrize(
    "path",
    ["a\x85b", "x\x9b31m", "report\u202efdp.exe", "a\u2066b", "a\u2069", "a\u200eb", "a\u200f", "a\u061cb", "a\ud800", "a" * 256, "ok/" + "é" * 128],
)
def test_storage_refuses_c1_bidi_surrogates_and_long_components(path):
    with pytest.raises(SandboxPathError):
        normalize_path(path)


async def test_a_refused_path_changes_nothing_stored(tmp_path):
    m = build_managers(ManagersConfig(), data_dir=tmp_path / "data", plugin_tools={}, embedder=HashingEmbedder(dim=32))
    try:
        alice = AgentRecord(name="alice", group="default")
        await m.storage.write(alice, "notes.txt", "v1")
        for bad in ("notes\u202etxt.exe", "notes.txt\x85", "x" * 300 + "/y"):
            with pytest.raises(AccessDeniedError):
                await m.storage.write(alice, bad, "v2")
        assert [(f.path, f.version) for f in await m.storage.store.list("alice")] == [("notes.txt", 1)]
    finally:
        await m.aclose()
    assert normalize_path("a" * 255) == "a" * 255  # the limit itself is allowed


def test_verifying_a_missing_log_is_a_clear_error(tmp_path):
    with pytest.raises(StorageError, match="no audit log"):
        verify_audit(tmp_path / "nope.db")
