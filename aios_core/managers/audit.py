"""The append-only, hash-chained audit log of access decisions, and its reader and verifier for ``aios audit``.

Tamper evidence: triggers that abort UPDATE and DELETE stop a bug in the
kernel, not a process that can write the file (it can drop the triggers). So
every record also carries ``prev``, the hash of the record before it, and
``hash``, SHA-256 over ``prev`` and the record's fields
(:func:`record_hash`). Changing, inserting or deleting a record breaks the
link at the next one, and :func:`verify_audit` (``aios audit --verify``)
names the first broken link. Deleting the newest records leaves a shorter
valid chain; that shows against AUTOINCREMENT's counter (``sqlite_sequence``)
and against a head hash the operator kept (``--verify`` prints it; the kernel
logs it when it closes the log). The file itself lives in the kernel's data
directory, which no code sandbox mounts.

Fields are stored whole: text with a NUL (which SQLite's JSON functions cut
short) is written with bound parameters, and lone surrogates (not encodable)
are stored as ``\\udXXX`` escapes, before hashing, so what is hashed is what
is stored. :func:`printable` escapes control, C1 and bidi characters for a
terminal.

Records live in an SQLite table. One writer thread owns the connection and commits whatever has queued up in one
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
import hashlib
import json
import logging
import queue
import sqlite3
import threading
import unicodedata
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
    detail TEXT NOT NULL DEFAULT '{}',
    prev TEXT,
    hash TEXT
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
    #: SHA-256 chain link (hex): set on records read back from the log
    hash: str | None = None

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
            "hash": self.hash,
        }


#: one batch of records (a JSON array of rows) in one statement, rows in array order
_INSERT_BATCH = """
INSERT INTO audit(time, agent, grp, action, resource, decision, reason, irreversible, detail, prev, hash)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]'),
       json_extract(value, '$[4]'), json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'),
       json_extract(value, '$[8]'), json_extract(value, '$[9]'), json_extract(value, '$[10]')
FROM json_each(?) ORDER BY key
"""
#: one row with bound parameters: for text SQLite's JSON functions would cut at a NUL
_INSERT_ONE = "INSERT INTO audit(time, agent, grp, action, resource, decision, reason, irreversible, detail, prev, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
_COLUMNS = "id, time, agent, grp, action, resource, decision, reason, irreversible, detail, prev, hash"
#: ``prev`` of the first record
GENESIS = "0" * 64

Row = tuple[float, str, str, str, str, str, str, int, str]


def _storable(text: str) -> str:
    """``text`` with lone surrogates (which no encoding can store) as backslash escapes; everything else kept."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _row_of(rec: "AuditRecord") -> Row:
    return (
        round(float(rec.time), 6),
        _storable(str(rec.agent)),
        _storable(str(rec.group)),
        _storable(str(rec.action)),
        _storable(str(rec.resource)),
        _storable(str(rec.decision)),
        _storable(str(rec.reason)),
        int(bool(rec.irreversible)),
        _storable(_detail_json(rec.detail)),
    )


