"""The storage manager: agents' files on SQLite, every version kept, searchable by meaning.

Each agent (``owner``) has its own space of virtual paths. A write never
overwrites: it adds a version; delete adds a tombstone; rollback adds a copy
of an older version. So any state can be recovered until history is
explicitly purged (an irreversible action that needs confirmation). Versions
are immutable (a trigger refuses UPDATE on them).

Durability: WAL mode with ``synchronous=FULL`` by default; a writer killed at
any point loses only the transaction it had not committed. A size cap
(``max_size_mb``, SQLite's ``max_page_count``) turns "disk full" into a clear
:class:`StorageError` with everything committed before it intact; a real
ENOSPC surfaces the same way.

Text versions are embedded (see :mod:`embeddings`) in the same transaction
that stores them, and a faiss index per owner (see :mod:`vector_index`) is
rebuilt from those vectors when the store opens.

Every public operation checks access itself (``storage.read`` /
``storage.write`` on ``owner/path``), so calling the manager directly is as
safe as going through the kernel. Each operation has one name, on two faces:

=============================  ===================================  ===========================
operation                      an agent's call (access-checked)     for an owner (``.store``)
=============================  ===================================  ===========================
add a version                  ``write(agent, path, data)``         ``store.write(owner, ...)``
read (a version, at a time)    ``read``                             ``store.read``
list files under a prefix      ``list``                             ``store.list``
delete (a tombstone)           ``delete``                           ``store.delete``
version history                ``versions``                         ``store.versions``
roll back to a version / time  ``rollback``                         ``store.rollback``
diff two versions              ``diff``                             ``store.diff``
search by meaning              ``search``                           ``store.search``
drop a file and its history    ``purge`` (irreversible: confirmed)  ``store.purge``
=============================  ===================================  ===========================

``store`` is for other managers acting for an owner whose access they
checked (memory eviction); its paths must already be clean. A storage backend
changes how an operation is done by overriding the manager's matching
``_owner_<operation>`` method, where both faces end. The syscall wire format
names the same operations (``op``) and is unchanged.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import logging
import math
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aios_core.errors import InvalidSyscallError, StorageError
from aios_core.managers.sandbox_paths import SandboxPathError, is_under, normalize_path
from aios_core.managers.sqlite_pool import SQLitePool, Synchronous

if TYPE_CHECKING:
    from aios_core.managers.access import AccessManager, AgentLike
    from aios_core.managers.embeddings import Embedder
    from aios_core.managers.vector_index import VectorIndex
    from aios_core.syscalls import StorageSyscall

log = logging.getLogger(__name__)

#: paths under this prefix belong to the kernel (evicted memory); agents may read but not write them
RESERVED_PREFIX = ".aios"
PAGE_SIZE = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    path TEXT NOT NULL,
    head INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    UNIQUE (owner, path)
);
CREATE TABLE IF NOT EXISTS versions (
    file_id INTEGER NOT NULL REFERENCES files(id),
    version INTEGER NOT NULL,
    created REAL NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('write', 'delete', 'rollback')),
    size INTEGER NOT NULL,
    sha256 TEXT,
    is_text INTEGER NOT NULL,
    data BLOB,
    source_version INTEGER,
    PRIMARY KEY (file_id, version)
);
CREATE INDEX IF NOT EXISTS versions_time ON versions(file_id, created);
CREATE TABLE IF NOT EXISTS vectors (
    file_id INTEGER PRIMARY KEY REFERENCES files(id),
    model TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS versions_immutable BEFORE UPDATE ON versions
BEGIN SELECT RAISE(ABORT, 'stored versions are immutable'); END;
"""


class StorageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str = Field(default="sqlite", description="storage manager to use: the built-in 'sqlite' or one a plugin registers (aios plugins)")
    options: dict[str, Any] = Field(default_factory=dict, description="settings of a plugin backend (the built-in one has none)")
    file: str = Field(default="storage.db", description="database file, relative to the kernel's data directory (or absolute)")
    synchronous: Synchronous = Field(default="FULL", description="SQLite synchronous mode; FULL survives power loss, NORMAL only crashes")
    max_size_mb: float | None = Field(default=None, gt=0, description="cap on the database size; writes past it fail with StorageError")
    max_file_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="largest single version accepted")
    readers: int = Field(default=4, ge=1, le=64, description="reader threads (WAL lets them run beside the writer)")
    vector_search: bool = Field(default=True, description="embed text versions and offer search by similarity")


