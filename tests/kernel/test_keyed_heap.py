"""The one lazy-deletion heap (schedulers' queues and memory eviction).

Mutations caught: a re-push that leaves the old entry live (the item comes out twice) -> test_push_again_*;
remove that does not forget (a cancelled job is dispatched) -> test_removed_*; pop(skip=) that drops or
reorders the skipped item (memory would evict the item being written) -> test_pop_skips_*; no rebuild
(a heap of cancelled jobs grows without bound) -> test_dead_records_*.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from aios_core.keyed_heap import KeyedHeap


@dataclass(eq=False)
class Item:
    id: str


def drain(heap: KeyedHeap[Item]) -> list[str]:
    out = []
    while (item := heap.pop()) is not None:
        out.append(item.id)
    return out


def test_smallest_key_first_ties_in_push_order():
    heap: KeyedHeap[Item] = KeyedHeap()
    for name, key in [("a", 3), ("b", 1), ("c", 3), ("d", 2)]:
        heap.push(Item(name), key)
    assert heap.peek_key() == 1 and heap.peek().id == "b"  # type: ignore[union-attr]
    assert drain(heap) == ["b", "d", "a", "c"]
    assert heap.pop() is None and heap.peek() is None and heap.peek_key() is None


def test_push_again_replaces_the_earlier_entry():
    heap: KeyedHeap[Item] = KeyedHeap()
    a, b = Item("a"), Item("b")
    heap.push(a, 1)
    heap.push(b, 2)
    heap.push(a, 5)
    assert len(heap) == 2 and a in heap
    assert drain(heap) == ["b", "a"]


def test_removed_items_never_come_out():
    heap: KeyedHeap[Item] = KeyedHeap()
    items = [Item(str(i)) for i in range(5)]
    for i, item in enumerate(items):
        heap.push(item, i)
    assert heap.remove(items[0]) and heap.remove(items[3]) and not heap.remove(items[3])
    assert items[0] not in heap and len(heap) == 3
    assert drain(heap) == ["1", "2", "4"]


def test_pop_skips_the_protected_item_and_keeps_it():
    heap: KeyedHeap[Item] = KeyedHeap(lambda item: item.id)
    a, b = Item("a"), Item("b")
    heap.push(a, 1)
    heap.push(b, 2)
    assert heap.pop(skip=a) is b
    assert heap.pop(skip=a) is None  # only the protected one is left
    assert heap.peek() is a and len(heap) == 1


def test_dead_records_are_rebuilt_away():
    heap: KeyedHeap[Item] = KeyedHeap()
    keep = Item("keep")
    heap.push(keep, 0)
    for i in range(10_000):
        item = Item(f"x{i}")
        heap.push(item, i)
        heap.remove(item)
        heap.push(keep, -i)  # re-ranked over and over
    assert len(heap) == 1 and len(heap._heap) <= 2 * 64 + 2
    assert heap.pop() is keep


def test_matches_a_reference_model_under_random_operations():
    rng = random.Random(3)
    heap: KeyedHeap[Item] = KeyedHeap()
    items = {name: Item(name) for name in "abcdefgh"}
    model: dict[str, tuple[int, int]] = {}
    order = 0
    for _ in range(5000):
        name = rng.choice("abcdefgh")
        op = rng.random()
        if op < 0.5:
            key = rng.randint(0, 20)
            heap.push(items[name], key)
            model[name] = (key, order)
            order += 1
        elif op < 0.7:
            assert heap.remove(items[name]) == (model.pop(name, None) is not None)
        else:
            got = heap.pop()
            want = min(model, key=lambda n: model[n]) if model else None
            assert (got.id if got else None) == want
            if want is not None:
                del model[want]
        assert len(heap) == len(model)
