"""The llama.cpp core's prefix-sharing policy: which prompt prefixes are kept, shared, published or awaited.

Agents of one kind send the same (often long) system prompt with every call.
After one request has computed it, its KV cells are also tagged with a
reserved sequence slot; in a unified KV cache this shares cells instead of
copying them, so holding a prefix costs nothing while a sequence that
computed it is alive, and a later request that starts with the same tokens
gets them for free. Matching is token-exact (the longest common prefix), so it
works for any chat template.

Three sources feed the cache:

* a request's **system prompt**, published once its prefill has computed it
  (:meth:`PrefixCache.publish_length`);
* the **common start of prompts running together** (instructions, few-shot
  examples without a system message): a new prompt shares it at once when the
  running sequence has computed it, or waits for that sequence to publish it
  (:func:`plan_shared_start`);
* **finished conversations** (:meth:`PrefixCache.retain`), as
  InferCept/Continuum keep KV across an agent's tool calls.

Entries are evicted least-recently-used when their slots are needed or the
cells are needed for admission; an entry evicted while running sequences
still share its cells stays counted (as a "ghost") until the last of them ends.

Cells are counted once however many entries are tagged with them. Sixteen
agents' conversations that begin with one 300-token system prompt hold those
300 cells once in a unified KV cache, not sixteen times: each entry records
where its cells physically are (:class:`CellSource` spans: the part it shares
with the entry its sequence started from, then the sequence's own cells), and
:meth:`PrefixCache.cells` counts every span once. Counting them per entry
evicted conversations early and kept fewer agents' KV than fits.

Kept conversations live in two tiers. In a unified KV cache every decode
attends over every occupied cell (llama.cpp masks other sequences' cells but
still computes over the whole occupied range), so idle cells slow every step:
at 16 sequences, Gemma 3 270M decodes 94 tok/s over 1.5k cells and 58 tok/s
over 32k (docs/benchmarks.md, "Against llama-server"). Past ``hot_cells`` cells of idle entries, the least recently
used go: conversations are copied to host RAM (``llama_state_seq_get_data``, about 18 KB per
token, milliseconds) and their cells freed; when the agent returns, its
conversation is copied back into its new sequence (:meth:`PrefixCache.take`)
instead of being prefilled again, as llama-server's host-RAM prompt cache
does; prefixes are evicted. A system prompt many agents share is in use or
was just used, so it stays in the KV cache, where sharing it costs nothing.

Nothing here calls llama.cpp: cell operations go through a :class:`KVCells`
(the core passes :class:`~aios_core.cores.llamacpp_runtime.LlamaMemory`), so
the policy is tested without a model.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

#: shorter shared prefixes are not worth a cache entry (every Gemma prompt shares its first 4 tokens)
MIN_SHARED_PREFIX = 16
#: completed sequences shorter than this are not kept (a new prompt would rarely gain from them)
MIN_RETAINED = 32
#: a new prompt waits for (or shares at once) a running sequence's prefix only when it gains this many tokens
MIN_PREFIX_GAIN = 32
#: the tokens at the end of a kept conversation its own agent's next prompt may render differently (the end
#: of the answer, re-tokenized from text, and the end-of-turn marker)
RETOKENIZED_TAIL = 4


class KVCells(Protocol):
    """The KV-cell operations the cache applies (between engine steps)."""

    def drop(self, slot: int) -> None:
        """Forget every cell tagged with ``slot``."""
        ...

    def share(self, src: int, dst: int, n: int) -> None:
        """Tag the first ``n`` cells of ``src`` with ``dst`` too."""
        ...

    def save(self, slot: int) -> bytes | bytearray | None:
        """A host-RAM copy of the cells tagged with ``slot`` (None: nothing could be copied)."""
        ...


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two token arrays."""
    m = min(a.shape[0], b.shape[0])
    if m == 0:
        return 0
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if diff.size else m


class _HasTokens(Protocol):
    tokens: np.ndarray


H = TypeVar("H", bound=_HasTokens)


