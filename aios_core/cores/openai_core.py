"""The openai core: an OpenAI-compatible server (vLLM, SGLang, Ollama, llama-server, a hosted API) as a kernel core.

This is how AIOS scales past one machine: each endpoint is a core, several
endpoints serving one model form one pool, and the kernel's scheduler decides
what each of them runs. The server batches internally, so this core is not a
:class:`~aios_core.cores.batching.BatchingCore`; it keeps up to ``max_batch``
streams open at once (the per-core concurrency limit) and meters every streamed
token for the scheduler.

Failures: before the first token a failed request is retried here with
exponential backoff (connection refused, timeouts, 429, 5xx), except that a
server which failed before and still refuses connections fails at once; when the
retries are spent, or when a stream breaks after output was sent, the stream ends
with a retryable :class:`~aios_core.errors.CoreError` so the pool can move the
request to another core (from scratch before the first token; after it, another
core continues the answer from the text already streamed). Requests the server
refuses (4xx) fail at once with the server's message; a context overflow becomes
a ContextLengthError.

Routing: the core remembers the message prefixes it sent and the replies it got
(:mod:`~aios_core.cores.remote_prefixes`), so :meth:`prefix_affinity` sends a
conversation's next turn back to the server that holds its KV, and it measures
the server's prefill and decode-step costs from its streams
(:mod:`~aios_core.cores.engine_speed`), so the pool can weigh that cache hit
against a busy server.

Preemption (only with the kernel's ``preempt_recompute``: a resume costs the
server a prefill of prompt and text, so ``supports_snapshot`` is False and the
pool leaves these generations running by default): :meth:`preempt` closes the
HTTP stream at once (the server stops generating when the client goes away)
and the stream ends with a ``preempted`` chunk whose snapshot holds the text
generated so far (``Snapshot.data`` is None: nothing but text is kept).
Resuming sends the conversation plus that text as the start of the answer,
in one of three ways chosen by ``continuation``:

- ``"completion"``: the prompt is rendered here with ``chat_template`` (a Jinja
  chat template, as in a model's ``tokenizer_config.json``) and the text so far
  is appended; ``/v1/completions`` continues it token for token. Servers with a
  prefix cache (llama.cpp, vLLM, SGLang) reuse the KV of that prefix.
- ``"continue_final_message"``: the chat endpoint with the partial answer as the
  last assistant message and vLLM/SGLang's ``continue_final_message=True,
  add_generation_prompt=False``, which continue it in the server's own template.
- ``"prefill"``: the partial answer as the last assistant message and nothing
  else. Servers that treat a trailing assistant message as a prefix to continue
  (llama-server, Ollama, several hosted APIs) continue it; others start a new
  reply after it, so the answer is the text so far plus a fresh continuation.
  That is the limitation of servers without continuation support.

``"auto"`` picks ``completion`` when a ``chat_template`` is given, else ``prefill``.
Requests that offer tools always resume through the chat endpoint (the
completions endpoint knows no tools), and a generation whose tool-call deltas
have started is not preempted: a server cannot continue half a tool call, so
:meth:`preempt` leaves it running.

Completion tokens are counted one per streamed delta and corrected by the
server's ``usage`` when it sends one (``stream_options.include_usage``); they
add up across the parts of a preempted and resumed generation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal

from aios_core.cores.base import Chunk, CoreStats, Generation, LLMCore, Snapshot
from aios_core.cores.engine_speed import EngineSpeed
from aios_core.cores.openai_wire import (
    FINISH_REASONS,
    PromptRenderer,
    ToolCallAssembler,
    chat_arguments,
    classify_error,
    refused_connection,
    retry_after,
)
from aios_core.cores.remote_prefixes import ConversationIndex
from aios_core.cores.slot_leases import PauseClock, SlotLeases, lease_seconds
from aios_core.errors import ConfigError, ContextLengthError, CoreError
from aios_core.syscalls import LLMRequest, Message

log = logging.getLogger(__name__)

Continuation = Literal["auto", "completion", "continue_final_message", "prefill"]

_INTERRUPTED = object()
_END = object()


@dataclass(eq=False)
class _RemoteGen:
    """One generation streamed from the server, across its retries and (via the snapshot) its resumptions."""

    gen: Generation
    #: text and completion tokens generated so far, including parts before a preemption
    text: str = ""
    tokens: int = 0
    prompt_tokens: int = 0
    resumes: int = 0
    reported_prompt: bool = False
    tools_started: bool = False
    finishing: bool = False
    want: Literal["preempt", "cancel"] | None = None
    interrupt: asyncio.Event = field(default_factory=asyncio.Event)
    #: for the engine's speed: when this attempt was sent, when its first and latest tokens came, the batch at the first
    sent_at: float = 0.0
    first_at: float | None = None
    last_at: float | None = None
    first_batch: int = 0
    #: whether the program may get a lease when this generation ends (``keep_slots``)
    lease_on_end: bool = False


@dataclass
class _Part:
    """What one HTTP stream (one attempt) produced."""

    tokens: int = 0
    emitted: bool = False
    finish: str | None = None
    usage: Any = None
    calls: ToolCallAssembler = field(default_factory=ToolCallAssembler)


#: seconds at most a llama-server slot is held for its agent's next turn under ``keep_slots = "auto"``: the scale-out
#: study's setting (docs/benchmarks.md, "Slots held across tool calls"), a few tool calls' worth
AUTO_KEEP_SLOTS = 5.0

#: under ``keep_slots = "auto"``, seconds between two questions to a server whose ``/props`` did not answer (it was
#: down or still loading its model): it is asked again once a call streams from it, then at most this often
PROPS_RETRY_SECONDS = 30.0


class OpenAICore(LLMCore):
    kind = "openai"
    continues_text = True
    #: a preempted answer resumes from its text: the server prefills prompt and text again (unless its cache kept them)
    supports_snapshot = False

    def __init__(
        self,
        name: str = "openai",
        model: str | None = None,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        max_batch: int = 8,
        timeout: float = 60.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        context_length: int | None = None,
        continuation: Continuation = "auto",
        chat_template: str | None = None,
        stream_usage: bool = True,
        extra_body: dict[str, Any] | None = None,
        prefix_cache: int = 4096,
        kv_cells: int | None = None,
        keep_slots: float | Literal["auto"] = "auto",
        batch_by_speed: bool = False,
    ) -> None:
        """Options, as in a ``[[cores]] kind = "openai"`` table:

        - ``base_url``: the server's OpenAI API root (ending in ``/v1``); ``model``: the
          served model's name (None: the first one ``/v1/models`` lists at start).
        - ``api_key``: defaults to ``$OPENAI_API_KEY``, else ``"none"`` (local servers ignore it).
        - ``max_batch``: streams open at once; ``timeout``: seconds to connect and between two
          streamed chunks; ``max_retries``/``backoff``: retries before the first token.
        - ``context_length``: lets the kernel refuse prompts that cannot fit before queueing them.
        - ``continuation``/``chat_template``: how a preempted generation resumes (module docstring).
        - ``stream_usage``: ask for the final usage chunk (turn off for servers that reject
          ``stream_options``); ``extra_body``: extra JSON fields of every request (e.g. ``top_k``).
        - ``prefix_cache``: message prefixes (and replies) remembered as sent to this server, so
          that a conversation's next turn is routed back to the server holding its KV (0: off).
        - ``kv_cells``: tokens the server's KV cache holds (vLLM: ``num_gpu_blocks * block_size``, SGLang:
          ``max_total_num_tokens``), so that the scheduler keeps the conversations of the programs in
          flight within it (load control); None: not known, none. Leave it unset for a server that keeps
          evicted prompts in host RAM (llama-server's ``--cache-ram``, vLLM with CPU offloading): there an
          evicted conversation is copied back, not prefilled again.
        - ``keep_slots``: for llama-server. Seconds at most that a finished call's slot is held for its
          program's next call, so that no other call overwrites its conversation meanwhile (0: off;
          ``"auto"``: :data:`AUTO_KEEP_SLOTS` when the server answers ``/props`` as llama-server does, else
          off). ``max_batch`` should equal the server's ``-np``. See :mod:`~aios_core.cores.slot_leases`.
        - ``batch_by_speed``: start no more streams at once than the batch at which the server, as measured
          here, makes the most tokens a second for the work waiting (a CPU llama-server decodes two or three
          streams slower in all than one). Off by default (fill ``max_batch``): in the scale-out study it
          measured no faster than filling every slot (docs/benchmarks.md, "Batch sizes the engine is slow
          at"). See :meth:`EngineSpeed.best_batch`.
        """
        super().__init__(name, model or "")
        if max_batch < 1:
            raise ConfigError(f"core {name}: max_batch must be at least 1")
        if timeout <= 0:
            raise ConfigError(f"core {name}: timeout must be positive")
        if max_retries < 0:
            raise ConfigError(f"core {name}: max_retries must be 0 or more")
        if prefix_cache < 0:
            raise ConfigError(f"core {name}: prefix_cache must be 0 or more (got {prefix_cache})")
        if kv_cells is not None and (isinstance(kv_cells, bool) or not isinstance(kv_cells, int) or kv_cells < 1):
            raise ConfigError(f"core {name}: kv_cells must be a whole number of tokens >= 1, or unset (got {kv_cells!r})")
        if keep_slots != "auto" and (isinstance(keep_slots, bool) or not isinstance(keep_slots, (int, float)) or not (0 <= keep_slots < math.inf)):
            raise ConfigError(f"core {name}: keep_slots must be 0 (off), a number of seconds or \"auto\" (got {keep_slots!r})")
        if not isinstance(batch_by_speed, bool):
            raise ConfigError(f"core {name}: batch_by_speed must be true or false (got {batch_by_speed!r})")
        if continuation not in ("auto", "completion", "continue_final_message", "prefill"):
            raise ConfigError(f"core {name}: continuation must be auto, completion, continue_final_message or prefill, not {continuation!r}")
        if continuation == "completion" and not chat_template:
            raise ConfigError(f"core {name}: continuation 'completion' renders the prompt here and needs chat_template")
        self.base_url = base_url
        self.api_key = api_key if api_key is not None else (os.environ.get("OPENAI_API_KEY") or "none")
        self._max_batch = max_batch
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.context_length = context_length
        self.continuation: Continuation = "completion" if continuation == "auto" and chat_template else continuation
        if self.continuation == "auto":
            self.continuation = "prefill"
        try:
            self._renderer = PromptRenderer(chat_template) if chat_template else None
        except ValueError as exc:
            raise ConfigError(f"core {name}: {exc}") from None
        self.stream_usage = stream_usage
        self.extra_body = dict(extra_body or {})
        self._client: Any = None
        self._slots: asyncio.Semaphore | None = None
        self._flights: dict[str, _RemoteGen] = {}
        #: the flights here whose current attempt has not streamed its first token yet (their prompt is in the
        #: server's next steps): kept as they change, so that each streamed token asks in constant time
        self._awaiting_first: set[str] = set()
        self._seen = ConversationIndex(prefix_cache)
        #: "auto": decided at start, from what the server says it is
        self._keep_slots_auto = keep_slots == "auto"
        #: "auto" and the server has not answered what it is yet: asked again when a call streams (no sooner than this)
        self._props_unanswered = False
        self._props_next_ask = 0.0
        self._props_task: asyncio.Task[None] | None = None
        self._leases = SlotLeases(max_batch, float(keep_slots)) if not self._keep_slots_auto and float(keep_slots) > 0 else None
        self._pauses = PauseClock()
        self._lease_timers: set[asyncio.TimerHandle] = set()
        self._kv_cells = kv_cells
        self._speed = EngineSpeed()
        self.batch_by_speed = batch_by_speed
        self._stats = CoreStats(name=name, model=self.model, max_batch=max_batch)
        self._requests = 0
        self._errors = 0
        self._retries = 0
        self._busy_since: float | None = None
        #: consecutive requests that failed for good with a retryable error, and until when the core counts as down
        self._failures = 0
        self._down_until = 0.0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._client is not None:
            return
        import httpx
        import openai

        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key,
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            max_retries=0,  # retries happen here, where preemption and cancellation can interrupt them
        )
        self._slots = asyncio.Semaphore(self._max_batch)
        if not self.model:
            try:
                listing = await self._client.models.list()
                self.model = next(m.id for m in listing.data)
            except StopIteration:
                raise CoreError(f"core {self.name}: {self.base_url} serves no model; pass model=") from None
            except Exception as exc:  # noqa: BLE001
                raise CoreError(
                    f"core {self.name}: could not list the models at {self.base_url} ({classify_error(exc, core=self.name, base_url=self.base_url, model='?').message}); "
                    "start the server or pass model= explicitly"
                ) from exc
            self._stats.model = self.model
        if self._keep_slots_auto:
            await self._detect_slots()
        log.info("core %s: %s at %s, up to %d streams", self.name, self.model, self.base_url, self._max_batch)

    async def _detect_slots(self) -> None:
        """``keep_slots = "auto"``: hold slots across tool calls when the server is a llama-server (its ``/props``).

        Only llama-server ties a conversation to a slot that the next request overwrites; elsewhere held room
        would only idle. A server that says it is something else (vLLM and SGLang have no ``/props``) holds
        nothing. One that is not up yet, or still loading its model (503), holds nothing for now and is asked
        again once a call streams from it (:meth:`_mark_alive`): a kernel started before its llama-server
        holds slots once the server is up, without a restart.
        """
        import httpx

        root = self.base_url.rstrip("/").removesuffix("/v1")
        try:
            async with httpx.AsyncClient(timeout=min(self.timeout, 3.0)) as client:
                r = await client.get(f"{root}/props", headers={"Authorization": f"Bearer {self.api_key}"})
            failure = f"status {r.status_code}" if r.status_code >= 500 else None
        except httpx.HTTPError as exc:
            failure = type(exc).__name__
        self._props_unanswered = failure is not None
        if failure is not None:
            log.info("core %s: %s/props did not answer (%s): no slots held across tool calls until it does", self.name, root, failure)
            return
        try:
            props = r.json() if r.status_code == 200 else None
        except ValueError:  # an answer all the same, and not llama-server's
            props = None
        slots = props.get("total_slots") if isinstance(props, dict) and "default_generation_settings" in props else None
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            return
        self._leases = SlotLeases(self._max_batch, AUTO_KEEP_SLOTS)
        log.info("core %s: llama-server with %d slots: a finished call's slot is held up to %.0f s for its agent's next turn",
                 self.name, slots, AUTO_KEEP_SLOTS)
        if slots != self._max_batch:
            log.warning("core %s: max_batch is %d but the server has %d slots (-np): set max_batch = %d, so that the kernel "
                        "neither queues calls inside the server nor leaves slots idle", self.name, self._max_batch, slots, slots)

    async def _ask_props_again(self) -> None:
        try:
            await self._detect_slots()
        finally:
            self._props_task = None
            self._props_next_ask = time.monotonic() + PROPS_RETRY_SECONDS

    async def stop(self) -> None:
        if self._props_task is not None:
            self._props_task.cancel()
            self._props_task = None
        for timer in self._lease_timers:
            timer.cancel()
        self._lease_timers.clear()
        for g in list(self._flights.values()):
            g.want = "cancel"
            g.interrupt.set()
        # give open streams a moment to end with their ``cancelled`` chunk and close their connections
        for _ in range(100):
            if not self._flights:
                break
            await asyncio.sleep(0.01)
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # noqa: BLE001
                log.exception("core %s: closing the HTTP client failed", self.name)

    # ------------------------------------------------------------------ LLMCore

    def max_batch(self) -> int:
        return self._max_batch

    def running(self) -> int:
        return len(self._flights)

    def can_admit(self, gen: Generation) -> bool:
        if not super().can_admit(gen):
            return False
        return self._leases is None or self._leases.available(gen.program, len(self._flights), _now())

    def batch_target(self, demand: int) -> int:
        limit = super().batch_target(demand)
        return self._speed.best_batch(limit, running=self.running()) if self.batch_by_speed else limit

    def holds_slot_for(self, program: str) -> bool:
        return self._leases is not None and self._leases.leased_to(program, _now())

    def slot_holders(self) -> set[str]:
        return set() if self._leases is None else self._leases.holders(_now())

    def end_program(self, program: str) -> None:
        if self._leases is None:
            return
        self._pauses.forget(program)
        if self._leases.drop(program, _now()):
            self.capacity_freed()

    def release_slot(self, program: str) -> None:
        if self._leases is not None:
            self._leases.move_away(program, _now())

    def held_room_bound(self, gen: Generation) -> float | None:
        if self._leases is None or not super().can_admit(gen) or self.can_admit(gen):
            return None
        return self._leases.held_out_bound

    def yield_held_room(self, gen: Generation) -> bool:
        if self._leases is None or not super().can_admit(gen):
            return False
        return self._leases.make_room(gen.program, len(self._flights), _now())

    def check_request(self, request: LLMRequest) -> None:
        if self.context_length is None:
            return
        estimate = self.count_tokens(request)
        if estimate >= self.context_length:
            raise ContextLengthError(
                f"the prompt (about {estimate} tokens) does not fit the context of core {self.name} "
                f"({self.context_length} tokens); shorten the prompt",
                prompt_tokens=estimate,
                context_length=self.context_length,
            )

    def healthy(self) -> bool:
        return time.monotonic() >= self._down_until

    def _mark_failed(self) -> None:
        """Count a request lost to a retryable failure: the core is avoided for 1, 2, 4 ... up to 30 s.

        The server may come back restarted, with an empty cache: nothing it held is worth routing to.
        """
        self._seen.forget()
        if self._leases is not None:
            self._leases.clear()
        self._failures += 1
        self._down_until = time.monotonic() + min(30.0, 2.0 ** (self._failures - 1))

    def _mark_alive(self) -> None:
        self._failures = 0
        self._down_until = 0.0
        if self._props_unanswered and self._props_task is None and self._leases is None and time.monotonic() >= self._props_next_ask:
            # the server is up now: ask what it is (a call streaming from it does not wait for the answer)
            self._props_task = asyncio.get_running_loop().create_task(self._ask_props_again())

    def kv_cells(self) -> int | None:
        return self._kv_cells

    def prefix_affinity(self, request: LLMRequest) -> int:
        return self._seen.match(request.messages)

    def engine_speed(self) -> EngineSpeed:
        return self._speed

    def generate(self, gen: Generation) -> AsyncIterator[Chunk]:
        if self._client is None:
            raise CoreError(f"core {self.name} is not started")
        if gen.id in self._flights:
            raise CoreError(f"generation {gen.id} is already running on core {self.name}")
        self.check_request(gen.request)
        g = _RemoteGen(gen=gen)
        if gen.resume is not None:
            state = gen.resume.state
            g.text = state.get("text", "")
            g.tokens = int(state.get("tokens", 0))
            g.prompt_tokens = int(state.get("prompt_tokens", 0))
            g.resumes = int(state.get("resumes", 0)) + 1
            g.reported_prompt = True
            self._stats.restores += 1
        if self._leases is not None:
            now = _now()
            if gen.program and gen.resume is None:
                self._pauses.arrived(gen.program, gen.arrived if gen.arrived is not None else now)
            self._leases.take(gen.program, now)
            g.lease_on_end = True
        self._flights[gen.id] = g
        self._awaiting_first.add(gen.id)
        self._requests += 1
        if self._busy_since is None:
            self._busy_since = time.perf_counter()
        return self._serve(g)

    def preempt(self, gen_id: str) -> None:
        g = self._flights.get(gen_id)
        if g is None or g.want is not None or g.finishing:
            return
        if g.tools_started:
            log.debug("core %s: %s is streaming a tool call; it is not preempted", self.name, gen_id)
            return
        g.want = "preempt"
        g.interrupt.set()

    def cancel(self, gen_id: str) -> None:
        g = self._flights.get(gen_id)
        if g is None:
            return
        g.want = "cancel"
        g.interrupt.set()

    def stats(self) -> CoreStats:
        s = self._stats
        s.running = len(self._flights)
        busy = s.busy_seconds + (time.perf_counter() - self._busy_since if self._busy_since is not None else 0.0)
        s.extra = {"requests": self._requests, "errors": self._errors, "retries": self._retries, "tokens": s.generated_tokens,
                   "base_url": self.base_url, "busy_seconds": round(busy, 4), **self._speed.describe(),
                   "step_ms_by_batch": self._speed.steps_by_batch(),
                   **(self._leases.describe() if self._leases is not None else {})}
        return s

    # ------------------------------------------------------------------ streaming

    async def _serve(self, g: _RemoteGen) -> AsyncIterator[Chunk]:
        """Hold a concurrency slot while streaming; the slot and the flight are freed before the last chunk is passed on."""
        assert self._slots is not None
        held = False
        try:
            await self._slots.acquire()
            held = True
            async for chunk in self._attempts(g):
                if chunk.finish_reason is not None:
                    self._slots.release()
                    held = False
                    self._hold_room(g, chunk)
                    self._forget(g)
                    yield chunk
                    return
                yield chunk
        finally:
            if held:
                self._slots.release()
            self._hold_room(g, None)
            self._forget(g)

    def _hold_room(self, g: _RemoteGen, last: Chunk | None) -> None:
        """The call ended: its slot's room is held for its program when the answer ended well and holding on pays."""
        if self._leases is None or not g.lease_on_end:
            return
        g.lease_on_end = False
        program = g.gen.program
        if not program or last is None or last.finish_reason not in ("stop", "length", "tool_calls"):
            return  # preempted, cancelled or failed: the program's next step is not a turn after a tool call
        now = _now()
        self._pauses.ended(program, now)
        recompute = self._speed.prefill_seconds(g.prompt_tokens + g.tokens)
        hold = lease_seconds(self._pauses.typical(program), self._leases.max_hold, recompute_seconds=recompute, slots=self._max_batch)
        self._leases.grant(program, now, hold)
        if hold > 0:
            timer = asyncio.get_running_loop().call_later(hold, self._lease_ran_out)
            self._lease_timers.add(timer)

    def _lease_ran_out(self) -> None:
        self._lease_timers = {t for t in self._lease_timers if not t.cancelled() and t.when() > _now()}
        if self._leases is not None and self._leases.expire(_now()):
            self.capacity_freed()

    def _forget(self, g: _RemoteGen) -> None:
        if self._flights.get(g.gen.id) is g:
            del self._flights[g.gen.id]
            self._awaiting_first.discard(g.gen.id)
        if not self._flights and self._busy_since is not None:
            self._stats.busy_seconds += time.perf_counter() - self._busy_since
            self._busy_since = None

    async def _attempts(self, g: _RemoteGen) -> AsyncIterator[Chunk]:
        """Stream one generation, retrying before its first token; every terminal chunk is sent after the HTTP stream is closed."""
        request = g.gen.request
        attempt = 0
        while True:
            if g.want is not None:
                yield self._interrupted(g)
                return
            remaining = request.max_tokens - g.tokens
            if remaining <= 0:
                yield Chunk(finish_reason="length")
                return
            part = _Part()
            stream: Any = None
            terminal: Chunk | None = None
            delay = 0.0
            g.sent_at, g.first_at, g.last_at = time.perf_counter(), None, None
            self._awaiting_first.add(g.gen.id)
            try:
                opened = await self._race(self._open(g, remaining), g)
                if opened is _INTERRUPTED:
                    terminal = self._interrupted(g)
                else:
                    stream = opened
                    events = stream.__aiter__()
                    while True:
                        event = await self._race(_next(events), g) if part.finish is None else await _next(events)
                        if event is _INTERRUPTED:
                            terminal = self._interrupted(g)
                            break
                        if event is _END:
                            break
                        chunk = self._absorb(g, part, event)
                        if chunk is not None:
                            yield chunk
                    if terminal is None:
                        if part.finish is None:
                            raise CoreError(
                                f"core {self.name}: {self.base_url} ended the stream without a finish reason"
                                + (" (the connection dropped mid-answer)" if part.emitted else
                                   " before any output (the server failed on this request, e.g. a prompt longer than its context:"
                                   " set the core's context_length to refuse those before they are sent)"),
                                retryable=True,
                            )
                        terminal = self._final(g, part)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes this stream's last chunk
                if part.finish is not None:
                    # the answer was complete; only the trailing usage event was lost
                    terminal = self._final(g, part)
                else:
                    error = classify_error(exc, core=self.name, base_url=self.base_url, model=self.model)
                    self._errors += 1
                    retryable = isinstance(error, CoreError) and error.retryable
                    # a server that failed before and still refuses connections is down: the pool moves the request
                    down = self._failures > 0 and refused_connection(exc)
                    if retryable and not part.emitted and attempt < self.max_retries and g.want is None and not down:
                        delay = self._delay(attempt, exc)
                        attempt += 1
                        self._retries += 1
                        log.warning("%s (retry %d/%d in %.2f s)", error.message, attempt, self.max_retries, delay)
                    else:
                        if retryable:
                            log.warning("%s", error.message)
                            self._mark_failed()
                        terminal = Chunk(finish_reason="error", error=error)
            finally:
                if stream is not None:
                    await _close(stream)
            if terminal is not None:
                yield terminal
                return
            if await self._race(asyncio.sleep(delay), g) is _INTERRUPTED:
                yield self._interrupted(g)
                return

    async def _open(self, g: _RemoteGen, remaining: int) -> Any:
        """Open the HTTP stream of one attempt: a fresh chat request, or the continuation of ``g.text``."""
        assert self._client is not None
        request = g.gen.request
        extra_body = dict(self.extra_body)
        options: dict[str, Any] = {"stream": True}
        if self.stream_usage:
            options["stream_options"] = {"include_usage": True}
        if g.text and self.continuation == "completion" and self._renderer is not None and not request.tools:
            prompt = self._renderer.render(request) + g.text
            args: dict[str, Any] = {"model": self.model, "prompt": prompt, "max_tokens": remaining,
                                    "temperature": request.temperature, "top_p": request.top_p}
            if request.stop:
                args["stop"] = list(request.stop)
            if request.seed is not None:
                args["seed"] = request.seed
            return await self._client.completions.create(**args, **options, extra_body=extra_body or None)
        args = chat_arguments(request, self.model, remaining, prefix=g.text)
        if g.text and self.continuation == "continue_final_message":
            extra_body.update(continue_final_message=True, add_generation_prompt=False)
        return await self._client.chat.completions.create(**args, **options, extra_body=extra_body or None)

    def _absorb(self, g: _RemoteGen, part: _Part, event: Any) -> Chunk | None:
        """Account one streamed event; return the chunk to pass on (None for role-only or usage-only events)."""
        usage = getattr(event, "usage", None)
        if usage is not None:
            part.usage = usage
        choices = getattr(event, "choices", None) or []
        if not choices:
            return None
        choice = choices[0]
        delta = getattr(choice, "delta", None)
        if delta is not None:
            text = getattr(delta, "content", None) or ""
            tool_deltas = getattr(delta, "tool_calls", None)
        else:  # the completions endpoint
            text = getattr(choice, "text", None) or ""
            tool_deltas = None
        if getattr(choice, "finish_reason", None):
            part.finish = choice.finish_reason
            g.finishing = True  # too late to preempt: the answer is complete
        if tool_deltas:
            g.tools_started = True
            part.calls.add(tool_deltas)
        if not text and not tool_deltas:
            return None
        if not part.emitted:
            self._mark_alive()
        part.emitted = True
        now = time.perf_counter()
        if g.last_at is None:
            g.first_at, g.first_batch = now, len(self._flights)
            self._awaiting_first.discard(g.gen.id)
        else:
            # a stream here still waiting for its first token: llama-server likely put its prompt in this step
            self._speed.observe_step(now - g.last_at, len(self._flights), prefilling=bool(self._awaiting_first))
        g.last_at = now
        part.tokens += 1
        g.tokens += 1
        g.text += text
        self._stats.generated_tokens += 1
        chunk = Chunk(text=text, tokens=1)
        if not g.reported_prompt:
            g.reported_prompt = True
            g.prompt_tokens = self.count_tokens(g.gen.request)
            chunk.prompt_tokens = g.prompt_tokens
            self._stats.prompt_tokens += g.prompt_tokens
            self._seen.remember(g.gen.request.messages)
        return chunk

    def _final(self, g: _RemoteGen, part: _Part) -> Chunk:
        finish = FINISH_REASONS.get(part.finish or "stop", "stop")
        chunk = Chunk(finish_reason=finish)  # type: ignore[arg-type]
        usage = part.usage
        if usage is not None:
            reported = getattr(usage, "completion_tokens", None) or 0
            if reported > part.tokens:
                # servers may pack several tokens into one delta; the usage is the exact count
                chunk.tokens = reported - part.tokens
                g.tokens += chunk.tokens
                self._stats.generated_tokens += chunk.tokens
            details = getattr(usage, "prompt_tokens_details", None)
            cached = getattr(details, "cached_tokens", None) or 0
            exact_prompt = getattr(usage, "prompt_tokens", None) or 0
            if g.resumes == 0 and exact_prompt:
                self._stats.prompt_tokens += exact_prompt - g.prompt_tokens
                self._stats.cached_tokens += cached
                # the server tells its cache hit only now: the caller's usage gets it from this last chunk
                chunk.cached_tokens = cached
                if g.first_at is not None:  # not resumed: this attempt sent the prompt alone
                    self._speed.observe_first_token(g.first_at - g.sent_at, exact_prompt - cached, g.first_batch)
        if part.calls:
            try:
                chunk.tool_calls = part.calls.calls()
            except CoreError as exc:
                return Chunk(finish_reason="error", error=exc, tokens=chunk.tokens)
            chunk.finish_reason = "tool_calls"
        if g.text or chunk.tool_calls:
            # the conversation's next turn starts with this reply: route it back here
            reply = Message(role="assistant", content=g.text or None, tool_calls=chunk.tool_calls or None)
            self._seen.remember(g.gen.request.messages, reply)
        return chunk

    def _interrupted(self, g: _RemoteGen) -> Chunk:
        if g.want == "cancel":
            return Chunk(finish_reason="cancelled")
        self._stats.snapshots += 1
        state = {"text": g.text, "tokens": g.tokens, "prompt_tokens": g.prompt_tokens, "resumes": g.resumes}
        return Chunk(finish_reason="preempted", snapshot=Snapshot(gen_id=g.gen.id, core=self.name, state=state, data=None))

    # ------------------------------------------------------------------ helpers

    async def _race(self, awaitable: Awaitable[Any], g: _RemoteGen) -> Any:
        """Await ``awaitable`` unless preemption or cancellation comes first (then it is cancelled)."""
        task = asyncio.ensure_future(awaitable)
        if not g.interrupt.is_set():
            waiter = asyncio.ensure_future(g.interrupt.wait())
            try:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                task.cancel()
                raise
            finally:
                waiter.cancel()
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception:  # noqa: BLE001 - whatever the abandoned request raised no longer matters
            pass
        return _INTERRUPTED

    def _delay(self, attempt: int, exc: BaseException) -> float:
        asked = retry_after(exc)
        if asked is not None:
            return min(asked, 30.0)
        return min(self.backoff * (2**attempt), 8.0) * random.uniform(0.8, 1.2)


def _now() -> float:
    """The kernel loop's clock (the pool stamps arrivals with it); the monotonic clock outside a loop."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


async def _next(events: Any) -> Any:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return _END


async def _close(stream: Any) -> None:
    try:
        await stream.close()
    except Exception:  # noqa: BLE001 - the connection may already be gone
        log.debug("closing a stream failed", exc_info=True)

