"""Storage has one name per operation, on the agent face and on the owner face (``storage.store``).

Mutation caught: a synonym added back to either face (write/put, read/get, ...), or the two faces drifting apart.
"""

import inspect

from managers_testkit import agent

from aios_core.managers.storage import OwnerStore, StorageManager
from aios_core.syscalls import StorageSyscall

OPERATIONS = {"write", "read", "list", "delete", "versions", "rollback", "diff", "search", "purge"}
LIFECYCLE = {"open", "aclose", "handle"}


def _public_coroutines(cls: type) -> set[str]:
    return {n for n, f in vars(cls).items() if not n.startswith("_") and inspect.iscoroutinefunction(f)}


def test_each_operation_has_one_name_on_both_faces():
    assert _public_coroutines(StorageManager) == OPERATIONS | LIFECYCLE
    assert _public_coroutines(OwnerStore) == OPERATIONS
    for op in OPERATIONS:
        assert hasattr(StorageManager, f"_owner_{op}")


def test_the_wire_names_the_same_operations():
    wire = set(StorageSyscall.model_fields["op"].annotation.__args__)
    assert wire <= OPERATIONS


async def test_both_faces_reach_the_same_files(make_managers):
    m = make_managers()
    alice = agent("alice")
    await m.storage.write(alice, "notes.txt", "one")
    await m.storage.store.write("alice", "notes.txt", "two")
    assert (await m.storage.read(alice, "notes.txt")).data == "two"
    assert [v.version for v in await m.storage.versions(alice, "notes.txt")] == [1, 2]
    assert [f.path for f in await m.storage.store.list("alice")] == ["notes.txt"]