def _longest(candidates: Iterable[H], tokens: np.ndarray) -> tuple[H | None, int]:
    """The candidate sharing the longest prefix with ``tokens``, at most all but its last token; (None, 0) below
    :data:`MIN_SHARED_PREFIX` (a sequence decodes at least its last prompt token itself)."""
    best, best_n = None, 0
    limit = tokens.shape[0] - 1
    for candidate in candidates:
        n = min(common_prefix(candidate.tokens, tokens), limit)
        if n > best_n:
            best, best_n = candidate, n
    if best_n < MIN_SHARED_PREFIX:
        return None, 0
    return best, best_n


class Segment:
    """A run of physical KV cells computed by one sequence (compared by identity)."""

    __slots__ = ()


#: where an entry's cells are: the first k cells of each segment, in order
Spans = list[tuple[Segment, int]]


def _truncate(spans: Spans, n: int) -> Spans:
    out: Spans = []
    for segment, k in spans:
        if n <= 0:
            break
        out.append((segment, min(k, n)))
        n -= k
    return out


@dataclass(eq=False)
class CellSource:
    """Where a running sequence's KV cells are: the first ``shared`` are ``entry``'s, the rest its own (``own``)."""

    entry: PrefixEntry | None = None
    shared: int = 0
    own: Segment = field(default_factory=Segment)

    def spans(self, n: int) -> Spans:
        """The spans of the sequence's first ``n`` cells."""
        out = _truncate(self.entry.spans, min(n, self.shared)) if self.entry is not None and self.shared else []
        if n > self.shared:
            out.append((self.own, n - self.shared))
        return out


class EntryKind(enum.Enum):
    """Why an entry is kept: it decides what a newer entry may replace and what may go to host RAM."""

    #: a published system prompt or common start: shared by many sequences, stays in the KV cache
    PREFIX = "prefix"
    #: a completed sequence kept for its agent's next turn (replaced by that turn's longer one)
    CONVERSATION = "conversation"


@dataclass(eq=False)
class SpilledEntry:
    """A kept conversation copied to host RAM (its cells freed); copied back into the sequence that continues it."""

    tokens: np.ndarray
    data: bytes | bytearray
    #: its key in :attr:`PrefixCache.spilled`
    key: int = 0


@dataclass(frozen=True)
class Start:
    """Where a new sequence's first tokens come from: ``shared`` cells of a KV-cache ``entry``, or ``copied``
    tokens of a host-RAM ``spilled`` conversation (its own cells then), never both; nothing below
    :data:`MIN_SHARED_PREFIX`."""

    entry: PrefixEntry | None = None
    shared: int = 0
    spilled: SpilledEntry | None = None
    copied: int = 0

    @property
    def reused(self) -> int:
        """Prompt tokens the sequence does not prefill."""
        return self.shared + self.copied


@dataclass(eq=False)
class PrefixEntry:
    slot: int
    tokens: np.ndarray
    kind: EntryKind = EntryKind.PREFIX
    #: where its cells physically are (default: cells of its own)
    spans: Spans = field(default_factory=list)
    #: set by the engine thread once its cells are tagged with ``slot``
    ready: bool = False
    users: int = 0
    hits: int = 0
    evicted: bool = False

    def __post_init__(self) -> None:
        if not self.spans:
            self.spans = [(Segment(), self.tokens.shape[0])]


