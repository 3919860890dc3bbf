import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from managers_testkit import agent

from aios_core.errors import AccessDeniedError, InvalidSyscallError, StorageError
from aios_core.managers.access import AccessManager
from aios_core.managers.sandbox_paths import SandboxPathError
from aios_core.managers.storage import StorageConfig, StorageManager
from aios_core.syscalls import StorageSyscall

ALICE = agent("alice")
BOB = agent("bob")


async def test_every_write_is_a_version_and_reads_pick_any_of_them(make_managers):
    st = make_managers().storage
    v1 = await st.write(ALICE, "notes/plan.md", "step one\n")
    v2 = await st.write(ALICE, "notes/plan.md", "step one\nstep two\n")
    assert (v1.version, v2.version) == (1, 2)
    assert (await st.read(ALICE, "notes/plan.md")).data == "step one\nstep two\n"
    assert (await st.read(ALICE, "notes/plan.md", version=1)).data == "step one\n"
    assert (await st.read(ALICE, "notes/plan.md", timestamp=v1.created)).version == 1
    same = await st.write(ALICE, "notes/plan.md", "step one\nstep two\n")
    assert same.unchanged and same.version == 2
    blob = await st.write(ALICE, "img.bin", b"\x00\xff\x10")
    assert blob.version == 1 and (await st.read(ALICE, "img.bin")).data == b"\x00\xff\x10"
    assert [v.version for v in await st.versions(ALICE, "notes/plan.md")] == [1, 2]


async def test_rollback_by_version_and_by_timestamp_keeps_history(make_managers):
    st = make_managers().storage
    v1 = await st.write(ALICE, "a.txt", "one")
    await asyncio.sleep(0.01)
    await st.write(ALICE, "a.txt", "two")
    await st.write(ALICE, "a.txt", "three")
    back = await st.rollback(ALICE, "a.txt", version=1)
    assert (back.version, back.kind, back.source_version) == (4, "rollback", 1)
    assert (await st.read(ALICE, "a.txt")).data == "one"
    by_time = await st.rollback(ALICE, "a.txt", timestamp=v1.created + 0.005)
    assert by_time.source_version == 1
    assert [v.kind for v in await st.versions(ALICE, "a.txt")] == ["write", "write", "write", "rollback", "rollback"]
    with pytest.raises(StorageError, match="no version 99"):
        await st.rollback(ALICE, "a.txt", version=99)
    with pytest.raises(StorageError, match="did not exist yet"):
        await st.rollback(ALICE, "a.txt", timestamp=v1.created - 100)


async def test_diff_between_versions(make_managers):
    st = make_managers().storage
    await st.write(ALICE, "a.py", "x = 1\ny = 2\n")
    await st.write(ALICE, "a.py", "x = 1\ny = 3\n")
    diff = await st.diff(ALICE, "a.py", 1)
    assert diff.from_version == 1 and diff.to_version == 2 and not diff.binary
    assert "-y = 2" in diff.diff and "+y = 3" in diff.diff
    await st.write(ALICE, "b.bin", b"\x00\x01")
    await st.write(ALICE, "b.bin", b"\x00\x02")
    assert (await st.diff(ALICE, "b.bin", 1, 2)).binary


async def test_delete_is_a_tombstone_that_rollback_undoes(make_managers):
    st = make_managers().storage
    await st.write(ALICE, "a.txt", "keep me")
    await st.delete(ALICE, "a.txt")
    with pytest.raises(StorageError, match="was deleted"):
        await st.read(ALICE, "a.txt")
    assert await st.list(ALICE) == []
    assert (await st.read(ALICE, "a.txt", version=1)).data == "keep me"
    await st.rollback(ALICE, "a.txt", version=1)
    assert (await st.read(ALICE, "a.txt")).data == "keep me"


async def test_purge_is_irreversible_and_needs_confirmation(make_managers, confirm, audit_of):
    m = make_managers()
    await m.storage.write(ALICE, "a.txt", "x")
    with pytest.raises(AccessDeniedError, match="nobody answered"):
        await m.storage.purge(ALICE, "a.txt")
    assert (await m.storage.read(ALICE, "a.txt")).data == "x"  # nothing happened
    confirm.answer = True
    assert await m.storage.purge(ALICE, "a.txt") == 1
    with pytest.raises(StorageError, match="no file"):
        await m.storage.versions(ALICE, "a.txt")
    decisions = [(r.decision, r.irreversible) for r in audit_of(m, action="storage.write") if r.detail.get("op") == "purge"]
    assert decisions == [("deny", True), ("allow", True)]


