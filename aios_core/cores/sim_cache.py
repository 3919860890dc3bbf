"""The sim core's prefix cache: a radix tree over chat messages whose cells count against the KV capacity.

It models what serving engines ship (vLLM's automatic prefix caching, SGLang's
radix cache, llama-server's slot and host-RAM caches) at message granularity:
a request whose first messages were computed before (the same system prompt,
or its own conversation so far, including the answer the engine generated)
skips their prefill. Cached cells are real KV cells: nodes in use by a running
sequence are pinned; the others are evicted least recently used, leaves first,
whenever running sequences need the room. A disabled cache (``max_entries=0``)
matches nothing and keeps nothing.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

#: one link of a prompt's chain: (key of the prefix ending with this message, the message's tokens)
Link = tuple[str, int]


def link_after(parent_key: str, role: str, content: str, tokens: int) -> Link:
    """The link of a message that follows the prefix keyed ``parent_key`` ("" at the start of a prompt)."""
    return hashlib.blake2b(f"{parent_key}\x00{role}\x00{content}".encode(), digest_size=12).hexdigest(), tokens


def chain(messages: Iterable[tuple[str, str, int]]) -> list[Link]:
    """Keys of every message prefix of a prompt, from ``(role, content, tokens)`` triples."""
    links: list[Link] = []
    key = ""
    for role, content, tokens in messages:
        key, _ = link = link_after(key, role, content, tokens)
        links.append(link)
    return links


@dataclass(eq=False, slots=True)
class Node:
    key: str
    tokens: int
    parent: Node | None
    children: int = 0
    refs: int = 0


class PrefixTree:
    """LRU radix cache of message prefixes; ``tokens`` is the number of KV cells it holds."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._nodes: OrderedDict[str, Node] = OrderedDict()
        self.tokens = 0
        self.pinned_tokens = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def __len__(self) -> int:
        return len(self._nodes)

    def match(self, links: list[Link]) -> list[Node]:
        """The longest cached path for ``links`` (no side effects)."""
        path: list[Node] = []
        if not self.enabled:
            return path
        for key, _ in links:
            node = self._nodes.get(key)
            if node is None:
                break
            path.append(node)
        return path

    def pin(self, path: list[Node]) -> None:
        """Mark ``path`` in use (never evicted while pinned) and most recently used, root last so leaves go first."""
        for node in path:
            if node.refs == 0:
                self.pinned_tokens += node.tokens
            node.refs += 1
        for node in reversed(path):
            self._nodes.move_to_end(node.key)

    def unpin(self, path: list[Node]) -> None:
        for node in path:
            node.refs -= 1
            if node.refs == 0:
                self.pinned_tokens -= node.tokens

    def extend(self, path: list[Node], links: list[Link]) -> tuple[list[Node], int]:
        """Pin ``links`` (which follow ``path``), adding the missing ones; returns them and the cells added."""
        nodes: list[Node] = []
        added = 0
        if not self.enabled:
            return nodes, added
        parent = path[-1] if path else None
        for key, tokens in links:
            node = self._nodes.get(key)
            if node is None:
                node = Node(key, tokens, parent)
                if parent is not None:
                    parent.children += 1
                self._nodes[key] = node
                self.tokens += tokens
                added += tokens
            self.pin([node])
            nodes.append(node)
            parent = node
        return nodes, added

    @property
    def evictable_tokens(self) -> int:
        # a pinned node's ancestors are pinned with it, so every unpinned node can go (leaves first)
        return self.tokens - self.pinned_tokens

    def evict(self, need: int) -> int:
        """Free at least ``need`` cells (and trim to ``max_entries``) by dropping unpinned leaves, oldest first."""
        freed = 0
        while freed < need or len(self._nodes) > self.max_entries:
            victim = next((n for n in self._nodes.values() if n.refs == 0 and n.children == 0), None)
            if victim is None:
                break
            del self._nodes[victim.key]
            if victim.parent is not None:
                victim.parent.children -= 1
            self.tokens -= victim.tokens
            freed += victim.tokens
        return freed

    def clear(self) -> int:
        """Drop every unpinned entry; returns how many went."""
        before = len(self._nodes)
        self.evict(self.evictable_tokens)
        return before - len(self._nodes)
