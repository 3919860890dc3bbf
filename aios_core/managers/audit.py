"""The append-only audit log of access decisions, and its reader for ``aios audit``.

Records live in an SQLite table whose triggers abort every UPDATE and DELETE,
so the log can only grow, even through a bug elsewhere in the kernel. One
writer thread owns the connection and commits whatever has queued up in one
transaction (group commit), so auditing every decision costs the syscall
path a queue put, not a disk write. Callers that must know a record is on
disk before they go on (denials, irreversible actions) use :meth:`AuditLog.append`
and wait for its future; routine decisions use :meth:`AuditLog.post`, which
allocates nothing to wait on.

A batch is written by one ``INSERT ... SELECT FROM json_each(?)`` statement,
not one statement per row: the sqlite3 module releases the GIL around every
statement, and a writer thread that must win the GIL back from a busy kernel
loop once per row falls behind it by orders of magnitude (records then pile
up in memory).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aios_core.errors import StorageError

log = logging.getLogger(__name__)

Decision = Literal["allow", "deny"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    agent TEXT NOT NULL,
    grp TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('allow', 'deny')),
    reason TEXT NOT NULL,
    irreversible INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_agent ON audit(agent, id);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


@dataclass(frozen=True)
class AuditRecord:
    time: float
    agent: str
    group: str
    action: str
    resource: str
    decision: Decision
    reason: str
    irreversible: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "agent": self.agent,
            "group": self.group,
            "action": self.action,
            "resource": self.resource,
            "decision": self.decision,
            "reason": self.reason,
            "irreversible": self.irreversible,
            "detail": self.detail,
        }


#: one batch of records (a JSON array of rows) in one statement, rows in array order
_INSERT_BATCH = """
INSERT INTO audit(time, agent, grp, action, resource, decision, reason, irreversible, detail)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]'),
       json_extract(value, '$[4]'), json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'),
       json_extract(value, '$[8]')
FROM json_each(?) ORDER BY key
"""


def _detail_json(detail: dict[str, Any]) -> str:
    text = json.dumps(detail, default=repr, ensure_ascii=False)
    return text if len(text) <= 4000 else json.dumps({"truncated": text[:4000]})


def _settle(future: concurrent.futures.Future[int] | None, *, result: int = 0, error: BaseException | None = None) -> None:
    """Resolve a waiter's future unless it is gone: a caller that timed out or was cancelled cancels it, and
    resolving a cancelled future raises, which must never take the writer thread down."""
    if future is None or not future.set_running_or_notify_cancel():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class AuditLog:
    """Appends :class:`AuditRecord` rows from any thread; one background thread writes them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(f"cannot open the audit log {self.path}: {exc}") from exc
        self._conn = conn
        # items: a record with its future, a barrier Event set once everything before it is written, or None (stop)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="aios-audit", daemon=True)
        self._thread.start()

    def append(self, record: AuditRecord) -> concurrent.futures.Future[int]:
        """Queue a record; the future resolves to its row id once it is committed."""
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        if self._closed:
            future.set_exception(StorageError("the audit log is closed; the decision could not be recorded"))
            return future
        self._queue.put((record, future))
        return future

    def post(self, record: AuditRecord) -> None:
        """Queue a record nobody waits for; it is committed with the next group commit (a failure is logged)."""
        if self._closed:
            log.error("the audit log is closed; not recorded: %s %s %s %s", record.agent, record.action, record.resource, record.decision)
            return
        self._queue.put((record, None))

    def _run(self) -> None:
        stop = False
        while not stop:
            batch: list[tuple[AuditRecord, concurrent.futures.Future[int] | None]] = []
            barriers: list[threading.Event] = []
            item = self._queue.get()
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    barriers.append(item)
                else:
                    batch.append(item)
                if stop or len(batch) >= 4096:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            for barrier in barriers:
                barrier.set()
        self._conn.close()

    def _write(self, batch: list[tuple[AuditRecord, concurrent.futures.Future[int] | None]]) -> None:
        rows = json.dumps(
            [
                [rec.time, rec.agent, rec.group, rec.action, rec.resource, rec.decision, rec.reason, int(rec.irreversible), _detail_json(rec.detail)]
                for rec, _ in batch
            ],
            ensure_ascii=False,
        )
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            cur = self._conn.execute(_INSERT_BATCH, (rows,))
            last = cur.lastrowid
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            log.error("writing %d audit records failed: %s", len(batch), exc)
            error = StorageError(f"the audit log {self.path} could not be written: {exc}")
            for _, fut in batch:
                _settle(fut, error=error)
            return
        # one statement under BEGIN IMMEDIATE by the only writer: the rows got consecutive ids, in batch order
        first = (last or 0) - len(batch) + 1
        for i, (_, fut) in enumerate(batch):
            _settle(fut, result=first + i)

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything queued so far is committed."""
        if self._closed:
            return
        barrier = threading.Event()
        self._queue.put(barrier)
        barrier.wait(timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=10)


def _row(row: sqlite3.Row | tuple[Any, ...]) -> AuditRecord:
    id_, t, agent, grp, action, resource, decision, reason, irreversible, detail = row
    return AuditRecord(t, agent, grp, action, resource, decision, reason, bool(irreversible), json.loads(detail), id=id_)


def read_audit(
    path: str | Path,
    agent: str | None = None,
    limit: int = 100,
    *,
    decision: Decision | None = None,
    action: str | None = None,
    since: float | None = None,
) -> list[AuditRecord]:
    """The newest ``limit`` records (oldest first), optionally of one agent / decision / action prefix / since a time.

    Opens the log read-only, so ``aios audit`` can run beside a live kernel.
    """
    path = Path(path)
    if not path.exists():
        return []
    clauses = ["1"]
    params: list[Any] = []
    if agent is not None:
        clauses.append("agent = ?")
        params.append(agent)
    if decision is not None:
        clauses.append("decision = ?")
        params.append(decision)
    if action is not None:
        clauses.append("substr(action, 1, ?) = ?")
        params += [len(action), action]
    if since is not None:
        clauses.append("time >= ?")
        params.append(since)
    sql = (
        "SELECT id, time, agent, grp, action, resource, decision, reason, irreversible, detail FROM audit"
        f" WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?"
    )
    params.append(max(0, int(limit)))
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read the audit log {path}: {exc}") from exc
    finally:
        conn.close()
    return [_row(r) for r in reversed(rows)]