# --------------------------------------------------------------------------- results


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VersionInfo(_Result):
    owner: str
    path: str
    version: int
    created: float
    kind: Literal["write", "delete", "rollback"]
    size: int
    sha256: str | None = None
    #: for rollbacks: the version that was copied
    source_version: int | None = None
    #: a write whose content equals the current version adds no version
    unchanged: bool = False


class FileInfo(_Result):
    owner: str
    path: str
    version: int
    created: float
    size: int
    is_text: bool


class FileContent(_Result):
    owner: str
    path: str
    version: int
    created: float
    data: str | bytes
    is_text: bool


class DiffResult(_Result):
    owner: str
    path: str
    from_version: int
    to_version: int
    binary: bool
    diff: str


class SearchHit(_Result):
    owner: str
    path: str
    version: int
    score: float
    snippet: str


# --------------------------------------------------------------------------- errors


def _storage_error(exc: sqlite3.Error, what: str) -> StorageError:
    code = getattr(exc, "sqlite_errorcode", None)
    text = str(exc)
    if code == sqlite3.SQLITE_FULL or "full" in text:
        return StorageError(
            f"{what} failed: the storage is full ({text}); free space or raise storage.max_size_mb. Nothing committed before was lost.",
            reason="full",
        )
    return StorageError(f"{what} failed: {text}", reason="sqlite")


def _encode(data: str | bytes) -> tuple[bytes, bool]:
    if isinstance(data, str):
        return data.encode("utf-8"), True
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), False
    raise InvalidSyscallError(f"file data must be str or bytes, got {type(data).__name__}")


def _decode(blob: bytes | None, is_text: bool) -> str | bytes:
    blob = blob or b""
    return blob.decode("utf-8") if is_text else blob


class OwnerStore:
    """The storage operations for an owner whose access the caller checked (paths already clean): ``storage.store``."""

    def __init__(self, manager: "StorageManager") -> None:
        self._m = manager

    async def write(self, owner: str, path: str, data: str | bytes, *, embed_text: str | None = None) -> VersionInfo:
        """Add a version of ``owner/path``; ``embed_text`` replaces the text that is embedded for search."""
        return await self._m._owner_write(owner, path, data, embed_text=embed_text)

    async def read(self, owner: str, path: str, *, version: int | None = None, timestamp: float | None = None) -> FileContent:
        return await self._m._owner_read(owner, path, version=version, timestamp=timestamp)

    async def list(self, owner: str, prefix: str = "") -> list[FileInfo]:
        return await self._m._owner_list(owner, prefix)

    async def delete(self, owner: str, path: str) -> VersionInfo:
        return await self._m._owner_delete(owner, path)

    async def versions(self, owner: str, path: str) -> list[VersionInfo]:
        return await self._m._owner_versions(owner, path)

    async def rollback(self, owner: str, path: str, *, version: int | None = None, timestamp: float | None = None) -> VersionInfo:
        return await self._m._owner_rollback(owner, path, version=version, timestamp=timestamp)

    async def diff(self, owner: str, path: str, version: int, other_version: int | None = None) -> DiffResult:
        return await self._m._owner_diff(owner, path, version, other_version)

    async def search(self, owner: str, query: str, *, k: int = 5, prefix: str = "") -> list[SearchHit]:
        return await self._m._owner_search(owner, query, k=k, prefix=prefix)

    async def purge(self, owner: str, path: str) -> int:
        return await self._m._owner_purge(owner, path)


