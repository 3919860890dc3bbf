"""The embedded llama.cpp core's counters: what its engine measured, for benchmarks and ``stats()``.

A typed record (read with :meth:`~aios_core.cores.llamacpp.LlamaCppCore.metrics`, a copy) rather than only
``stats().extra``'s rounded values, so that a benchmark can difference two readings exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["LlamaCppMetrics"]


@dataclass
class LlamaCppMetrics:
    """What the llama.cpp engine measured since the core was made (read with :meth:`LlamaCppCore.metrics`)."""

    #: bytes of KV state copied out by snapshots
    snapshot_bytes: int = 0
    snapshot_seconds: float = 0.0
    restore_seconds: float = 0.0
    #: snapshots llama.cpp could not place back (the sequence was recomputed from its tokens)
    restore_fallbacks: int = 0
    #: sequences paused because the KV cache was full when they had to grow
    kv_pauses: int = 0
    #: time inside ``llama_decode`` and the tokens it computed there
    decode_seconds: float = 0.0
    decoded_tokens: int = 0
    #: guessed tokens verified in a step that had a logits row to spare (see :mod:`aios_core.cores.llamacpp_drafts`), and how many
    #: the model picked
    guesses: int = 0
    guesses_accepted: int = 0
    #: prompt rows whose logits were computed only to make a micro-batch's logits rows even
    marked_rows: int = 0
    #: greedy rows picked by the core's own output head (see :mod:`aios_core.cores.llamacpp_head`), the tokens it computed
    #: exactly for them, and its seconds (outside ``decode_seconds``)
    head_rows: int = 0
    head_close_tokens: int = 0
    head_seconds: float = 0.0
    #: logits rows computed by the row pass (see :mod:`aios_core.cores.llamacpp_row_logits`), and its seconds
    #: (outside ``decode_seconds``)
    row_pass_rows: int = 0
    row_pass_seconds: float = 0.0

    def copy(self) -> "LlamaCppMetrics":
        return LlamaCppMetrics(**{f.name: getattr(self, f.name) for f in fields(self)})