class PrefixCache:
    """Recent prefixes whose KV stays tagged with reserved sequence slots (LRU); a :class:`~aios_core.cores.kv_ledger.CellHolder`."""

    def __init__(self, slots: list[int], cells: KVCells, *, hot_cells: int | None = None, spill_bytes: int = 0) -> None:
        """``hot_cells``: cells that idle entries (nobody uses them now) may hold in the KV cache (None: no limit);
        beyond them the least recently used go, conversations to host RAM, at most ``spill_bytes`` bytes of
        them (0: they are dropped instead)."""
        self._slots = list(slots)
        self.kv = cells
        self.free = list(reversed(slots))
        self.entries: OrderedDict[int, PrefixEntry] = OrderedDict()
        #: evicted entries whose cells are still shared by running sequences
        self.ghosts: list[PrefixEntry] = []
        self.hot_cells = hot_cells
        self.spill_bytes = spill_bytes
        #: conversations in host RAM, least recently kept first
        self.spilled: OrderedDict[int, SpilledEntry] = OrderedDict()
        self.spilled_bytes = 0
        self._spill_ids = 0
        self.hits = 0
        self.published = 0
        self.evictions = 0
        #: conversations copied to host RAM, and copied back
        self.spills = 0
        self.unspills = 0

    @property
    def enabled(self) -> bool:
        """False when the core was given no prefix slots (nothing is ever cached)."""
        return bool(self._slots)

    def match(self, tokens: np.ndarray) -> tuple[PrefixEntry | None, int]:
        """The entry sharing the longest prefix with ``tokens`` (leaving at least one token to decode)."""
        return _longest([e for e in self.entries.values() if e.ready], tokens)

    def covers(self, prefix: np.ndarray) -> bool:
        """Whether an entry (ready or being published) already starts with all of ``prefix``."""
        n = prefix.shape[0]
        return any(e.tokens.shape[0] >= n and common_prefix(e.tokens, prefix) == n for e in self.entries.values())

    @staticmethod
    def _physical(entries: Iterable[PrefixEntry]) -> int:
        """Cells held by ``entries``, each physical cell once (a segment counts as far as its longest use)."""
        held: dict[int, int] = {}
        for entry in entries:
            for segment, k in entry.spans:
                key = id(segment)
                if held.get(key, 0) < k:
                    held[key] = k
        return sum(held.values())

    def cells(self) -> int:
        return self._physical([*self.entries.values(), *self.ghosts])

    def evictable_cells(self) -> int:
        """Cells freed if every entry nobody shares were evicted (those still tagged by a kept entry stay)."""
        kept = [e for e in self.entries.values() if e.users > 0]
        return self.cells() - self._physical([*kept, *self.ghosts])

    def evict(self, entry: PrefixEntry) -> None:
        del self.entries[entry.slot]
        self.kv.drop(entry.slot)
        entry.evicted = True
        if entry.users > 0:
            self.ghosts.append(entry)
        self.free.append(entry.slot)
        self.evictions += 1

    def evict_unused(self, *, keep: Any = None) -> bool:
        """Free the least recently used entry nobody shares (a conversation goes to host RAM if it may); False when there is none."""
        for entry in self.entries.values():
            if entry.users == 0 and entry is not keep:
                self.give_back(entry)
                return True
        return False

    def give_back(self, entry: PrefixEntry) -> None:
        """Free ``entry``'s slot and cells: a conversation goes to host RAM (when it may), a prefix is evicted."""
        if entry.kind is EntryKind.CONVERSATION:
            self.spill(entry)
        else:
            self.evict(entry)

    # ------------------------------------------------------------------ host-RAM tier

    def spill(self, entry: PrefixEntry) -> bool:
        """Copy ``entry``'s cells to host RAM and evict it; True when the copy was kept (else it is just evicted)."""
        data = self.kv.save(entry.slot) if entry.ready and self.spill_bytes > 0 else None
        self.evict(entry)
        if data is None or len(data) > self.spill_bytes:
            return False
        self._spill_ids += 1
        self.spilled[self._spill_ids] = SpilledEntry(tokens=entry.tokens, data=data, key=self._spill_ids)
        self.spilled_bytes += len(data)
        self.spills += 1
        while self.spilled_bytes > self.spill_bytes:
            self._forget(next(iter(self.spilled.values())))
        return True

    def _forget(self, spilled: SpilledEntry) -> None:
        if self.spilled.pop(spilled.key, None) is not None:
            self.spilled_bytes -= len(spilled.data)

    def trim(self) -> None:
        """Keep idle entries within ``hot_cells``: the least recently used go, conversations to host RAM.

        Prefixes count too: a system prompt published for one agent alone (nothing shared) is dead weight
        once its conversation holds it, and one published in an earlier burst of work slows every step after it.
        A prefix many agents share is used all the time, so it is the last to go.
        """
        if self.hot_cells is None:
            return
        idle = [e for e in self.entries.values() if e.users == 0 and e.ready]
        held = self._physical(idle)
        for entry in idle:
            if held <= self.hot_cells:
                break
            self.give_back(entry)
            held = self._physical([e for e in idle if not e.evicted])

    def match_spilled(self, tokens: np.ndarray) -> tuple[SpilledEntry | None, int]:
        """The host-RAM conversation sharing the longest prefix with ``tokens`` (leaving one token to decode)."""
        return _longest(self.spilled.values(), tokens)

    def start(self, tokens: np.ndarray) -> Start:
        """Where a sequence for ``tokens`` starts: the longer of the KV cache's match and host RAM's.

        A host-RAM copy wins only when it is longer (a copy of ~18 KB per token costs less than prefilling even a
        few tokens, but shared cells cost nothing). With idle conversations in host RAM (the default), a system
        prompt nobody is using right now is often there only; a router that looked at the KV cache alone would
        see no reason to send its agents to this core."""
        entry, shared = self.match(tokens)
        spilled, n_spilled = self.match_spilled(tokens)
        if spilled is not None and n_spilled > shared:
            return Start(spilled=spilled, copied=n_spilled)
        return Start(entry=entry, shared=shared)

    def forget_spilled(self) -> int:
        """Drop every host-RAM conversation; returns how many there were."""
        n = len(self.spilled)
        self.spilled.clear()
        self.spilled_bytes = 0
        return n

    def drop_unused(self) -> int:
        """A cold start on demand: evict every entry nobody uses (conversations are not copied to host RAM
        first) and drop the host-RAM ones; returns how many went."""
        unused = [e for e in self.entries.values() if e.users == 0]
        for entry in unused:
            self.evict(entry)
        return len(unused) + self.forget_spilled()

    def take(self, spilled: SpilledEntry, n: int) -> None:
        """Its first ``n`` tokens were copied into a new sequence. When that sequence continues the whole conversation
        (its agent is back), the copy is forgotten: the sequence is kept again when it ends. A prompt that only starts
        the same way (another agent, the same system prompt) borrowed the start: the copy stays for its own agent,
        whose next turn would otherwise miss it."""
        if n < spilled.tokens.shape[0] - RETOKENIZED_TAIL:
            return
        if spilled.key in self.spilled:
            self._forget(spilled)
            self.unspills += 1

    def reserve(self, tokens: np.ndarray, source: CellSource | None = None) -> PrefixEntry | None:
        """A new (not yet ready) entry for ``tokens``, evicting the least recently used one if all slots are taken.

        Entries still being published are never evicted (their slot is about
        to receive cells in this very step); None when every slot holds one.
        ``source`` is the sequence the cells come from (None: cells of its own).
        """
        if not self.free:
            ready = [e for e in self.entries.values() if e.ready]
            victim = next((e for e in ready if e.users == 0), None) or (ready[0] if ready else None)
            if victim is None:
                return None
            self.give_back(victim)
        spans = source.spans(tokens.shape[0]) if source is not None else []
        entry = PrefixEntry(slot=self.free.pop(), tokens=tokens, spans=spans)
        self.entries[entry.slot] = entry
        self.published += 1
        return entry

    def adopt(self, tokens: np.ndarray, slot: int, source: CellSource | None = None) -> PrefixEntry | None:
        """Make the cells of ``tokens``, already computed in sequence ``slot``, a ready entry (unless one covers them).

        Between steps only: the cells are tagged with the entry's slot at once.
        """
        if self.covers(tokens):
            return None
        entry = self.reserve(tokens, source)
        if entry is not None:
            self.kv.share(slot, entry.slot, tokens.shape[0])
            entry.ready = True
        return entry

    def retain(self, tokens: np.ndarray, slot: int, source: CellSource | None = None) -> PrefixEntry | None:
        """Keep a completed sequence's computed cells (``tokens``, in ``slot``) as an entry: its agent's next turn starts with them.

        Conversations it contains (the same conversation's earlier turn, in
        the KV cache or in host RAM) add nothing once it exists and go; a
        published prefix it contains stays (other agents share it). Too short a
        sequence is not kept. Idle conversations beyond ``hot_cells`` then go
        to host RAM.
        """
        n = tokens.shape[0]
        if n < MIN_RETAINED or not self.enabled or self.covers(tokens):
            return None
        for entry in list(self.entries.values()):
            k = entry.tokens.shape[0]
            if entry.kind is EntryKind.CONVERSATION and entry.ready and entry.users == 0 and k <= n and common_prefix(entry.tokens, tokens) == k:
                self.evict(entry)
        for spilled in list(self.spilled.values()):
            k = spilled.tokens.shape[0]
            if k <= n and common_prefix(spilled.tokens, tokens) == k:
                self._forget(spilled)
        kept = self.adopt(tokens, slot, source)
        if kept is not None:
            kept.kind = EntryKind.CONVERSATION
            self.trim()
        return kept

    def publish_length(self, prompt: np.ndarray, system_len: int, shared: int) -> int:
        """How much of a new prompt to publish once computed: its system prompt's ``system_len`` tokens, or 0.

        Worth it only when it is long enough, longer than what the prompt
        already shares, and no entry covers it yet.
        """
        if not self.enabled or system_len < MIN_SHARED_PREFIX or system_len <= shared or self.covers(prompt[:system_len]):
            return 0
        return system_len

    def use(self, entry: PrefixEntry) -> None:
        entry.users += 1
        entry.hits += 1
        self.hits += 1
        self.entries.move_to_end(entry.slot)

    def unuse(self, entry: PrefixEntry) -> None:
        entry.users -= 1
        if entry.evicted and entry.users == 0 and entry in self.ghosts:
            self.ghosts.remove(entry)

    def clear(self) -> None:
        """Forget every entry (the KV memory was emptied; host-RAM copies go too, as the model may change)."""
        self.entries.clear()
        self.ghosts.clear()
        self.forget_spilled()
        self.free = list(reversed(self._slots))