class StorageManager:
    def __init__(
        self,
        config: StorageConfig | None = None,
        *,
        data_dir: str | Path,
        access: "AccessManager",
        embedder: "Embedder | None" = None,
    ) -> None:
        self.config = config or StorageConfig()
        path = Path(self.config.file)
        self.path = path if path.is_absolute() else Path(data_dir) / path
        self.access = access
        self.embedder = embedder if self.config.vector_search else None
        self.index: VectorIndex | None = None
        self.db: SQLitePool | None = None
        self._open_lock = asyncio.Lock()
        self.stats = {"writes": 0, "reads": 0, "searches": 0, "full_errors": 0}
        #: the same operations for an owner whose access the caller checked (other managers)
        self.store = OwnerStore(self)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Open (and, the first time, create) the database and rebuild the vector index; idempotent."""
        if self.db is not None:
            return
        async with self._open_lock:
            if self.db is not None:
                return
            await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        max_pages = None
        if self.config.max_size_mb is not None:
            max_pages = max(16, math.floor(self.config.max_size_mb * 1024 * 1024 / PAGE_SIZE))
        db = SQLitePool(self.path, readers=self.config.readers, synchronous=self.config.synchronous, max_page_count=max_pages)
        try:
            db.setup_sync(_SCHEMA)
            if self.embedder is not None:
                from aios_core.managers.vector_index import VectorIndex

                self.index = VectorIndex(self.embedder.dim)
                self._rebuild_index(db)
        except sqlite3.Error as exc:
            db.close()
            raise _storage_error(exc, f"opening storage {self.path}") from exc
        except BaseException:
            db.close()
            raise
        self.db = db

    def _rebuild_index(self, db: SQLitePool) -> None:
        import numpy as np

        assert self.embedder is not None and self.index is not None
        conn = db.connection()  # the opening thread's own connection, used only here
        rows = conn.execute(
            "SELECT f.id, f.owner, v.model, v.vector FROM files f JOIN vectors v ON v.file_id = f.id WHERE f.deleted = 0"
        ).fetchall()
        by_owner: dict[str, tuple[list[int], list[Any]]] = {}
        for file_id, owner, model, blob in rows:
            if model != self.embedder.name:
                continue
            ids, vecs = by_owner.setdefault(owner, ([], []))
            ids.append(file_id)
            vecs.append(np.frombuffer(blob, dtype=np.float32))
        for owner, (ids, vecs) in by_owner.items():
            self.index.upsert(owner, ids, np.stack(vecs))
        # text files without a vector of this embedder (new embedder, or written with search off)
        stale = conn.execute(
            "SELECT f.id, f.owner, ver.data FROM files f JOIN versions ver ON ver.file_id = f.id AND ver.version = f.head"
            " LEFT JOIN vectors v ON v.file_id = f.id"
            " WHERE f.deleted = 0 AND ver.is_text = 1 AND (v.model IS NULL OR v.model != ?)",
            (self.embedder.name,),
        ).fetchall()
        if stale:
            log.info("embedding %d stored files with %s", len(stale), self.embedder.name)
        for start in range(0, len(stale), 256):
            chunk = stale[start : start + 256]
            vectors = self.embedder.embed([_decode(r[2], True) for r in chunk])  # type: ignore[list-item]

            def store(c: sqlite3.Connection, chunk: list[Any] = chunk, vectors: Any = vectors) -> None:
                c.executemany(
                    "INSERT OR REPLACE INTO vectors(file_id, model, vector) VALUES (?,?,?)",
                    [(r[0], self.embedder.name, vectors[i].tobytes()) for i, r in enumerate(chunk)],  # type: ignore[union-attr]
                )

            db.write_sync(store)
            for i, r in enumerate(chunk):
                self.index.upsert(r[1], [r[0]], vectors[i : i + 1])

    async def aclose(self) -> None:
        if self.db is not None:
            db, self.db = self.db, None
            await asyncio.to_thread(db.close)

    async def _db(self) -> SQLitePool:
        if self.db is None:
            await self.open()
        assert self.db is not None
        return self.db

    # ------------------------------------------------------------------ syscall entry

    async def handle(self, syscall: "StorageSyscall", agent: "AgentLike") -> Any:
        sc = syscall
        owner = sc.owner or agent.name
        op = sc.op
        if op == "write":
            if sc.path is None or sc.data is None:
                raise InvalidSyscallError("storage write needs path and data")
            return await self.write(agent, sc.path, sc.data, owner=owner)
        if op == "read":
            return await self.read(agent, _need_path(sc.path, op), owner=owner, version=sc.version, timestamp=sc.timestamp)
        if op == "list":
            return await self.list(agent, sc.path or "", owner=owner)
        if op == "delete":
            return await self.delete(agent, _need_path(sc.path, op), owner=owner)
        if op == "versions":
            return await self.versions(agent, _need_path(sc.path, op), owner=owner)
        if op == "rollback":
            return await self.rollback(agent, _need_path(sc.path, op), version=sc.version, timestamp=sc.timestamp, owner=owner)
        if op == "diff":
            if sc.version is None:
                raise InvalidSyscallError("storage diff needs version (and optionally other_version, default: the current one)")
            return await self.diff(agent, _need_path(sc.path, op), sc.version, sc.other_version, owner=owner)
        if op == "search":
            if not sc.query:
                raise InvalidSyscallError("storage search needs a query")
            return await self.search(agent, sc.query, k=sc.k, prefix=sc.path or "", owner=owner)
        raise InvalidSyscallError(f"unknown storage op {op!r}")

    # ------------------------------------------------------------------ checked API (agents)

    async def _checked_path(self, agent: "AgentLike", action: str, path: str, owner: str, *, allow_empty: bool = False) -> str:
        try:
            clean = normalize_path(path, allow_empty=allow_empty)
        except SandboxPathError as exc:
            await self.access.record_denial(agent, action, f"{owner}/{path}", exc.message)
            raise
        if is_under(clean, RESERVED_PREFIX):
            if action == "storage.write":
                reason = f"paths under {RESERVED_PREFIX}/ belong to the kernel (evicted memory); write elsewhere"
                await self.access.record_denial(agent, action, f"{owner}/{clean}", reason)
                raise SandboxPathError(f"{agent.name}: cannot write {clean!r}: {reason}", path=clean)
            if owner != agent.name:
                # another agent's evicted memory: reading it through storage needs the right to read that memory
                await self.access.authorize(agent, "memory.read", owner, detail={"via": "storage", "path": clean})
        return clean

    async def _authorize(self, agent: "AgentLike", action: str, owner: str, clean: str, **options: Any) -> None:
        """Ask the access manager about ``owner``'s path ``clean`` (owner and path kept apart: names may contain '/')."""
        await self.access.authorize(agent, action, f"{owner}/{clean}", owner=owner, **options)

    async def write(self, agent: "AgentLike", path: str, data: str | bytes, *, owner: str | None = None) -> VersionInfo:
        owner = owner or agent.name
        clean = await self._checked_path(agent, "storage.write", path, owner)
        await self._authorize(agent, "storage.write", owner, clean, detail={"op": "write"})
        return await self._owner_write(owner, clean, data)

    async def read(
        self, agent: "AgentLike", path: str, *, owner: str | None = None, version: int | None = None, timestamp: float | None = None
    ) -> FileContent:
        owner = owner or agent.name
        clean = await self._checked_path(agent, "storage.read", path, owner)
        await self._authorize(agent, "storage.read", owner, clean, detail={"op": "read"})
        return await self._owner_read(owner, clean, version=version, timestamp=timestamp)

    async def list(self, agent: "AgentLike", prefix: str = "", *, owner: str | None = None) -> list[FileInfo]:
        owner = owner or agent.name
        clean = await self._checked_path(agent, "storage.read", prefix, owner, allow_empty=True)
        await self._authorize(agent, "storage.read", owner, clean, detail={"op": "list"})
        return await self._owner_list(owner, clean)

    async def delete(self, agent: "AgentLike", path: str, *, owner: str | None = None) -> VersionInfo:
        """Delete by adding a tombstone: reversible with :meth:`rollback`, so no confirmation is needed."""
        owner = owner or agent.name
        clean = await self._checked_path(agent, "storage.write", path, owner)
        await self._authorize(agent, "storage.write", owner, clean, detail={"op": "delete"})
        return await self._owner_delete(owner, clean)

    async def versions(self, agent: "AgentLike", path: str, *, owner: str | None = None) -> list[VersionInfo]:
        owner = owner or agent.name
        clean = await self._checked_path(agent, "storage.read", path, owner)
        await self._authorize(agent, "storage.read", owner, clean, detail={"op": "versions"})
        return await self._owner_versions(owner, clean)

    async def rollback(
        self, agent: "AgentLike", path: str, *, version: int | None = None, timestamp: float | None = None, owner: str | None = None
    ) -> VersionInfo:
        owner = owner or agent.name
        clean = await self._checked_path(agent, "storage.write", path, owner)
        await self._authorize(agent, "storage.write", owner, clean, detail={"op": "rollback", "version": version, "timestamp": timestamp})
        return await self._owner_rollback(owner, clean, version=version, timestamp=timestamp)

    async def diff(self, agent: "AgentLike", path: str, version: int, other_version: int | None = None, *, owner: str | None = None) -> DiffResult:
        owner = owner or agent.name
        clean = await self._checked_path(agent, "storage.read", path, owner)
        await self._authorize(agent, "storage.read", owner, clean, detail={"op": "diff"})
        return await self._owner_diff(owner, clean, version, other_version)

    async def search(self, agent: "AgentLike", query: str, *, k: int = 5, prefix: str = "", owner: str | None = None) -> list[SearchHit]:
        owner = owner or agent.name
        clean = await self._checked_path(agent, "storage.read", prefix, owner, allow_empty=True)
        await self._authorize(agent, "storage.read", owner, clean, detail={"op": "search"})
        return await self._owner_search(owner, query, k=k, prefix=clean)

    async def purge(self, agent: "AgentLike", path: str, *, owner: str | None = None) -> int:
        """Drop a file and its whole history. Irreversible: the access manager asks for confirmation."""
        owner = owner or agent.name
        clean = await self._checked_path(agent, "storage.write", path, owner)
        await self._authorize(agent, "storage.write", owner, clean, irreversible=True, detail={"op": "purge"})
        return await self._owner_purge(owner, clean)

    # ------------------------------------------------------------------ unchecked core (paths already clean)

    async def _owner_write(self, owner: str, path: str, data: str | bytes, *, embed_text: str | None = None) -> VersionInfo:
        """Add a version of ``owner/path``; ``embed_text`` replaces the text that is embedded for search."""
        blob, is_text = _encode(data)
        if len(blob) > self.config.max_file_bytes:
            raise StorageError(
                f"{path}: {len(blob)} bytes is more than storage.max_file_bytes ({self.config.max_file_bytes}); split the file",
                reason="too_large",
            )
        db = await self._db()
        digest = hashlib.sha256(blob).hexdigest()
        vector = None
        if is_text and self.embedder is not None:
            text = embed_text if embed_text is not None else blob.decode("utf-8")
            vector = (await asyncio.to_thread(self.embedder.embed, [text]))[0]
        model = self.embedder.name if self.embedder is not None else ""
        now = time.time()

        def txn(conn: sqlite3.Connection) -> tuple[VersionInfo, int]:
            row = conn.execute("SELECT id, head, deleted FROM files WHERE owner = ? AND path = ?", (owner, path)).fetchone()
            if row is None:
                file_id = conn.execute("INSERT INTO files(owner, path, head) VALUES (?,?,0)", (owner, path)).lastrowid
                head = 0
            else:
                file_id, head, deleted = row
                if not deleted:
                    cur = conn.execute("SELECT sha256, created, kind, size FROM versions WHERE file_id = ? AND version = ?", (file_id, head)).fetchone()
                    if cur is not None and cur[0] == digest:
                        return VersionInfo(owner=owner, path=path, version=head, created=cur[1], kind=cur[2], size=cur[3], sha256=digest, unchanged=True), file_id
            version = head + 1
            conn.execute(
                "INSERT INTO versions(file_id, version, created, kind, size, sha256, is_text, data) VALUES (?,?,?,?,?,?,?,?)",
                (file_id, version, now, "write", len(blob), digest, int(is_text), blob),
            )
            conn.execute("UPDATE files SET head = ?, deleted = 0 WHERE id = ?", (version, file_id))
            if vector is not None:
                conn.execute("INSERT OR REPLACE INTO vectors(file_id, model, vector) VALUES (?,?,?)", (file_id, model, vector.tobytes()))
            else:
                conn.execute("DELETE FROM vectors WHERE file_id = ?", (file_id,))
            return VersionInfo(owner=owner, path=path, version=version, created=now, kind="write", size=len(blob), sha256=digest), file_id

        def index(result: tuple[VersionInfo, int]) -> None:
            info, file_id = result
            if self.index is not None and not info.unchanged:
                if vector is not None:
                    self.index.upsert(owner, [file_id], vector)
                else:
                    self.index.remove(owner, [file_id])

        info, _ = await self._write(db, txn, index, f"writing {owner}/{path}")
        self.stats["writes"] += 1
        return info

    async def _write(self, db: SQLitePool, txn: Any, after: Any, what: str) -> Any:
        try:
            return await db.write(txn, after)
        except sqlite3.Error as exc:
            error = _storage_error(exc, what)
            if error.details.get("reason") == "full":
                self.stats["full_errors"] += 1
            raise error from exc

    async def _read(self, fn: Any, what: str) -> Any:
        db = await self._db()
        try:
            return await db.read(fn)
        except sqlite3.Error as exc:
            raise _storage_error(exc, what) from exc

    @staticmethod
    def _file_row(conn: sqlite3.Connection, owner: str, path: str) -> tuple[int, int, int]:
        row = conn.execute("SELECT id, head, deleted FROM files WHERE owner = ? AND path = ?", (owner, path)).fetchone()
        if row is None:
            raise StorageError(f"no file {path!r} in the storage of {owner!r}", reason="not_found", path=path)
        return row

    @staticmethod
    def _version_at(conn: sqlite3.Connection, file_id: int, path: str, version: int | None, timestamp: float | None) -> tuple[Any, ...]:
        cols = "version, created, kind, size, sha256, is_text, data, source_version"
        if version is not None:
            row = conn.execute(f"SELECT {cols} FROM versions WHERE file_id = ? AND version = ?", (file_id, version)).fetchone()
            if row is None:
                raise StorageError(f"{path!r} has no version {version}", reason="no_version", path=path)
            return row
        if timestamp is not None:
            row = conn.execute(
                f"SELECT {cols} FROM versions WHERE file_id = ? AND created <= ? ORDER BY version DESC LIMIT 1", (file_id, timestamp)
            ).fetchone()
            if row is None:
                raise StorageError(f"{path!r} did not exist yet at time {timestamp}", reason="no_version", path=path)
            return row
        return conn.execute(f"SELECT {cols} FROM versions WHERE file_id = ? ORDER BY version DESC LIMIT 1", (file_id,)).fetchone()

    async def _owner_read(self, owner: str, path: str, *, version: int | None = None, timestamp: float | None = None) -> FileContent:
        def read(conn: sqlite3.Connection) -> FileContent:
            file_id, head, deleted = self._file_row(conn, owner, path)
            if deleted and version is None and timestamp is None:
                raise StorageError(f"{path!r} was deleted (version {head}); read an older version or roll back", reason="deleted", path=path)
            ver, created, kind, _size, _sha, is_text, data, _src = self._version_at(conn, file_id, path, version, timestamp)
            if kind == "delete":
                raise StorageError(f"version {ver} of {path!r} is a deletion; read an older version", reason="deleted", path=path)
            return FileContent(owner=owner, path=path, version=ver, created=created, data=_decode(data, bool(is_text)), is_text=bool(is_text))

        result = await self._read(read, f"reading {owner}/{path}")
        self.stats["reads"] += 1
        return result

    async def _owner_list(self, owner: str, prefix: str = "") -> list[FileInfo]:
        def read(conn: sqlite3.Connection) -> list[FileInfo]:
            rows = conn.execute(
                "SELECT f.path, f.head, v.created, v.size, v.is_text FROM files f JOIN versions v ON v.file_id = f.id AND v.version = f.head"
                " WHERE f.owner = ? AND f.deleted = 0 ORDER BY f.path",
                (owner,),
            ).fetchall()
            hide_reserved = not is_under(prefix, RESERVED_PREFIX) if prefix else True
            return [
                FileInfo(owner=owner, path=p, version=h, created=c, size=s, is_text=bool(t))
                for p, h, c, s, t in rows
                if is_under(p, prefix) and not (hide_reserved and is_under(p, RESERVED_PREFIX))
            ]

        return await self._read(read, f"listing {owner}/{prefix}")

    async def _owner_delete(self, owner: str, path: str) -> VersionInfo:
        db = await self._db()
        now = time.time()

        def txn(conn: sqlite3.Connection) -> tuple[VersionInfo, int]:
            file_id, head, deleted = self._file_row(conn, owner, path)
            if deleted:
                raise StorageError(f"{path!r} is already deleted", reason="deleted", path=path)
            conn.execute(
                "INSERT INTO versions(file_id, version, created, kind, size, sha256, is_text, data) VALUES (?,?,?,?,?,?,?,NULL)",
                (file_id, head + 1, now, "delete", 0, None, 0),
            )
            conn.execute("UPDATE files SET head = ?, deleted = 1 WHERE id = ?", (head + 1, file_id))
            conn.execute("DELETE FROM vectors WHERE file_id = ?", (file_id,))
            return VersionInfo(owner=owner, path=path, version=head + 1, created=now, kind="delete", size=0), file_id

        def unindex(result: tuple[VersionInfo, int]) -> None:
            if self.index is not None:
                self.index.remove(owner, [result[1]])

        info, _ = await self._write(db, txn, unindex, f"deleting {owner}/{path}")
        return info

    async def _owner_versions(self, owner: str, path: str) -> list[VersionInfo]:
        def read(conn: sqlite3.Connection) -> list[VersionInfo]:
            file_id, _, _ = self._file_row(conn, owner, path)
            rows = conn.execute(
                "SELECT version, created, kind, size, sha256, source_version FROM versions WHERE file_id = ? ORDER BY version", (file_id,)
            ).fetchall()
            return [
                VersionInfo(owner=owner, path=path, version=v, created=c, kind=k, size=s, sha256=h, source_version=src) for v, c, k, s, h, src in rows
            ]

        return await self._read(read, f"listing versions of {owner}/{path}")

    async def _owner_rollback(self, owner: str, path: str, *, version: int | None = None, timestamp: float | None = None) -> VersionInfo:
        """Make an older version current again by copying it as a new version (history only grows)."""
        if version is None and timestamp is None:
            raise InvalidSyscallError("rollback needs a version or a timestamp")
        db = await self._db()
        now = time.time()
        model = self.embedder.name if self.embedder is not None else ""

        def txn(conn: sqlite3.Connection) -> tuple[VersionInfo, int, bytes | None]:
            file_id, head, _ = self._file_row(conn, owner, path)
            src, _created, kind, size, sha, is_text, data, _ = self._version_at(conn, file_id, path, version, timestamp)
            if kind == "delete":
                raise StorageError(f"version {src} of {path!r} is a deletion; use delete instead of rolling back to it", reason="deleted")
            conn.execute(
                "INSERT INTO versions(file_id, version, created, kind, size, sha256, is_text, data, source_version) VALUES (?,?,?,?,?,?,?,?,?)",
                (file_id, head + 1, now, "rollback", size, sha, is_text, data, src),
            )
            conn.execute("UPDATE files SET head = ?, deleted = 0 WHERE id = ?", (head + 1, file_id))
            old_vec = None
            if is_text and self.embedder is not None:
                # the vector of the restored text: recomputed here (short, and keeps vectors in step with heads)
                old_vec = self.embedder.embed([_decode(data, True)])[0]  # type: ignore[list-item]
                conn.execute("INSERT OR REPLACE INTO vectors(file_id, model, vector) VALUES (?,?,?)", (file_id, model, old_vec.tobytes()))
            else:
                conn.execute("DELETE FROM vectors WHERE file_id = ?", (file_id,))
            info = VersionInfo(owner=owner, path=path, version=head + 1, created=now, kind="rollback", size=size, sha256=sha, source_version=src)
            return info, file_id, old_vec

        def index(result: Any) -> None:
            _, file_id, vec = result
            if self.index is not None:
                if vec is not None:
                    self.index.upsert(owner, [file_id], vec)
                else:
                    self.index.remove(owner, [file_id])

        info, _, _ = await self._write(db, txn, index, f"rolling back {owner}/{path}")
        return info

    async def _owner_diff(self, owner: str, path: str, version: int, other_version: int | None = None) -> DiffResult:
        def read(conn: sqlite3.Connection) -> DiffResult:
            file_id, head, _ = self._file_row(conn, owner, path)
            a = self._version_at(conn, file_id, path, version, None)
            b = self._version_at(conn, file_id, path, other_version if other_version is not None else head, None)
            a_text, b_text = bool(a[5]) or a[2] == "delete", bool(b[5]) or b[2] == "delete"
            if not (a_text and b_text):
                same = a[4] == b[4]
                summary = "identical" if same else f"binary versions differ: {a[3]} bytes (sha256 {a[4]}) vs {b[3]} bytes (sha256 {b[4]})"
                return DiffResult(owner=owner, path=path, from_version=a[0], to_version=b[0], binary=True, diff=summary)
            old, new = _decode(a[6], True), _decode(b[6], True)
            lines = difflib.unified_diff(
                str(old).splitlines(keepends=True), str(new).splitlines(keepends=True), f"{path}@{a[0]}", f"{path}@{b[0]}"
            )
            return DiffResult(owner=owner, path=path, from_version=a[0], to_version=b[0], binary=False, diff="".join(lines))

        return await self._read(read, f"diffing {owner}/{path}")

    async def _owner_search(self, owner: str, query: str, *, k: int = 5, prefix: str = "") -> list[SearchHit]:
        if self.embedder is None or self.index is None:
            await self._db()
            if self.embedder is None or self.index is None:
                raise StorageError("vector search is off (storage.vector_search = false)", reason="no_search")
        vector = (await asyncio.to_thread(self.embedder.embed, [query]))[0]
        include_reserved = bool(prefix) and is_under(prefix, RESERVED_PREFIX)

        def candidates(conn: sqlite3.Connection) -> list[int] | None:
            if not prefix and include_reserved:
                return None
            rows = conn.execute("SELECT id, path FROM files WHERE owner = ? AND deleted = 0", (owner,)).fetchall()
            return [i for i, p in rows if is_under(p, prefix) and (include_reserved or not is_under(p, RESERVED_PREFIX))]

        cand = await self._read(candidates, f"searching {owner}/{prefix}")
        hits = await asyncio.to_thread(self.index.search, owner, vector, k, cand)
        if not hits:
            return []

        def details(conn: sqlite3.Connection) -> list[SearchHit]:
            out = []
            for file_id, score in hits:
                row = conn.execute(
                    "SELECT f.path, f.head, substr(v.data, 1, 200) FROM files f JOIN versions v ON v.file_id = f.id AND v.version = f.head"
                    " WHERE f.id = ? AND f.deleted = 0",
                    (file_id,),
                ).fetchone()
                if row is not None:
                    snippet = row[2].decode("utf-8", "replace") if isinstance(row[2], bytes) else str(row[2] or "")
                    out.append(SearchHit(owner=owner, path=row[0], version=row[1], score=round(score, 6), snippet=snippet))
            return out

        self.stats["searches"] += 1
        return await self._read(details, f"searching {owner}/{prefix}")

    async def _owner_purge(self, owner: str, path: str) -> int:
        """Delete every version of a file; returns how many were dropped."""
        db = await self._db()

        def txn(conn: sqlite3.Connection) -> tuple[int, int]:
            file_id, _, _ = self._file_row(conn, owner, path)
            n = conn.execute("DELETE FROM versions WHERE file_id = ?", (file_id,)).rowcount
            conn.execute("DELETE FROM vectors WHERE file_id = ?", (file_id,))
            conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
            return n, file_id

        def unindex(result: tuple[int, int]) -> None:
            if self.index is not None:
                self.index.remove(owner, [result[1]])

        n, _ = await self._write(db, txn, unindex, f"purging {owner}/{path}")
        return n


def _need_path(path: str | None, op: str) -> str:
    if path is None:
        raise InvalidSyscallError(f"storage {op} needs a path")
    return path


__all__ = [
    "DiffResult",
    "FileContent",
    "FileInfo",
    "SearchHit",
    "StorageConfig",
    "StorageManager",
    "VersionInfo",
]
