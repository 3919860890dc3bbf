import asyncio

import pytest
from managers_testkit import agent

from aios_core.errors import AccessDeniedError, InvalidSyscallError, MemoryManagerError
from aios_core.managers.memory import MEMORY_PREFIX, MemoryConfig, MemoryManager
from aios_core.managers.storage import StorageConfig, StorageManager
from aios_core.syscalls import MemorySyscall

ALICE = agent("alice")
BOB = agent("bob")


def _note(i: int) -> str:
    return f"note {i:03d} " + "x" * 80  # ~100 bytes with the key


async def test_add_get_list_delete_clear(make_managers):
    mem = make_managers().memory
    item = await mem.add(ALICE, {"role": "user", "content": "hello"}, key="turn/1")
    assert item.key == "turn/1" and item.resident
    auto = await mem.add(ALICE, "a note without a key")
    assert auto.key
    assert (await mem.get(ALICE, "turn/1")).value == {"role": "user", "content": "hello"}
    assert {i.key for i in await mem.list(ALICE)} == {"turn/1", auto.key}
    await mem.delete(ALICE, "turn/1")
    with pytest.raises(MemoryManagerError, match="no memory item"):
        await mem.get(ALICE, "turn/1")
    assert await mem.clear(ALICE) == 1
    assert await mem.list(ALICE) == []


async def test_bad_keys_and_values_are_refused(make_managers):
    mem = make_managers(memory={"per_agent_limit": 1000}).memory
    with pytest.raises(InvalidSyscallError, match="invalid memory key"):
        await mem.add(ALICE, "x", key="../bob/x")
    with pytest.raises(InvalidSyscallError, match="JSON"):
        await mem.add(ALICE, {1, 2, 3}, key="set")
    with pytest.raises(MemoryManagerError, match="exceeds the per-agent memory limit"):
        await mem.add(ALICE, "y" * 2000, key="big")


async def test_agents_are_isolated_and_denials_are_audited(make_managers, audit_of):
    m = make_managers()
    await m.memory.add(ALICE, "alice's secret plan", key="plan")
    with pytest.raises(AccessDeniedError, match="may not read the memory of agent 'alice'"):
        await m.memory.get(BOB, "plan", owner="alice")
    with pytest.raises(AccessDeniedError):
        await m.memory.search(BOB, "plan", owner="alice")
    with pytest.raises(AccessDeniedError):
        await m.memory.add(BOB, "overwritten", key="plan", owner="alice")
    # bob's own memory is separate: the same key does not exist there
    with pytest.raises(MemoryManagerError):
        await m.memory.get(BOB, "plan")
    denied = audit_of(m, agent="bob", decision="deny")
    assert [(r.action, r.resource) for r in denied] == [("memory.read", "alice"), ("memory.read", "alice"), ("memory.write", "alice")]
    assert (await m.memory.get(ALICE, "plan")).value == "alice's secret plan"


async def test_a_grant_lets_one_agent_read_another(make_managers):
    m = make_managers(access={"groups": {"default": {}, "supervisor": {"read_memory_of": ["alice"]}}})
    await m.memory.add(ALICE, "status: done", key="status")
    boss = agent("boss", "supervisor")
    assert (await m.memory.get(boss, "status", owner="alice")).value == "status: done"
    with pytest.raises(AccessDeniedError):
        await m.memory.add(boss, "status: redo", key="status", owner="alice")


async def test_eviction_into_storage_and_transparent_reload(make_managers):
    m = make_managers(memory={"per_agent_limit": 1000, "k": 2})
    for i in range(30):
        await m.memory.add(ALICE, _note(i), key=f"n{i}")
    usage = m.memory.usage()["agents"]["alice"]
    assert usage["items"] == 30 and usage["resident_bytes"] <= 1000
    assert m.memory.stats.evictions >= 20
    # the evicted items are in storage under the kernel's namespace, versioned like any file
    stored = await m.storage.store.list("alice", MEMORY_PREFIX)
    assert len(stored) >= 20
    # reading an evicted item is a miss that reloads it; the value is exact
    before = m.memory.stats.misses
    assert (await m.memory.get(ALICE, "n0")).value == _note(0)
    assert m.memory.stats.misses == before + 1 and m.memory.stats.reloads >= 1
    assert (await m.memory.get(ALICE, "n0")).resident
    assert m.memory.usage()["agents"]["alice"]["resident_bytes"] <= 1000


async def test_lru_k_keeps_items_used_repeatedly(make_managers):
    m = make_managers(memory={"per_agent_limit": 1000, "k": 2})
    await m.memory.add(ALICE, _note(0), key="task")
    await m.memory.get(ALICE, "task")  # two references: a K-distance
    for i in range(1, 40):  # a scan of one-off notes
        await m.memory.add(ALICE, _note(i), key=f"n{i}")
    listing = {i.key: i.resident for i in await m.memory.list(ALICE)}
    assert listing["task"], "LRU-K must keep the twice-used item through a scan of once-used ones"
    assert not listing["n1"]