def record_hash(prev: str, row: Row | tuple[Any, ...]) -> str:
    """The chain link of one stored row: SHA-256 of the previous link and the row's nine fields as canonical JSON."""
    # time as fixed-point text: a float parsed back by SQLite may differ from Python's in the last bit
    canonical = json.dumps([prev, f"{float(row[0]):.6f}", *row[1:]], ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


_UNSAFE = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def printable(text: str) -> str:
    """``text`` safe for a terminal: control (C0, DEL, C1), format (bidi marks, zero-width), surrogate,
    private-use and line/paragraph separator characters are shown as ``\\xNN`` / ``\\uNNNN`` escapes,
    so an agent cannot move the cursor, recolour the screen or reorder what an operator reads."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in _UNSAFE:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


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
            columns = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
            for column in ("prev", "hash"):
                if column not in columns:  # a log from before the chain: its old records stay unchained
                    conn.execute(f"ALTER TABLE audit ADD COLUMN {column} TEXT")
            last = conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            raise StorageError(f"cannot open the audit log {self.path}: {exc}") from exc
        self._conn = conn
        #: hash of the newest record: the next record's ``prev`` (only the writer thread changes it after this)
        self.head: str = last[0] if last is not None and last[0] else GENESIS
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
        rows: list[tuple[Any, ...]] = []
        head = self.head
        try:
            for rec, _ in batch:
                row = _row_of(rec)
                link = record_hash(head, row)
                rows.append((*row, head, link))
                head = link
            self._conn.execute("BEGIN IMMEDIATE")
            last = self._insert(rows)
            self._conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - whatever fails, the writer thread must live on and tell the waiters
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            log.error("writing %d audit records failed: %s", len(batch), exc)
            error = StorageError(f"the audit log {self.path} could not be written: {exc}")
            for _, fut in batch:
                _settle(fut, error=error)
            return
        self.head = head
        # one transaction under BEGIN IMMEDIATE by the only writer: the rows got consecutive ids, in batch order
        first = (last or 0) - len(batch) + 1
        for i, (_, fut) in enumerate(batch):
            _settle(fut, result=first + i)

    def _insert(self, rows: list[tuple[Any, ...]]) -> int | None:
        """Insert ``rows`` in order; runs without a NUL go in one statement, a row with a NUL alone with bound parameters."""
        last = None
        run: list[tuple[Any, ...]] = []

        def flush_run() -> None:
            nonlocal last
            if run:
                last = self._conn.execute(_INSERT_BATCH, (json.dumps(run, ensure_ascii=False),)).lastrowid
                run.clear()

        for row in rows:
            if any(isinstance(v, str) and "\x00" in v for v in row):
                flush_run()
                last = self._conn.execute(_INSERT_ONE, row).lastrowid
            else:
                run.append(row)
        flush_run()
        return last

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
        # an anchor outside the file: deleting the newest records leaves a valid but shorter chain
        log.info("audit log %s closed; chain head %s", self.path, self.head)


def _row(row: sqlite3.Row | tuple[Any, ...]) -> AuditRecord:
    id_, t, agent, grp, action, resource, decision, reason, irreversible, detail, _prev, link = row
    try:
        details = json.loads(detail)
    except ValueError:
        details = {"unreadable": detail}
    return AuditRecord(t, agent, grp, action, resource, decision, reason, bool(irreversible), details, id=id_, hash=link)


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_audit` found. ``ok`` is False from the first broken link on."""

    path: str
    records: int
    #: records written before the log was chained (a log older than this version); not covered
    unchained: int
    head: str
    ok: bool
    broken_at: int | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _connect_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def verify_audit(path: str | Path) -> ChainReport:
    """Walk the chain from the oldest record and report the first broken link (``aios audit --verify``).

    A link is broken when a record's ``prev`` is not the previous record's
    hash (a record was removed or inserted), or its hash does not match its
    fields (it was changed). Records missing at the end show as the id
    counter being ahead of the newest record.
    """
    path = Path(path)
    if not path.exists():
        raise StorageError(f"no audit log at {path}: no kernel has run with this data directory")
    conn = _connect_ro(path)
    count = unchained = 0
    prev = GENESIS
    last_id = 0
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
        if not {"prev", "hash"} <= columns:
            raise StorageError(f"the audit log {path} has no hash chain (written by an older version); nothing to verify")
        chained = False
        for row in conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY id"):
            id_, *fields, row_prev, link = row
            count += 1
            last_id = id_
            if link is None and not chained:
                unchained += 1
                continue
            chained = True
            broken = _check_link(id_, prev, tuple(fields), row_prev, link)
            if broken:
                return ChainReport(str(path), count, unchained, prev, False, id_, broken)
            prev = link
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read the audit log {path}: {exc}") from exc
    finally:
        conn.close()
    if seq is not None and seq[0] > last_id:
        return ChainReport(
            str(path), count, unchained, prev, False, last_id + 1,
            f"records {last_id + 1}..{seq[0]} are missing: the log's id counter is at {seq[0]} but its newest record is {last_id}",
        )
    return ChainReport(str(path), count, unchained, prev, True)


def _check_link(id_: int, expected_prev: str, fields: tuple[Any, ...], prev: str | None, link: str | None) -> str | None:
    if link is None or prev is None:
        return f"record {id_} has no chain link (written outside the kernel, or its link was erased)"
    if prev != expected_prev:
        return f"record {id_} does not follow the record before it (a record before it was changed, removed or inserted)"
    if record_hash(prev, fields) != link:
        return f"record {id_} was changed after it was written (its fields do not match its hash)"
    return None


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
    conn = _connect_ro(path)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"cannot read the audit log {path}: {exc}") from exc
    # a log from before the chain (not yet opened by this version) has no prev/hash columns
    selected = _COLUMNS if {"prev", "hash"} <= columns else _COLUMNS.replace("prev, hash", "NULL, NULL")
    sql = (
        f"SELECT {selected} FROM audit"
        f" WHERE {' AND '.join(clauses)} ORDER BY id DESC LIMIT ?"
    )
    params.append(max(0, int(limit)))
    try:
        rows = conn.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read the audit log {path}: {exc}") from exc
    finally:
        conn.close()
    return [_row(r) for r in reversed(rows)]