@pytest.mark.parametrize("path", ["../bob/secret.txt", "/etc/passwd", "a/../../b", "a\\..\\b"])
async def test_path_escapes_are_refused_and_audited(make_managers, audit_of, path):
    m = make_managers()
    with pytest.raises(SandboxPathError):
        await m.storage.write(ALICE, path, "x")
    with pytest.raises(SandboxPathError):
        await m.storage.read(ALICE, path)
    denials = audit_of(m, agent="alice", decision="deny")
    assert len(denials) == 2 and all(path in r.resource for r in denials)


async def test_other_agents_files_need_a_grant(make_managers, audit_of):
    m = make_managers(access={"groups": {"default": {}, "auditor": {"storage_read_paths": ["*"]}}})
    await m.storage.write(ALICE, "diary.txt", "private")
    with pytest.raises(AccessDeniedError):
        await m.storage.read(BOB, "diary.txt", owner="alice")
    with pytest.raises(AccessDeniedError):
        await m.storage.write(BOB, "diary.txt", "defaced", owner="alice")
    auditor = agent("carol", "auditor")
    assert (await m.storage.read(auditor, "diary.txt", owner="alice")).data == "private"
    with pytest.raises(AccessDeniedError):
        await m.storage.write(auditor, "diary.txt", "x", owner="alice")
    assert [r.decision for r in audit_of(m, agent="bob")] == ["deny", "deny"]


async def test_an_agent_named_like_a_folder_gets_no_access_to_the_longer_name(make_managers, audit_of):
    # agent names may contain "/": alice's own space ("{self}/*") must not reach agent "alice/sub"'s files
    sub = agent("alice/sub")
    m = make_managers()
    await m.storage.write(sub, "diary.txt", "the sub-agent's")
    for attempt in (m.storage.read(ALICE, "diary.txt", owner="alice/sub"), m.storage.write(ALICE, "diary.txt", "x", owner="alice/sub")):
        with pytest.raises(AccessDeniedError):
            await attempt
    # and the other way round: "alice/sub" has no claim on alice's "sub/..." files
    await m.storage.write(ALICE, "sub/notes.txt", "alice's")
    with pytest.raises(AccessDeniedError):
        await m.storage.read(sub, "notes.txt", owner="alice")
    assert (await m.storage.read(sub, "diary.txt")).data == "the sub-agent's"
    assert len(audit_of(m, agent="alice", decision="deny")) == 2


async def test_another_agents_evicted_memory_needs_the_right_to_read_its_memory(make_managers):
    m = make_managers(
        memory={"per_agent_limit": 300, "k": 2},
        access={"groups": {"default": {}, "files": {"storage_read_paths": ["*"]}, "peers": {"storage_read_paths": ["*"], "read_memory_of": ["alice"]}}},
    )
    for i in range(10):
        await m.memory.add(ALICE, f"secret {i} " + "x" * 80, key=f"s{i}")
    [evicted, *_] = await m.storage.store.list("alice", ".aios/memory")
    with pytest.raises(AccessDeniedError, match="memory"):
        await m.storage.read(agent("eve", "files"), evicted.path, owner="alice")  # a file grant is not a memory grant
    assert "secret" in (await m.storage.read(agent("pat", "peers"), evicted.path, owner="alice")).data
    assert "secret" in (await m.storage.read(ALICE, evicted.path)).data  # one's own, always


async def test_the_kernel_namespace_is_read_only_for_agents(make_managers):
    st = make_managers().storage
    with pytest.raises(SandboxPathError, match="belong to the kernel"):
        await st.write(ALICE, ".aios/memory/x", "forged")


async def test_vector_search_ranks_by_meaning_and_respects_folders(make_managers):
    st = make_managers().storage
    await st.write(ALICE, "pets/cats.md", "cats are small furry pets that purr")
    await st.write(ALICE, "pets/dogs.md", "dogs are loyal pets that bark")
    await st.write(ALICE, "space/rockets.md", "rockets launch satellites into orbit")
    await st.write(BOB, "rockets.md", "bob also writes about rockets and orbit")
    hits = await st.search(ALICE, "rocket launch orbit", k=2)
    assert hits[0].path == "space/rockets.md" and all(h.owner == "alice" for h in hits)
    in_pets = await st.search(ALICE, "rocket launch orbit", k=5, prefix="pets")
    assert {h.path for h in in_pets} == {"pets/cats.md", "pets/dogs.md"}
    await st.delete(ALICE, "space/rockets.md")
    assert "space/rockets.md" not in {h.path for h in await st.search(ALICE, "rocket launch orbit", k=5)}