async def test_plain_lru_would_have_evicted_it(make_managers):
    m = make_managers(memory={"per_agent_limit": 1000, "k": 1})
    await m.memory.add(ALICE, _note(0), key="task")
    await m.memory.get(ALICE, "task")
    for i in range(1, 40):
        await m.memory.add(ALICE, _note(i), key=f"n{i}")
    assert not {i.key: i.resident for i in await m.memory.list(ALICE)}["task"]


async def test_total_limit_evicts_across_agents(make_managers):
    m = make_managers(memory={"per_agent_limit": 5000, "total_limit": 1500})
    for i in range(10):
        await m.memory.add(ALICE, _note(i), key=f"a{i}")
    for i in range(10):
        await m.memory.add(BOB, _note(i), key=f"b{i}")
    usage = m.memory.usage()
    assert usage["total_resident_bytes"] <= 1500
    assert usage["agents"]["alice"]["resident_bytes"] < 1000  # alice's older items made room for bob's
    assert (await m.memory.get(ALICE, "a0")).value == _note(0)


async def test_search_by_similarity_covers_resident_and_evicted_items(make_managers):
    m = make_managers(memory={"per_agent_limit": 600})
    await m.memory.add(ALICE, "the rocket launch to orbit is scheduled for monday", key="rocket")
    for i in range(30):
        await m.memory.add(ALICE, f"grocery list item {i}: apples bananas", key=f"g{i}")
    assert not {i.key: i.resident for i in await m.memory.list(ALICE)}["rocket"]
    hits = await m.memory.search(ALICE, "when does the rocket launch into orbit", k=3)
    assert hits[0].key == "rocket" and hits[0].value.startswith("the rocket launch")
    assert hits[0].score is not None and hits[0].score > hits[-1].score


async def test_search_without_query_returns_the_most_recent(make_managers):
    mem = make_managers().memory
    for i in range(5):
        await mem.add(ALICE, f"turn {i}", key=f"t{i}")
    await mem.get(ALICE, "t1")
    assert [i.key for i in await mem.search(ALICE, None, k=3)] == ["t1", "t4", "t3"]


async def test_memory_survives_a_restart(tmp_path, make_managers, embedder):
    m = make_managers(memory={"per_agent_limit": 500})
    for i in range(8):
        await m.memory.add(ALICE, _note(i), key=f"n{i}")
    await m.memory.aclose()  # persists what is still resident
    await m.storage.aclose()
    storage = StorageManager(StorageConfig(synchronous="NORMAL"), data_dir=tmp_path / "data", access=m.access, embedder=embedder)
    again = MemoryManager(MemoryConfig(per_agent_limit=500), storage=storage, access=m.access, embedder=embedder)
    try:
        assert len(await again.list(ALICE)) == 8
        for i in range(8):
            assert (await again.get(ALICE, f"n{i}")).value == _note(i)
    finally:
        await storage.aclose()


async def test_concurrent_access_under_eviction_stays_consistent(make_managers):
    m = make_managers(memory={"per_agent_limit": 800})
    for i in range(20):
        await m.memory.add(ALICE, _note(i), key=f"n{i}")

    async def worker(seed):
        for j in range(30):
            key = f"n{(seed * 7 + j * 3) % 20}"
            if j % 5 == 0:
                await m.memory.add(ALICE, _note(int(key[1:])), key=key)
            else:
                assert (await m.memory.get(ALICE, key)).value == _note(int(key[1:]))

    await asyncio.gather(*(worker(s) for s in range(6)))
    usage = m.memory.usage()["agents"]["alice"]
    assert usage["items"] == 20 and usage["resident_bytes"] <= 800
    assert m.memory.stats.eviction_failures == 0


async def test_eviction_failure_keeps_the_item_in_ram(make_managers):
    m = make_managers(storage={"synchronous": "NORMAL", "max_size_mb": 0.07}, memory={"per_agent_limit": 20_000})
    # fill the store so evictions cannot be written
    for i in range(100):
        try:
            await m.storage.write(ALICE, f"fill{i}", "z" * 8000 + str(i))
        except Exception:
            break
    for i in range(40):
        await m.memory.add(ALICE, "y" * 900 + str(i), key=f"k{i}")
    assert m.memory.stats.eviction_failures > 0
    for i in range(40):  # nothing was lost
        assert (await m.memory.get(ALICE, f"k{i}")).value == "y" * 900 + str(i)


async def test_syscall_entry(make_managers):
    mem = make_managers().memory
    await mem.handle(MemorySyscall(agent="alice", op="add", key="k", value=[1, 2]), ALICE)
    assert (await mem.handle(MemorySyscall(agent="alice", op="get", key="k"), ALICE)).value == [1, 2]
    with pytest.raises(InvalidSyscallError, match="needs a key"):
        await mem.handle(MemorySyscall(agent="alice", op="get"), ALICE)
    with pytest.raises(AccessDeniedError):
        await mem.handle(MemorySyscall(agent="bob", op="list", owner="alice"), BOB)
