"""SQLite off the event loop: one writer thread, a few reader threads, one connection per thread.

WAL mode lets readers run while the writer commits, and a single writer
thread serialises writes without SQLITE_BUSY retries. Work is submitted as a
function of a connection and awaited; the loop never blocks on the database.
Writes run inside ``BEGIN IMMEDIATE ... COMMIT``; any exception rolls the
transaction back, so a failed write leaves nothing half-done.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

T = TypeVar("T")

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class SQLitePool:
    def __init__(
        self,
        path: str | Path,
        *,
        readers: int = 4,
        synchronous: Synchronous = "FULL",
        max_page_count: int | None = None,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.max_page_count = max_page_count
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aios-sqlite-w")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="aios-sqlite-r")
        self._closed = False

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout_ms / 1000)
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            if self.max_page_count is not None:
                conn.execute(f"PRAGMA max_page_count={int(self.max_page_count)}")
            self._local.conn = conn
            with self._conn_lock:
                self._connections.append(conn)
        return conn

    def _in_transaction(self, fn: Callable[[sqlite3.Connection], T], after: Callable[[T], None] | None = None) -> T:
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLITE_FULL and friends may have rolled back already
                conn.execute("ROLLBACK")
            raise
        if after is not None:
            after(result)  # still on the writer thread: follow-up state changes stay in commit order
        return result

    def write_sync(self, fn: Callable[[sqlite3.Connection], T], after: Callable[[T], None] | None = None) -> T:
        """Run ``fn`` in one write transaction on the writer thread, waiting from a non-loop thread."""
        self._check_open()
        return self._writer.submit(self._in_transaction, fn, after).result()

    async def write(self, fn: Callable[[sqlite3.Connection], T], after: Callable[[T], None] | None = None) -> T:
        """Run ``fn`` in one write transaction; ``after(result)`` runs once it is committed, in commit order."""
        self._check_open()
        return await asyncio.wrap_future(self._writer.submit(self._in_transaction, fn, after))

    def setup_sync(self, script: str) -> None:
        """Run a schema script (its own transactions) on the writer thread."""
        self._writer.submit(lambda: self.connection().executescript(script)).result()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        return await asyncio.wrap_future(self._readers.submit(lambda: fn(self.connection())))

    def _check_open(self) -> None:
        if self._closed:
            from aios_core.errors import StorageError

            raise StorageError(f"the database {self.path} is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._conn_lock:
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