async def test_index_is_rebuilt_from_the_database_on_reopen(tmp_path, make_managers, embedder):
    m = make_managers()
    await m.storage.write(ALICE, "space/rockets.md", "rockets launch satellites into orbit")
    await m.storage.write(ALICE, "pets/cats.md", "cats purr")
    await m.storage.aclose()
    again = StorageManager(StorageConfig(synchronous="NORMAL"), data_dir=tmp_path / "data", access=m.access, embedder=embedder)
    try:
        hits = await again.search(ALICE, "orbit rockets", k=1)
        assert hits[0].path == "space/rockets.md"
    finally:
        await again.aclose()


async def test_disk_full_is_a_clear_error_and_committed_versions_survive(make_managers):
    st = make_managers(storage={"synchronous": "NORMAL", "max_size_mb": 0.25}).storage
    await st.write(ALICE, "log.txt", "first version")
    await st.write(ALICE, "log.txt", "second version")
    big = os.urandom(40_000)
    with pytest.raises(StorageError, match="storage is full") as info:
        for i in range(100):
            await st.write(ALICE, f"blob{i}.bin", big + bytes([i]))
    assert info.value.details["reason"] == "full"
    assert st.stats["full_errors"] == 1
    # everything committed before is intact, and the store keeps working for reads
    assert (await st.read(ALICE, "log.txt", version=1)).data == "first version"
    assert (await st.read(ALICE, "log.txt")).data == "second version"
    written = [f.path for f in await st.list(ALICE) if f.path.startswith("blob")]
    assert written
    for p in written:
        assert (await st.read(ALICE, p)).data[:40_000] == big


async def test_syscall_entry_validates_and_dispatches(make_managers):
    st = make_managers().storage
    info = await st.handle(StorageSyscall(agent="alice", op="write", path="a.txt", data="hi"), ALICE)
    assert info.version == 1
    assert (await st.handle(StorageSyscall(agent="alice", op="read", path="a.txt"), ALICE)).data == "hi"
    assert [f.path for f in await st.handle(StorageSyscall(agent="alice", op="list"), ALICE)] == ["a.txt"]
    with pytest.raises(InvalidSyscallError, match="needs a path"):
        await st.handle(StorageSyscall(agent="alice", op="read"), ALICE)
    with pytest.raises(InvalidSyscallError, match="needs version"):
        await st.handle(StorageSyscall(agent="alice", op="diff", path="a.txt"), ALICE)
    with pytest.raises(StorageError, match="max_file_bytes"):
        small = make_managers(storage={"synchronous": "NORMAL", "max_file_bytes": 4}).storage
        await small.write(ALICE, "b.txt", "too long")


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from aios_core.agents import AgentRecord
    from aios_core.managers.access import AccessManager
    from aios_core.managers.embeddings import HashingEmbedder
    from aios_core.managers.storage import StorageConfig, StorageManager

    async def main():
        st = StorageManager(StorageConfig(synchronous="FULL"), data_dir=sys.argv[1], access=AccessManager(), embedder=HashingEmbedder(64))
        alice = AgentRecord(name="alice")
        i = 0
        while True:
            i += 1
            # a few hundred KB per version, so the kill is likely to land inside a transaction
            await st.write(alice, f"f{i % 3}.txt", f"version {i}\\n" + "x" * 300_000)
            print(i, flush=True)

    asyncio.run(main())
    """
)


def test_writer_killed_mid_write_loses_nothing_committed(tmp_path):
    data = tmp_path / "data"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data)], stdout=subprocess.PIPE, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, text=True
    )
    acknowledged = []
    deadline = time.monotonic() + 60
    while len(acknowledged) < 25 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged.append(int(line))
    proc.send_signal(signal.SIGKILL)  # mid-way through the next write
    proc.wait()
    assert len(acknowledged) >= 25, "the writer did not get going"

    conn = sqlite3.connect(data / "storage.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    async def check():
        st = StorageManager(StorageConfig(), data_dir=data, access=AccessManager())
        try:
            alice = agent("alice")
            for i in acknowledged:
                path = f"f{i % 3}.txt"
                version = (i - 1) // 3 + 1  # each file gets every third write
                content = await st.read(alice, path, version=version)
                assert content.data.startswith(f"version {i}\n"), (i, content.data[:20])
            for path in ("f0.txt", "f1.txt", "f2.txt"):
                versions = await st.versions(alice, path)
                assert [v.version for v in versions] == list(range(1, len(versions) + 1))  # no holes
        finally:
            await st.aclose()

    asyncio.run(check())
