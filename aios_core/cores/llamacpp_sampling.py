"""Choosing tokens and turning them into text, one sequence at a time, for the llama.cpp core.

Three things a preemptible sequence needs that llama.cpp's stock sampler
chain does not give:

* **Resumable randomness.** A ``dist`` sampler keeps its RNG inside C where
  it cannot be saved, so a preempted sequence could not continue with the
  same draws. Here the random draw for the n-th generated token uses a fresh
  ``dist`` sampler seeded from ``(seed, n)``: the state to save is just
  ``seed`` and the token count.
* **Cheap grammars.** Applying a grammar to Gemma's 262k-token vocabulary
  costs tens of milliseconds, and it would stall every sequence of the batch.
  As in llama.cpp's ``common_sampler``, the token is chosen first without the
  grammar and only checked against it (microseconds); the full grammar pass
  runs only when that token is rejected.
* **Whole characters.** Token pieces are bytes and a character may span
  several tokens; an incremental UTF-8 decoder holds incomplete bytes back
  (and its pending bytes are saved with a snapshot).
"""

from __future__ import annotations

import codecs
import ctypes
import functools
import json
import re
from typing import Any

import llama_cpp as L
import numpy as np

from aios_core.cores.tool_format import tool_call_schema
from aios_core.errors import InvalidSyscallError
from aios_core.syscalls import LLMRequest

#: candidates a greedy grammar-constrained choice looks at before scanning the whole vocabulary
_GREEDY_SHORTLIST = 512
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(L.llama_token_data)

#: free text that does not open a JSON object: the "no tool call" branch of tool_choice="auto"
_PLAIN_TEXT_RULES = r"""
root ::= ws ( call-root | plain )
ws ::= [ \t\n]*
plain ::= [^{ \t\n] plain-char*
plain-char ::= [^\x00]
"""


def _schema_gbnf(schema: dict[str, Any]) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises many kinds of errors on unsupported schemas
        raise InvalidSyscallError(f"the JSON schema cannot be turned into a grammar: {exc}") from exc


@functools.lru_cache(maxsize=256)
def _grammar_from_key(kind: str, payload: str) -> str:
    schema = json.loads(payload)
    body = _schema_gbnf(schema)
    if kind != "tool_auto":
        return body
    # the schema's root becomes one branch; the other branch is plain text
    body = re.sub(r"^root ::=", "call-root ::=", body, count=1, flags=re.MULTILINE)
    return body + _PLAIN_TEXT_RULES


def grammar_for(request: LLMRequest) -> str | None:
    """The GBNF grammar that constrains ``request``'s output, or None for free text.

    * tool_choice "required" or a tool name: exactly one tool-call object
      (:func:`~aios_core.cores.tool_format.tool_call_schema` of the allowed tools);
    * tool_choice "auto": either that object or plain text that does not start
      with ``{`` - so a model that decides to call a tool cannot produce a
      malformed call, and one that answers in prose is not forced into JSON;
    * response_format json_schema / json_object: the schema / any JSON object.

    One tool call per turn, unless ``request.extra["parallel_tool_calls"]`` is true.
    """
    if request.tools and request.tool_choice != "none":
        if request.tool_choice in ("auto", "required"):
            tools = request.tools
        else:
            tools = [t for t in request.tools if t.name == request.tool_choice]
        kind = "tool_auto" if request.tool_choice == "auto" else "tool"
        schema = tool_call_schema(tools)
        if not request.extra.get("parallel_tool_calls", False):
            # one call per turn unless asked (llama-server's default too): small models otherwise repeat the call until max_tokens
            schema["properties"]["tool_calls"]["maxItems"] = 1
        return _grammar_from_key(kind, json.dumps(schema, sort_keys=True))
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema:
        schema = fmt.json_schema
        if isinstance(schema.get("schema"), dict):  # OpenAI's {"name": ..., "schema": {...}} wrapper
            schema = schema["schema"]
        return _grammar_from_key("json", json.dumps(schema, sort_keys=True))
    if fmt is not None and fmt.type == "json_object":
        return _grammar_from_key("json", json.dumps({"type": "object"}))
    return None


def _token_array(logits: np.ndarray, ids: np.ndarray | None = None) -> tuple[np.ndarray, L.llama_token_data_array]:
    """llama.cpp's candidate array over the whole vocabulary, or over ``ids`` only."""
    n = logits.shape[0] if ids is None else ids.shape[0]
    arr = np.empty(n, dtype=_TOKEN_DATA)
    arr["id"] = np.arange(n, dtype=np.int32) if ids is None else ids
    arr["logit"] = logits if ids is None else logits[ids]
    arr["p"] = 0.0
    cur = L.llama_token_data_array(data=arr.ctypes.data_as(L.llama_token_data_p), size=arr.shape[0], selected=-1, sorted=False)
    return arr, cur


def _step_seed(seed: int, n: int) -> int:
    # splitmix-style mixing so neighbouring steps get unrelated draws
    x = (seed * 0x9E3779B97F4A7C15 + n * 0xBF58476D1CE4E5B9 + 1) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 29)) & 0xFFFFFFFF


