"""The sim core: a deterministic virtual-clock engine for tests and scheduler studies.

One step costs ``t0 + a * prefill_tokens + b * batch_size`` seconds of the
loop's clock (``asyncio.sleep``), so under :class:`aios_core.clock.VirtualTimeLoop`
a study of thousands of agents runs in seconds and is exactly repeatable for a
seed, while on a real loop it behaves like a slow engine in real time. KV
capacity is bounded: a sequence reserves ``prompt + max_tokens`` tokens.

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
from collections import OrderedDict
from typing import Any

from aios_core.cores.base import Snapshot
from aios_core.cores.batching import BatchingCore, EngineSeq, StepOutput
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


def prompt_tokens(request: LLMRequest) -> int:
    """The sim's tokenizer: a word is a token, plus four tokens of chat markup per message."""
    return sum(max(1, len((m.content or "").split())) + 4 for m in request.messages)


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
        restore_cost: float = 0.0005,
        max_batch: int = 16,
        kv_capacity: int = 65536,
        context_length: int = 8192,
        prefix_cache: int = 64,
        seed: int = 0,
        default_tokens: tuple[int, int] = (8, 64),
    ) -> None:
        super().__init__(name, model, max_batch)
        self.t0, self.a, self.b, self.restore_cost = t0, a, b, restore_cost
        self.kv_capacity = kv_capacity
        self.context_length = context_length
        self.seed = seed
        self.default_tokens = default_tokens
        self._kv_used = 0
        self._prefixes: OrderedDict[str, int] = OrderedDict()
        self._prefix_slots = prefix_cache
        self._pending_restore_cost = 0.0

    # ------------------------------------------------------------------ sizing

    def count_tokens(self, request: LLMRequest) -> int:
        return prompt_tokens(request)

    def _reserve(self, request: LLMRequest) -> int:
        return self.count_tokens(request) + request.max_tokens

    def check_request(self, request: LLMRequest) -> None:
        need = self._reserve(request)
        if need > self.context_length:
            raise ContextLengthError(
                f"prompt ({self.count_tokens(request)} tokens) plus max_tokens ({request.max_tokens}) exceeds "
                f"the context of core {self.name} ({self.context_length} tokens); shorten the prompt or lower max_tokens",
                prompt_tokens=self.count_tokens(request),
                context_length=self.context_length,
            )

    def can_admit(self, gen: Any) -> bool:
        if self.running() >= self._max_batch:
            return False
        pending = sum(self._reserve(s.gen.request) for s in self._handed_over())
        return self._kv_used + pending + self._reserve(gen.request) <= self.kv_capacity

    async def clear_cache(self) -> int:
        n = len(self._prefixes)
        self._prefixes.clear()
        return n

    def prefix_affinity(self, request: LLMRequest) -> int:
        key = self._prefix_key(request)
        return self._prefixes.get(key, 0) if key else 0

    # ------------------------------------------------------------------ deterministic output

    @staticmethod
    def _prefix_key(request: LLMRequest) -> str | None:
        first = request.messages[0]
        if first.role != "system" or not first.content:
            return None
        return hashlib.sha256(first.content.encode()).hexdigest()[:16]

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

    # ------------------------------------------------------------------ engine

    async def _step(self, seqs: list[EngineSeq]) -> list[StepOutput]:
        prefill = 0
        for seq in seqs:
            if seq.prefilled:
                continue
            request = seq.gen.request
            seq.state = {"plan": self._plan(request), "pos": 0}
            self._kv_used += self._reserve(request)
            seq.prompt_tokens = self.count_tokens(request)
            key = self._prefix_key(request)
            cached = 0
            if key is not None:
                system_tokens = max(1, len((request.messages[0].content or "").split())) + 4
                if key in self._prefixes:
                    cached = self._prefixes[key]
                    self._prefixes.move_to_end(key)
                else:
                    self._prefixes[key] = system_tokens
                    while len(self._prefixes) > self._prefix_slots:
                        self._prefixes.popitem(last=False)
            seq.cached_tokens = cached
            prefill += seq.prompt_tokens - cached
        cost = self.t0 + self.a * prefill + self.b * len(seqs) + self._pending_restore_cost
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
        self._kv_used += self._reserve(seq.gen.request)
        self._pending_restore_cost += self.restore_cost
        seq.prefilled = True

    def _release(self, seq: EngineSeq) -> None:
        if seq.state is not None:
            self._kv_used -= self._reserve(seq.gen.request)
            seq.state = None
