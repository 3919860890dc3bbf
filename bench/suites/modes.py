"""The three setups every comparison alternates: two without AIOS, one with AIOS.

Without AIOS (``native``: the serial llama-cpp-python server; ``llama_server``:
llama.cpp's batching server): the framework's own concurrency; each agent calls
the backend's server itself; the environment's code runs in a sandboxed
subprocess started by the agent's program.

With AIOS (``aios``): the same agent code, with the framework patched
(``aios.patch(adapter, kernel)``) so its LLM calls are kernel syscalls,
scheduled onto the kernel's core; the environment's code runs through the
kernel's tool manager (``python`` tool: validated, access-checked,
concurrency-limited, sandboxed). Each agent runs inside ``aios.agent_scope``
so its syscalls carry its name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from aios.bench.metrics import counter_changes
from aios.bench.suites.agents.base import AgentSpec, Endpoint, Framework, Sampling
from aios.bench.suites.calls import CallRecord, HttpCallRecorder, KernelCallRecorder
from aios.bench.suites.tasks.base import ExecResult, ToolBox
from aios.bench.suites.tasks.sandbox import LocalToolBox

from aios_core.cores.batching import BatchingCore, StepTiming
from aios_core.identity import agent_scope
from aios_core.syscalls import ToolCall, ToolSyscall

#: every setup a comparison knows, in the order a first round runs them
SETUPS = ("native", "llama_server", "aios")
SETUP_LABELS = {"native": "serial server", "llama_server": "llama-server", "aios": "AIOS", "aios_ablated": "AIOS ablated"}
#: counters in a core's stats extras that only grow (the llama.cpp core's time in llama_decode and in its output
#: head, its guessed tokens): a round's JSON gets their differences, like the agents study's
_CUMULATIVE_EXTRAS = (
    "decode_seconds", "head_seconds", "head_rows", "head_close_tokens", "guesses", "guesses_accepted", "marked_rows",
    "snapshot_bytes", "kv_pauses", "restore_fallbacks", "row_pass_rows", "row_pass_seconds",
)
#: the core's own counters (``CoreStats`` fields) a round's JSON reports the growth of
_CORE_COUNTERS = ("steps", "batch_size_sum", "prompt_tokens", "cached_tokens", "snapshots", "generated_tokens", "busy_seconds")
#: values in a core's stats extras that are a state, not a count (the llama.cpp core's step cost as it prices
#: guesses): a round's JSON gets them as they were at its end
ENGINE_GAUGES = ("step_rows_head", "step_rows")
#: the setups without AIOS, each a baseline the AIOS setup is compared with (the one that counts first)
BASELINES = ("llama_server", "native")


def round_order(setups: Sequence[str], index: int) -> tuple[str, ...]:
    """The order of the setups in round ``index`` (0-based): rotated by one each round.

    Over ``len(setups)`` rounds every setup runs once in every position, so slow
    drifts of a shared machine (and the warmth of caches) hit them alike; with two
    setups this is plain alternation (A, B / B, A).
    """
    if not setups:
        raise ValueError("no setups to order")
    k = index % len(setups)
    return tuple(setups[k:]) + tuple(setups[:k])


class KernelToolBox:
    """Runs an episode's code as the agent's ``python`` tool syscall."""

    def __init__(self, kernel: Any, agent: str) -> None:
        self.kernel, self.agent = kernel, agent

    async def run_python(self, code: str, *, timeout: float) -> ExecResult:
        sc = ToolSyscall(agent=self.agent, calls=[ToolCall(name="python", arguments={"code": code, "timeout": timeout})])
        result = (await self.kernel.acall(sc))[0]
        if not result.ok:
            return ExecResult(ok=False, stdout="", stderr="", error=f"{result.error_type}: {result.error}")
        out = result.output if isinstance(result.output, dict) else {}
        ok = out.get("returncode") == 0 and not out.get("timed_out")
        return ExecResult(
            ok=ok, stdout=out.get("stdout", ""), stderr=out.get("stderr", ""), timed_out=bool(out.get("timed_out")),
            error=out.get("error"),
        )


class Mode:
    key: str
    label: str

    def __init__(self, framework: Framework, endpoint: Endpoint, sampling: Sampling) -> None:
        self.framework, self.endpoint, self.sampling = framework, endpoint, sampling

    def spec(self, name: str, system: str | None) -> AgentSpec:
        return AgentSpec(name=name, system=system, endpoint=self.endpoint, sampling=self.sampling)

    def toolbox(self, agent: str) -> ToolBox:
        raise NotImplementedError

    @contextlib.contextmanager
    def agent(self, name: str) -> Iterator[None]:
        yield

    def begin(self) -> None:
        self.framework.begin_round()

    def end(self) -> None:
        """Undo :meth:`begin` (runs even when the round failed)."""

    def take_calls(self) -> list[CallRecord]:
        raise NotImplementedError

    def engine_stats(self) -> dict[str, Any]:
        return {}


class NativeMode(Mode):
    """A framework on its own against an OpenAI-compatible server: the serial one (``native``) or llama-server."""

    key = "native"
    label = "serial server"

    def __init__(
        self, framework: Framework, endpoint: Endpoint, sampling: Sampling, *, tool_parallel: int, key: str = "native",
        cold: Callable[[], None] | None = None,
    ) -> None:
        """``cold``: empties the server's prompt caches; called as every round begins, as AIOS's cores are emptied."""
        super().__init__(framework, endpoint, sampling)
        self.key, self.label = key, SETUP_LABELS[key]
        self._cold = cold
        self.recorder = HttpCallRecorder(endpoint.base_url)
        # each agent program starts its own subprocesses: no limit beyond the machine's
        self._tools = LocalToolBox(parallel=tool_parallel)

    def toolbox(self, agent: str) -> ToolBox:
        return self._tools

    def begin(self) -> None:
        if self._cold is not None:
            self._cold()
        self.recorder.take()
        self.recorder.install()
        super().begin()

    def end(self) -> None:
        self.recorder.uninstall()

    def take_calls(self) -> list[CallRecord]:
        return self.recorder.take()


class AIOSMode(Mode):
    key = "aios"
    label = "AIOS"

    def __init__(self, framework: Framework, endpoint: Endpoint, sampling: Sampling, *, kernel: Any, recorder: KernelCallRecorder) -> None:
        super().__init__(framework, endpoint, sampling)
        self.kernel, self.recorder = kernel, recorder
        self._stats_before: dict[str, dict[str, float]] = {}
        #: per core, the round's steps that carried prompt tokens: [steps, seconds]
        self._prompt_steps: dict[str, list[float]] = {}
        self._unobserve: list[Callable[[], None]] = []

    def spec(self, name: str, system: str | None) -> AgentSpec:
        return AgentSpec(name=name, system=system, endpoint=self.endpoint, sampling=self.sampling, kernel=self.kernel)

    def toolbox(self, agent: str) -> ToolBox:
        return KernelToolBox(self.kernel, agent)

    @contextlib.contextmanager
    def agent(self, name: str) -> Iterator[None]:
        self.kernel.register_agent(name, framework=self.framework.name)
        try:
            with agent_scope(name, framework=self.framework.name):
                yield
        finally:
            self.kernel.end_agent(name)

    def begin(self) -> None:
        import aios
        from aios_core import bridge

        # every round starts with a cold prefix cache: a round must not reuse the KV of the previous one's
        # identical prompts (llama-server is restarted alike, NativeMode's ``cold``; the serial server keeps
        # only its last request's)
        for core in self.kernel.cores.values():
            bridge.run_sync(self.kernel.loop, core.clear_cache())
        self.recorder.take()
        self._stats_before = self._core_counters()
        self._prompt_steps = {}
        for name, core in self.kernel.cores.items():
            if isinstance(core, BatchingCore):  # how much of the engine's time went to steps with prompts
                self._prompt_steps[name] = tally = [0, 0.0]
                self._unobserve.append(core.observe_steps(_prompt_step_counter(tally)))
        if self.framework.adapter:
            aios.patch(self.framework.adapter, self.kernel)
        super().begin()

    def end(self) -> None:
        import aios

        if self.framework.adapter:
            aios.unpatch(self.framework.adapter)
        while self._unobserve:
            self._unobserve.pop()()

    def take_calls(self) -> list[CallRecord]:
        return self.recorder.take()

    def _core_counters(self) -> dict[str, dict[str, float]]:
        # stats() returns the core's live counters: copy them, with the cumulative engine counters of its extras
        out = {}
        for name, core in self.kernel.cores.items():
            stats = core.stats()
            counters = {k: getattr(stats, k) for k in _CORE_COUNTERS}
            counters.update((k, stats.extra[k]) for k in (*_CUMULATIVE_EXTRAS, *ENGINE_GAUGES) if isinstance(stats.extra.get(k), (int, float)))
            out[name] = counters
        return out

    def engine_stats(self) -> dict[str, Any]:
        """Batching, prefix reuse, snapshots, engine seconds and guesses during the round (differences of the core's
        counters), the steps that carried prompt tokens, and the :data:`ENGINE_GAUGES` as at the round's end."""
        out: dict[str, Any] = {}
        for name, after in self._core_counters().items():
            change = counter_changes(self._stats_before.get(name, {}), after, ENGINE_GAUGES)
            steps, prompt = change.pop("steps"), change.pop("prompt_tokens")
            batch, cached = change.pop("batch_size_sum"), change.pop("cached_tokens")
            out[name] = {
                "steps": steps,
                "mean_batch": batch / steps if steps else 0.0,
                "prefix_hit_rate": cached / prompt if prompt else 0.0,
                **change,
            }
            if name in self._prompt_steps:
                # steps with some sequence still in its prompt (prompt chunks, with whatever decoded beside them)
                steps_with_prompt, seconds = self._prompt_steps[name]
                out[name].update(prompt_steps=int(steps_with_prompt), prompt_step_seconds=round(seconds, 3))
        return out


def _prompt_step_counter(tally: list[float]) -> Callable[[StepTiming], None]:
    """A step observer adding each step that carries prompt tokens to ``tally`` ([steps, seconds])."""

    def observe(timing: StepTiming) -> None:
        if timing.prefill:
            tally[0] += 1
            tally[1] += timing.seconds

    return observe
