import sqlite3
import time

import pytest

from aios_core.managers.audit import AuditLog, AuditRecord, read_audit


def _rec(agent, decision="allow", action="tool", resource="calculator", reason="r"):
    return AuditRecord(time.time(), agent, "default", action, resource, decision, reason, False, {"n": 1})


def test_records_are_committed_and_read_back_in_order(tmp_path):
    log = AuditLog(tmp_path / "audit.db")
    ids = [log.append(_rec("alice")).result(5), log.append(_rec("bob", "deny")).result(5), log.append(_rec("alice", action="llm")).result(5)]
    assert ids == sorted(ids)
    log.close()

    everything = read_audit(tmp_path / "audit.db")
    assert [(r.agent, r.decision, r.action) for r in everything] == [("alice", "allow", "tool"), ("bob", "deny", "tool"), ("alice", "allow", "llm")]
    assert everything[0].detail == {"n": 1}
    assert [r.agent for r in read_audit(tmp_path / "audit.db", agent="alice")] == ["alice", "alice"]
    assert [r.agent for r in read_audit(tmp_path / "audit.db", decision="deny")] == ["bob"]
    assert [r.action for r in read_audit(tmp_path / "audit.db", action="ll")] == ["llm"]
    assert len(read_audit(tmp_path / "audit.db", limit=1)) == 1
    assert read_audit(tmp_path / "audit.db", limit=1)[0].action == "llm"  # the newest


def test_the_log_cannot_be_updated_or_deleted(tmp_path):
    log = AuditLog(tmp_path / "audit.db")
    log.append(_rec("alice", "deny")).result(5)
    log.close()
    conn = sqlite3.connect(tmp_path / "audit.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET decision = 'allow'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    conn.close()
    assert read_audit(tmp_path / "audit.db")[0].decision == "deny"


def test_many_concurrent_appends_are_group_committed(tmp_path):
    log = AuditLog(tmp_path / "audit.db")
    futures = [log.append(_rec(f"a{i}")) for i in range(2000)]
    log.flush()
    assert all(f.done() for f in futures)
    log.close()
    assert len(read_audit(tmp_path / "audit.db", limit=10_000)) == 2000


def test_reading_a_missing_log_is_empty(tmp_path):
    assert read_audit(tmp_path / "nope.db") == []


def test_posted_and_appended_records_keep_their_order_and_their_ids_match_the_rows(tmp_path):
    log = AuditLog(tmp_path / "audit.db")
    futures = {}
    for i in range(3000):
        rec = AuditRecord(time.time(), f"a{i}", "default", "llm", "sim", "allow", "ok", False, {"i": i, "text": "é\u2028\"'"})
        if i % 7 == 0:
            futures[i] = log.append(rec)
        else:
            log.post(rec)
    log.flush()
    log.close()
    rows = read_audit(tmp_path / "audit.db", limit=10_000)
    assert [r.agent for r in rows] == [f"a{i}" for i in range(3000)]
    assert rows[5].detail == {"i": 5, "text": "é\u2028\"'"} and rows[5].irreversible is False
    by_id = {r.id: r.agent for r in rows}
    assert all(by_id[f.result(5)] == f"a{i}" for i, f in futures.items())


def test_a_batch_that_cannot_be_written_fails_its_waiters_and_the_log_goes_on(tmp_path):
    log = AuditLog(tmp_path / "audit.db")
    bad = log.append(AuditRecord(time.time(), "mallory", "default", "llm", "sim", "maybe", "r", False, {}))  # violates the CHECK
    with pytest.raises(Exception, match="could not be written"):
        bad.result(5)
    assert log.append(_rec("alice")).result(5) >= 1
    log.close()
    assert [r.agent for r in read_audit(tmp_path / "audit.db")] == ["alice"]


def test_a_waiter_that_gave_up_does_not_stop_the_writer(tmp_path):
    log = AuditLog(tmp_path / "audit.db")
    abandoned = [log.append(_rec(f"gone{i}", "deny")) for i in range(50)]
    for f in abandoned:
        f.cancel()  # what asyncio.wrap_future does when the awaiting syscall times out or is cancelled
    assert log.append(_rec("alice", "deny")).result(5) >= 1
    log.close()
    assert read_audit(tmp_path / "audit.db", agent="alice")[0].decision == "deny"
    assert len(read_audit(tmp_path / "audit.db", limit=100)) == 51  # the records of those who left are kept
