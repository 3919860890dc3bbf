"""One loaded model and its llama.cpp context: made, decoded and freed in the engine thread.

The core decides what goes into a step (admission, KV books, prefixes,
guesses); this module holds the llama.cpp handles that step runs on, and the
order in which they must be made and freed. The context is created with a
unified KV cache of ``n_ctx`` cells for every slot (``kv_unified``) and
``swa_full``, so that snapshots and shared prefixes stay valid beyond a
sliding window. When the core's own output layers are wanted (the greedy head,
the row pass: :class:`~aios_core.cores.llamacpp_head.OutputHead`), the context
is created with their eval callback (they are checked against llama.cpp on the
context itself); when both are refused at load the context is made again
without the callback (:meth:`LlamaContext._drop_tap`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np

from aios_core.cores.llamacpp_head import OutputHead, head_for_model, probe_tokens
from aios_core.cores.llamacpp_prompts import PromptFormat
from aios_core.cores.llamacpp_runtime import load_model
from aios_core.errors import ConfigError

__all__ = ["DecodeBatch", "LlamaContext"]

log = logging.getLogger(__name__)


class DecodeBatch:
    """A ``llama_batch`` of ``capacity`` tokens, written through numpy views (one sequence id per token)."""

    def __init__(self, capacity: int) -> None:
        self.raw = L.llama_batch_init(capacity, 0, 1)
        b = self.raw
        self.token = np.ctypeslib.as_array(b.token, shape=(capacity,))
        self.pos = np.ctypeslib.as_array(b.pos, shape=(capacity,))
        self.n_seq = np.ctypeslib.as_array(b.n_seq_id, shape=(capacity,))
        #: which rows compute logits (the greedy head reads the same flags)
        self.logits = np.ctypeslib.as_array(b.logits, shape=(capacity,))
        self._seq = [b.seq_id[i] for i in range(capacity)]

    def put(self, k: int, tokens: list[int], start: int, slot: int) -> int:
        """Write ``tokens`` at positions ``start``... of sequence ``slot`` from row ``k``, without logits; the next free row."""
        m = len(tokens)
        self.token[k : k + m] = tokens
        self.pos[k : k + m] = np.arange(start, start + m, dtype=np.int32)
        self.n_seq[k : k + m] = 1
        self.logits[k : k + m] = 0
        for j in range(k, k + m):
            self._seq[j][0] = slot
        return k + m

    def free(self) -> None:
        L.llama_batch_free(self.raw)


class LlamaContext:
    """A GGUF model, its context, its prompt format, the step's batch and the greedy head the context feeds (if any)."""

    def __init__(self, model: Any, ctx: Any, prompts: PromptFormat, batch: DecodeBatch) -> None:
        self.model, self.ctx, self.prompts, self.batch = model, ctx, prompts, batch
        self.vocab = prompts.vocab
        #: the core's own output layer for greedy rows (accepted at load), or None: llama.cpp's
        self.head: OutputHead | None = None
        #: why a head was refused at load (a slow or inexact int8 pass...), None if none was
        self.head_refused: str | None = None
        #: the head whose eval callback the context calls: it must live as long as the context
        self._tap_owner: OutputHead | None = None
        self.n_ctx: int = L.llama_n_ctx(ctx)
        #: one sequence's context: the per-sequence cells, within what the model was trained on
        self.ctx_limit: int = min(L.llama_n_ctx_seq(ctx), L.llama_model_n_ctx_train(model))

    @classmethod
    def open(
        cls, path: Path, *, n_ctx: int, n_batch: int, n_ubatch: int, n_seq_max: int, n_threads: int,
        fast_head_rows: int, template_override: str | None = None, native_tap: bool = True, row_pass: bool = True,
    ) -> LlamaContext:
        """Load ``path`` and make its context (engine thread). Everything made is freed if a later part fails."""
        model = load_model(path)
        head = (head_for_model(path, model, fast_head_rows, n_threads, max_rows=n_batch, native=native_tap, rows=row_pass)
                if fast_head_rows else None)
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_ubatch
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.swa_full = True
        cparams.kv_unified = True
        cparams.no_perf = True
        if head is not None:
            cparams.cb_eval = head.tap.callback
            cparams.cb_eval_user_data = head.tap.user_data
        ctx = L.llama_init_from_model(model, cparams)
        if not ctx:
            L.llama_model_free(model)
            raise ConfigError(f"llama.cpp could not create a context with n_ctx={n_ctx}, n_batch={n_batch}; lower them")
        try:
            self = cls(model, ctx, PromptFormat(model, L.llama_model_get_vocab(model), template_override), DecodeBatch(n_batch))
        except BaseException:
            L.llama_free(ctx)
            L.llama_model_free(model)
            raise
        # the context calls the head's tap for as long as it lives; a refused head's context is made again without it
        self._tap_owner = head
        try:
            if head is not None and head.build(ctx, self.batch.raw, probe_tokens(self.vocab, n_batch), 0):
                self.head = head
            elif head is not None:
                self.head_refused = head.refused
                self._drop_tap(model, cparams)
        except BaseException:  # the head's check failed in a way it does not report (torch, memory): free it all
            self.close()
            raise
        return self

    def _drop_tap(self, model: Any, cparams: Any) -> None:
        """Make the context again without the refused head's tap.

        ggml calls an eval callback for every node of every decode's graph (about 700 a step for Gemma 3
        270M); the Python tap's calls each take the GIL: with a Python thread busy beside it, a step of 15
        or 16 decoding rows took 12-25 % longer (``python -m aios.bench.studies.ubatch --tap --busy``,
        docs/benchmarks.md), and even the C tap is a call per node. The head was refused after the context
        was made (its check needs the context), so the context is made again.
        """
        cparams.cb_eval = L.ggml_backend_sched_eval_callback()  # none
        cparams.cb_eval_user_data = None
        ctx = L.llama_init_from_model(model, cparams)
        if not ctx:
            log.warning("llama.cpp could not make the context again without the head's tap; it stays")
            return
        L.llama_free(self.ctx)
        self.ctx = ctx
        self._tap_owner = None

    @property
    def memory(self) -> Any:
        """The context's KV memory handle (changes when the context is made again)."""
        return L.llama_get_memory(self.ctx)

    @property
    def head_description(self) -> str:
        """For the load log: whether the greedy head and the row pass are used, and which tap feeds them."""
        if self.head is None:
            return f"off ({self.head_refused})" if self.head_refused else "off"
        from aios_core.cores.llamacpp_native_tap import NativeTap

        tap = "tap in C" if isinstance(self.head.tap, NativeTap) else "tap in Python"
        greedy = "on" if self.head.head is not None else f"off ({self.head.refused})"
        rows = f"{sorted(self.head.rows.counts)} rows" if self.head.rows is not None else f"off ({self.head.rows_refused})"
        return f"greedy head {greedy}; row pass {rows}; {tap}"

    def decode(self, n_tokens: int) -> int:
        """``llama_decode`` of the batch's first ``n_tokens`` rows; llama.cpp's return code (0: done)."""
        self.batch.raw.n_tokens = n_tokens
        return int(L.llama_decode(self.ctx, self.batch.raw))

    def logits(self, row: int) -> np.ndarray:
        """Batch row ``row``'s logits as llama.cpp computes them (a view, valid until the next decode): the row
        pass's when it took the decode (:meth:`OutputHead.row_logits`), else llama.cpp's own."""
        if self.head is not None and (ours := self.head.logits(row)) is not None:
            return ours
        return np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, row), shape=(self.prompts.n_vocab,))

    def close(self) -> None:
        """Free the batch, the context and the model; the head's eval callback goes with the context that calls it."""
        self.batch.free()
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)
        self.ctx = self.model = self.vocab = None
        self.head = self._tap_owner = None
