"""Which conversations a remote engine has computed, so the next turn goes back to it.

An OpenAI-compatible server (llama-server, vLLM, SGLang) keeps the prompts it served in
its prefix cache and does not say which. When a kernel spreads agents over several such
servers, a turn that lands on the other server prefills the whole conversation again.
This index remembers, per core, every message prefix sent there and the reply it
produced: the next turn of a conversation (its messages, the reply, a new message)
matches its longest remembered prefix on the server that holds its KV. SGLang's router
does the same with an approximate radix tree over the text.

Prefixes are chain hashes over whole messages (a changed message ends the match), sized
in estimated tokens (4 characters each plus 4 for the message's frame) because only the
server knows its tokenizer. A miss costs a prefill, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence

from aios_core.syscalls import Message

#: estimated tokens a message adds besides its text: the chat template's role markers
MESSAGE_FRAME_TOKENS = 4


def message_tokens(message: Message) -> int:
    """A tokenizer-free estimate of what a message adds to a prompt."""
    size = len(message.content or "")
    if message.tool_calls:
        size += sum(len(c.name) + len(json.dumps(c.arguments, sort_keys=True)) for c in message.tool_calls)
    return max(1, size // 4) + MESSAGE_FRAME_TOKENS


def _chain(messages: Sequence[Message]) -> list[tuple[bytes, int]]:
    """(hash of messages[: i + 1], estimated tokens of messages[: i + 1]) for every i."""
    out: list[tuple[bytes, int]] = []
    digest, tokens = b"", 0
    for m in messages:
        h = hashlib.blake2b(digest, digest_size=16)
        # NUL-separated fields: two different messages collide only if their texts hold NULs, and a
        # collision costs a routing choice, never an answer
        # (surrogatepass: a lone surrogate from a client's JSON must not break routing)
        h.update(f"{m.role}\0{m.name or ''}\0{m.tool_call_id or ''}\0{m.content or ''}".encode("utf-8", "surrogatepass"))
        if m.tool_calls:
            h.update(json.dumps([[c.id, c.name, c.arguments] for c in m.tool_calls], sort_keys=True).encode())  # ASCII
        digest = h.digest()
        tokens += message_tokens(m)
        out.append((digest, tokens))
    return out


class ConversationIndex:
    """The message prefixes one engine has seen, least recently used forgotten first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be 0 or more (got {capacity})")
        self.capacity = capacity
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, messages: Sequence[Message], reply: Message | None = None) -> None:
        """Record a prompt sent to the engine and, once known, the reply it generated after it."""
        if self.capacity == 0:
            return
        chain = _chain([*messages, reply] if reply is not None else messages)
        for digest, tokens in chain:
            self._seen[digest] = tokens
            self._seen.move_to_end(digest)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def match(self, messages: Sequence[Message]) -> int:
        """Estimated tokens of the longest prefix of ``messages`` the engine has seen (0: none)."""
        for digest, tokens in reversed(_chain(messages)):
            if digest in self._seen:
                return tokens
        return 0

    def forget(self) -> None:
        """The engine lost its cache (restarted): nothing it held is worth routing to."""
        self._seen.clear()