class RunningPrompt(Protocol):
    """What :func:`plan_shared_start` reads of a running sequence."""

    slot: int
    #: tokens of it already in the KV cache
    n_past: int
    #: length of a prefix it publishes once computed (0: none)
    publish: int
    #: where its cells are
    source: CellSource

    def prompt_array(self) -> np.ndarray:
        """Its prompt tokens."""
        ...


class StartPlan(enum.Enum):
    """What a new prompt does about a running sequence that began the same way."""

    #: nothing worth sharing: admit it as it is
    ALONE = "alone"
    #: the running sequence has computed the common start: it became a cache entry, share it now
    SHARED_NOW = "shared_now"
    #: the running sequence will publish the common start when its prefill gets there: wait for it
    WAIT = "wait"


def plan_shared_start(cache: PrefixCache, prompt: np.ndarray, running: Iterable[RunningPrompt]) -> StartPlan:
    """Whether a new prompt should share (now or after waiting) the start of a running sequence's prompt.

    Agents started together often send prompts that begin the same way
    (instructions, few-shot examples) without a system message to mark it.
    Prefilling that part once and sharing it beats prefilling it in every
    sequence of the step. If the running sequence has computed the common
    part already, it is shared at once (a new prefix entry, no waiting); if
    not, that sequence publishes it when its prefill gets there and the new
    one waits, which costs it at most that prefill. What the prompt already
    gets from the cache counts, host RAM included (as in :meth:`PrefixCache.start`):
    an agent back from a tool call copies its whole conversation back, so a
    running agent's system prompt offers it nothing to publish or wait for.
    A start of the same length is still shared rather than copied (shared
    cells cost nothing).
    """
    _, shared = cache.match(prompt)
    _, copied = cache.match_spilled(prompt)
    best: RunningPrompt | None = None
    best_n = 0
    limit = prompt.shape[0] - 1  # a sequence decodes at least its last prompt token itself
    for other in running:
        n = min(common_prefix(other.prompt_array(), prompt), limit)
        if n > best_n:
            best, best_n = other, n
    if best is None or best_n < shared + MIN_PREFIX_GAIN or copied > best_n:
        return StartPlan.ALONE
    if best.n_past >= best_n:
        cache.adopt(prompt[:best_n].copy(), best.slot, best.source)
        return StartPlan.SHARED_NOW
    if best_n < copied + MIN_PREFIX_GAIN:
        return StartPlan.ALONE  # the copy it can have now is nearly as long as what waiting would give
    best.publish = max(best.publish, best_n)
    return StartPlan.WAIT
