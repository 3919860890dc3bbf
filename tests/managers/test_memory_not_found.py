"""A missing memory item is its own error type, with the wire form unchanged.

Mutation caught: raising the general MemoryManagerError again (callers could not catch "not found" alone), or
a subclass with another code/status (remote clients and the HTTP status would change).
"""

import pytest
from managers_testkit import agent

from aios_core.errors import MemoryItemNotFoundError, MemoryManagerError

ALICE = agent("alice")


async def test_missing_items_raise_the_not_found_subclass(make_managers):
    mem = make_managers().memory
    with pytest.raises(MemoryItemNotFoundError, match="no memory item") as missing:
        await mem.get(ALICE, "never/written")
    await mem.add(ALICE, "x", key="k")
    await mem.delete(ALICE, "k")
    with pytest.raises(MemoryItemNotFoundError):
        await mem.delete(ALICE, "k")
    error = missing.value
    assert isinstance(error, MemoryManagerError) and isinstance(error, LookupError)
    assert error.to_dict() == {
        "type": "memory_error",
        "message": error.message,
        "details": {"reason": "not_found", "key": "never/written"},
    }
    assert error.http_status == 422


async def test_other_memory_failures_stay_general(make_managers):
    mem = make_managers(memory={"per_agent_limit": 100}).memory
    with pytest.raises(MemoryManagerError) as too_large:
        await mem.add(ALICE, "y" * 500, key="big")
    assert not isinstance(too_large.value, MemoryItemNotFoundError)
