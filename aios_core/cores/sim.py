"""The sim core: a deterministic virtual-clock engine for tests and scheduler studies.

One step costs ``t0 + a * prefill_tokens + b * batch_size + c * context_tokens``
seconds of the loop's clock (``asyncio.sleep``), where ``context_tokens`` is the
KV every sequence of the batch attends to (a decode step reads each sequence's
whole context, so long conversations make steps dearer, as on a real engine).
The costs are fitted from the calibration command (:class:`SimCosts`,
``bench/studies/profiles``). Under :class:`aios_core.clock.VirtualTimeLoop` a
study of thousands of agents runs in seconds and is exactly repeatable for a
seed, while on a real loop it behaves like a slow engine in real time.

KV capacity is bounded: a sequence reserves ``prompt + max_tokens`` cells, less
the prefix it shares with the prefix cache (:mod:`aios_core.cores.sim_cache`,
a radix tree over messages that also keeps finished answers, like vLLM's APC or
SGLang's radix cache), whose unused cells are evicted when running sequences
need the room.

What it "generates" is a pure function of the request and the seed, so a
preempted and resumed generation yields exactly the tokens of an uninterrupted
one. Requests offering tools get a schema-valid tool call when the last message
is not a tool result; JSON response formats get a schema-shaped object.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from dataclasses import asdict, dataclass, fields
from typing import Any

from aios_core.cores.base import Snapshot
from aios_core.cores.batching import BatchingCore, EngineSeq, StepOutput
from aios_core.cores.sim_cache import Link, Node, PrefixTree, chain, link_after
from aios_core.errors import ContextLengthError
from aios_core.syscalls import LLMRequest

_WORDS = (
    "the agent plans a step and calls the model then reads the result checks the test writes code "
    "returns an answer with care while other agents wait their turn in the queue of the kernel"
).split()


def _example(schema: dict[str, Any], rng: random.Random) -> Any:
    """A small instance of a JSON schema (enough for tool arguments and JSON-mode answers)."""
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _example(schema[key][0], rng)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {k: _example(props[k], rng) for k in props if k in required}
    if kind == "array":
        return [_example(schema.get("items", {"type": "string"}), rng)]
    if kind == "integer":
        return int(schema.get("minimum", rng.randint(1, 9)))
    if kind == "number":
        return float(schema.get("minimum", rng.randint(1, 9)))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return rng.choice(_WORDS)


@dataclass(frozen=True)
class SimCosts:
    """What one engine step costs, in seconds: the sim's whole performance model.

    ``t0`` per step, ``a`` per prompt token prefilled, ``b`` per sequence in
    the batch, ``c`` per token of context the batch's sequences attend to, and
    ``restore_cost`` per snapshot restored. Fit them to a real engine with
    ``python -m aios.bench.studies.calibration --fit-only`` rather than guessing.
    """

    t0: float = 0.005
    a: float = 0.0001
    b: float = 0.002
    c: float = 0.0
    restore_cost: float = 0.0005

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or value < 0 or value != value:
                raise ValueError(f"sim cost {f.name} must be a number >= 0 seconds, got {value!r}")

    def step(self, *, prefill_tokens: int = 0, batch: int = 1, context_tokens: int = 0) -> float:
        """Seconds of one step that prefills ``prefill_tokens`` and advances ``batch`` sequences."""
        return self.t0 + self.a * prefill_tokens + self.b * batch + self.c * context_tokens

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimCosts:
        """Build from a mapping (a profile's ``costs``); unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown sim cost(s) {unknown}; expected some of {sorted(known)}")
        return cls(**{k: float(v) for k, v in data.items()})


def prompt_tokens(request: LLMRequest) -> int:
    """The sim's tokenizer: a word is a token, plus four tokens of chat markup per message."""
    return sum(message_tokens(m.content) for m in request.messages)


def message_tokens(content: str | None) -> int:
    """Tokens of one message in the sim's tokenizer."""
    return max(1, len((content or "").split())) + 4


def _pieces(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class SimCore(BatchingCore):
    kind = "sim"

    def __init__(
        self,
        name: str = "sim",
        model: str = "sim",
        *,
        t0: float = 0.005,
        a: float = 0.0001,
        b: float = 0.002,
        c: float = 0.0,
        restore_cost: float = 0.0005,
        costs: SimCosts | None = None,
        max_batch: int = 16,
        kv_capacity: int = 65536,
        context_length: int = 8192,
        prefix_cache: int = 64,
        seed: int = 0,
        default_tokens: tuple[int, int] = (8, 64),
    ) -> None:
        """``costs`` (if given) replaces ``t0``/``a``/``b``/``c``/``restore_cost``; ``prefix_cache`` is the most
        message prefixes the engine's prefix cache keeps (0: no prefix cache), within ``kv_capacity`` cells."""
        super().__init__(name, model, max_batch)
        self.costs = costs if costs is not None else SimCosts(t0=t0, a=a, b=b, c=c, restore_cost=restore_cost)
        self.kv_capacity = kv_capacity
        self.context_length = context_length
        self.seed = seed
        self.default_tokens = default_tokens
        #: cells held by running sequences beyond what they share with the prefix cache
        self._kv_used = 0
        self._cache = PrefixTree(prefix_cache)
        self._pending_restore_cost = 0.0

    @property
    def t0(self) -> float:
        return self.costs.t0

    # ------------------------------------------------------------------ sizing

    def count_tokens(self, request: LLMRequest) -> int:
        return prompt_tokens(request)

    def _reserve(self, request: LLMRequest) -> int:
        return self.count_tokens(request) + request.max_tokens

    @staticmethod
    def _links(request: LLMRequest) -> list[Link]:
        return chain((m.role, m.content or "", message_tokens(m.content)) for m in request.messages)

    def check_request(self, request: LLMRequest) -> None:
        need = self._reserve(request)
        if need > self.context_length:
            raise ContextLengthError(
                f"prompt ({self.count_tokens(request)} tokens) plus max_tokens ({request.max_tokens}) exceeds "
                f"the context of core {self.name} ({self.context_length} tokens); shorten the prompt or lower max_tokens",
                prompt_tokens=self.count_tokens(request),
                context_length=self.context_length,
            )

    def _new_cells(self, request: LLMRequest, links: list[Link] | None = None) -> int:
        """Cells a request would take beyond the cache entries that are pinned (in use) and that it shares."""
        if not self._cache.enabled or not self._cache.pinned_tokens:
            return self._reserve(request)
        links = links if links is not None else self._links(request)
        return self._reserve(request) - sum(n.tokens for n in self._cache.match(links) if n.refs > 0)

    def can_admit(self, gen: Any) -> bool:
        if self.running() >= self._max_batch:
            return False
        pending = 0
        for s in self._handed_over():
            if self._cache.enabled and "links" not in s.extra:
                s.extra["links"] = self._links(s.gen.request)
            pending += self._new_cells(s.gen.request, s.extra.get("links"))
        # unpinned cache entries are free room: they are evicted when a sequence needs the cells
        return self._kv_used + self._cache.pinned_tokens + pending + self._new_cells(gen.request) <= self.kv_capacity

    async def clear_cache(self) -> int:
        return self._cache.clear()

    def kv_cells(self) -> int | None:
        # without a prefix cache nothing is kept between calls
        return self.kv_capacity if self._cache.enabled else None

    def prefix_affinity(self, request: LLMRequest) -> int:
        return sum(n.tokens for n in self._cache.match(self._links(request)))

    # ------------------------------------------------------------------ deterministic output

    def _plan(self, request: LLMRequest) -> list[str]:
        digest = hashlib.sha256(request.model_dump_json(exclude={"extra"}).encode() + str(self.seed).encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        wants_tool = (
            request.tools
            and request.tool_choice != "none"
            and request.messages[-1].role != "tool"
        )
        if wants_tool:
            if request.tool_choice not in ("auto", "required"):
                tool = next(t for t in request.tools if t.name == request.tool_choice)
            else:
                tool = request.tools[0]
            call = {"tool_calls": [{"name": tool.name, "arguments": _example(tool.parameters, rng)}]}
            return _pieces(json.dumps(call))
        fmt = request.response_format
        if fmt is not None and fmt.type != "text":
            schema = fmt.json_schema or {"type": "object", "properties": {"answer": {"type": "string"}}}
            schema = schema.get("schema", schema)
            return _pieces(json.dumps(_example(schema, rng)))
        n = request.extra.get("sim_tokens")
        if n is None:
            n = rng.randint(*self.default_tokens)
        n = max(1, int(n))
        words = [rng.choice(_WORDS) for _ in range(n)]
        return [(" " if i else "") + w for i, w in enumerate(words)]

    # ------------------------------------------------------------------ KV accounting

    def _make_room(self) -> None:
        over = self._kv_used + self._cache.tokens - self.kv_capacity
        self._cache.evict(max(0, over))

    def _admit(self, seq: EngineSeq) -> int:
        """Reserve ``seq``'s cells, sharing what the prefix cache holds; returns the prompt tokens it skips."""
        request = seq.gen.request
        links = (seq.extra.pop("links", None) or self._links(request)) if self._cache.enabled else []
        # the links carry each message's tokens: the prompt is not tokenized again
        prompt = sum(t for _, t in links) if links else self.count_tokens(request)
        reserve = prompt + request.max_tokens
        path = self._cache.match(links)
        self._cache.pin(path)
        shared = sum(n.tokens for n in path)
        self._kv_used += reserve - shared
        self._make_room()
        # publish the rest of the prompt at once, so that sequences admitted later share it (its cells move to the cache)
        added, published = self._cache.extend(path, links[len(path) :])
        self._kv_used -= published
        seq.state["path"] = path + added
        seq.state["own"] = reserve - shared - published
        seq.prompt_tokens = prompt
        return min(shared, prompt - 1)

    # ------------------------------------------------------------------ engine

    async def _step(self, seqs: list[EngineSeq]) -> list[StepOutput]:
        prefill = 0
        context = 0
        for seq in seqs:
            if seq.prefilled:
                context += seq.prompt_tokens + seq.state["pos"]
                continue
            seq.state = {"plan": self._plan(seq.gen.request), "pos": 0}
            cached = self._admit(seq)
            seq.cached_tokens = cached
            prefill += seq.prompt_tokens - cached
            context += cached
        cost = self.costs.step(prefill_tokens=prefill, batch=len(seqs), context_tokens=context) + self._pending_restore_cost
        self._pending_restore_cost = 0.0
        await asyncio.sleep(cost)
        outputs = []
        for seq in seqs:
            plan, pos = seq.state["plan"], seq.state["pos"]
            if not seq.prefilled:
                # the prefill step also yields the first token, as real engines do
                seq.prefilled = True
            seq.state["pos"] = pos + 1
            outputs.append(StepOutput(seq=seq, text=plan[pos], tokens=1, eos=pos + 1 >= len(plan)))
        return outputs

    def _snapshot(self, seq: EngineSeq) -> Snapshot:
        state = {"pos": seq.state["pos"], "plan": seq.state["plan"]}
        return Snapshot(gen_id=seq.id, core=self.name, state=state, nbytes=64 * (seq.prompt_tokens + seq.n_generated))

    def _restore(self, seq: EngineSeq, snapshot: Snapshot) -> None:
        seq.state = {"pos": snapshot.state["pos"], "plan": snapshot.state["plan"]}
        self._admit(seq)
        self._pending_restore_cost += self.costs.restore_cost
        seq.prefilled = True

    def _release(self, seq: EngineSeq) -> None:
        if seq.state is None:
            return
        path: list[Node] = seq.state.get("path", [])
        self._kv_used -= seq.state.get("own", 0)
        if seq.finish in ("stop", "length") and path and seq.text:
            # keep the answer's cells: the agent's next call starts with this conversation (vLLM APC, SGLang radix)
            answer = link_after(path[-1].key, "assistant", seq.text, message_tokens(seq.text))
            self._cache.unpin(self._cache.extend(path, [answer])[0])
        self._cache.unpin(path)
        seq.state = None
        self._make_room()
