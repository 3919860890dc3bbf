"""The context manager: snapshots under a memory budget, spilled to disk and read back, freed with their agent."""

from __future__ import annotations

import os

import pytest

from aios_core.cores.base import Snapshot
from aios_core.errors import CoreError
from aios_core.managers.context import ContextManager


def snap(gen_id: str, size: int) -> Snapshot:
    return Snapshot(gen_id=gen_id, core="llamacpp", state={"tokens": [1, 2, 3]}, data=bytearray(os.urandom(size)))


def test_past_the_budget_the_oldest_snapshots_go_to_disk_and_come_back_exact(tmp_path):
    cm = ContextManager(memory_budget=250_000, spill_dir=tmp_path / "spill")
    originals = {f"g{i}": snap(f"g{i}", 100_000) for i in range(4)}
    for gid, s in originals.items():
        cm.save("alice", Snapshot(gen_id=gid, core=s.core, state=dict(s.state), data=bytearray(s.data)))
    st = cm.stats
    assert st.held == 4 and st.bytes_in_memory <= 250_000 and st.spilled == 2
    assert st.bytes_on_disk == 200_000 and sorted(p.name for p in (tmp_path / "spill").iterdir()) == ["g0.kv", "g1.kv"]
    for gid in ("g0", "g3"):  # one spilled, one in memory
        back = cm.take(gid)
        assert back is not None and bytes(back.data) == bytes(originals[gid].data) and back.state == {"tokens": [1, 2, 3]}
    assert not (tmp_path / "spill" / "g0.kv").exists()
    assert cm.stats.held == 2 and cm.stats.restored == 2 and cm.stats.bytes_on_disk == 100_000
    assert cm.stats.as_dict()["mean_restore_ms"] >= 0
    assert cm.take("g0") is None  # taken once


def test_an_agent_that_ends_leaves_nothing_behind(tmp_path):
    cm = ContextManager(memory_budget=150_000, spill_dir=tmp_path)
    for i in range(3):
        cm.save("alice", snap(f"a{i}", 100_000))
    cm.save("bob", snap("b0", 10))
    assert cm.drop_agent("alice") == 3
    assert cm.stats.held == 1 and cm.stats.bytes_on_disk == 0 and cm.stats.bytes_in_memory == 10
    assert [p.name for p in tmp_path.iterdir()] == []
    cm.close()
    assert cm.stats.held == 0 and cm.stats.bytes_in_memory == 0


def test_a_spilled_snapshot_that_cannot_be_read_back_is_a_clear_error_and_the_books_stay_right(tmp_path):
    cm = ContextManager(memory_budget=10, spill_dir=tmp_path)
    cm.save("alice", snap("g", 1000))
    (tmp_path / "g.kv").unlink()  # the disk lost it
    with pytest.raises(CoreError, match="could not be read back"):
        cm.take("g")
    assert cm.stats.held == 0 and cm.stats.bytes_on_disk == 0


@pytest.mark.parametrize("failure", ["no_directory", "disk_full"])
def test_when_the_disk_refuses_the_spill_the_snapshot_stays_in_memory(tmp_path, monkeypatch, failure):
    if failure == "no_directory":
        blocked = tmp_path / "not-a-dir"
        blocked.write_text("a file where the spill directory should be")
        cm = ContextManager(memory_budget=10, spill_dir=blocked / "spill")
    else:
        cm = ContextManager(memory_budget=10, spill_dir=tmp_path)

        def full(self, data):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(type(tmp_path), "write_bytes", full)
    original = snap("g", 1000)
    kept = bytes(original.data)
    cm.save("alice", original)
    assert cm.stats.spilled == 0 and cm.stats.bytes_in_memory == 1000 and cm.stats.held == 1
    assert bytes(cm.take("g").data) == kept and cm.stats.held == 0 and cm.stats.bytes_in_memory == 0