class TokenChooser:
    """Picks each next token of one sequence: greedy at temperature 0, else seeded top-p sampling; optional grammar."""

    def __init__(
        self, vocab: Any, n_vocab: int, *, temperature: float, top_p: float, seed: int, grammar: str | None,
        banned: np.ndarray | None = None,
    ) -> None:
        self.vocab = vocab
        self.n_vocab = n_vocab
        #: tokens never chosen (the end-of-turn tokens of a request with ``ignore_eos``)
        self.banned = banned if banned is not None and banned.size else None
        self.greedy = temperature <= 0.0
        self.seed = seed
        self._chain = None
        self._grammar = None
        if not self.greedy:
            self._chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
            L.llama_sampler_chain_add(self._chain, L.llama_sampler_init_top_p(top_p, 1))
            L.llama_sampler_chain_add(self._chain, L.llama_sampler_init_temp(temperature))
        if grammar is not None:
            smpl = L.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            if not smpl:
                self.free()
                raise InvalidSyscallError("llama.cpp could not parse the output grammar built for this request")
            self._grammar = smpl

    @property
    def verifies_guesses(self) -> bool:
        """Whether a guessed token can be checked against this chooser's pick after the fact: greedy, no grammar
        (a grammar's state moves with every token it accepts, so a rejected guess would have moved it)."""
        return self.greedy and self._grammar is None

    # ------------------------------------------------------------------ choosing

    def choose(self, logits: np.ndarray, n_generated: int) -> int:
        """The next token from this sequence's logits (``n_generated`` tokens came before it)."""
        if self.banned is not None:
            logits[self.banned] = -np.inf  # the logits are this step's scratch buffer: masking in place is safe
        token = self._pick(logits, n_generated, constrained=False)
        if self._grammar is not None and not self._grammar_allows(token, float(logits[token])):
            token = self._pick(logits, n_generated, constrained=True)
        if self._grammar is not None:
            L.llama_sampler_accept(self._grammar, token)
        return token

    def _pick(self, logits: np.ndarray, n_generated: int, *, constrained: bool) -> int:
        if self.greedy and not constrained:
            return int(np.argmax(logits))
        if self.greedy:
            # the best allowed token among the top few hundred is the best allowed token overall
            # (every token outside them has a lower logit); only if none is allowed scan everything
            top = np.argpartition(logits, -_GREEDY_SHORTLIST)[-_GREEDY_SHORTLIST:].astype(np.int32)
            for ids in (top, None):
                arr, cur = _token_array(logits, ids)
                L.llama_sampler_apply(self._grammar, ctypes.byref(cur))
                live = arr["logit"][: cur.size]
                if np.isfinite(live).any():
                    return int(arr["id"][int(np.argmax(live))])
            raise RuntimeError("the output grammar allows no token here")
        arr, cur = _token_array(logits)
        if constrained:
            L.llama_sampler_apply(self._grammar, ctypes.byref(cur))
        L.llama_sampler_apply(self._chain, ctypes.byref(cur))
        dist = L.llama_sampler_init_dist(_step_seed(self.seed, n_generated))
        try:
            L.llama_sampler_apply(dist, ctypes.byref(cur))
        finally:
            L.llama_sampler_free(dist)
        if cur.selected < 0:
            raise RuntimeError("the sampler selected no token")
        return int(arr["id"][cur.selected])

    def _grammar_allows(self, token: int, logit: float) -> bool:
        one = np.array([(token, logit, 0.0)], dtype=_TOKEN_DATA)
        cur = L.llama_token_data_array(data=one.ctypes.data_as(L.llama_token_data_p), size=1, selected=-1, sorted=False)
        L.llama_sampler_apply(self._grammar, ctypes.byref(cur))
        return bool(np.isfinite(one["logit"][0]))

    def replay(self, tokens: list[int]) -> None:
        """Advance the grammar over tokens generated before a snapshot, so a restored sequence continues in the same state."""
        if self._grammar is not None:
            for t in tokens:
                L.llama_sampler_accept(self._grammar, t)

    def free(self) -> None:
        for attr in ("_chain", "_grammar"):
            smpl = getattr(self, attr)
            if smpl is not None:
                L.llama_sampler_free(smpl)
                setattr(self, attr, None)


class Detokenizer:
    """Token ids to text, never splitting a UTF-8 character across chunks."""

    def __init__(self, vocab: Any, pending: bytes = b"") -> None:
        self.vocab = vocab
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        if pending:
            self._decoder.setstate((pending, 0))
        self._buf = ctypes.create_string_buffer(256)

    def piece(self, token: int) -> str:
        n = L.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, False)
        if n < 0:
            self._buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, False)
        return self._decoder.decode(self._buf.raw[:n])

    @property
    def pending(self) -> bytes:
        """Bytes of a character not complete yet (saved in snapshots)."""
        return self._decoder.getstate()[0]
