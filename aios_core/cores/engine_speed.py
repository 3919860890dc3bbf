"""How fast one remote engine is, learned from the streams it serves, so routing can price a choice in seconds.

With several engines, a conversation's next turn is cheapest on the engine
that holds its prefix (no prefill), unless that engine is busy and another
is idle: a decode step's time grows with the batch (on a CPU, llama.cpp takes
about 19 ms for one sequence and 100 ms for eight), so a long answer can
finish sooner on the idle engine even after prefilling the whole conversation
there. Preble (Srivatsa et al., 2024) and SGLang's router make the same
trade between cache hits and load. Weighing it needs each engine's costs:
seconds per uncached prompt token, and seconds per decode step as a function
of the batch. They differ by orders of magnitude between a CPU llama-server and
a GPU vLLM, so they are measured, not configured:

- every inter-token interval of a stream is one decode step at the batch the
  engine ran then (the number of this core's streams open on it);
- the time to a stream's first token, less one step, over the prompt tokens
  the server did not have cached (its final usage says how many it had), is
  the prefill cost.

Both are medians of the latest samples: a step that also prefilled another
stream's prompt (llama-server puts prompt chunks in the decode batch) takes
many times longer, and with short answers one step in eight can be such a
step; a mean would count those prefills a second time.

The same intervals, kept per batch size without the steps that carried a
prompt, say at which batch the engine makes the most tokens a second
(:meth:`EngineSpeed.best_batch`). That is not always the largest: on a 2-core
AMD EPYC, ``llama-batched-bench`` with one thread made 72 tokens a second for
one stream of Gemma 3 270M, 43 for two, 41 for three, 70 for four and 122 for
eight (docs/benchmarks.md, "Batch sizes the engine is slow at"). With an
``openai`` core's ``batch_by_speed``, the pool admits no more streams to an
engine than the waiting work lets reach a batch it is not slow at, so two or
three calls left at the end of a run go one after another, each at the single
stream's speed. It is off by default: end to end, in the scale-out study, it
measured no faster than filling every slot.
"""

from __future__ import annotations

import statistics
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

#: weight of each new sample in a moving mean
SMOOTHING = 0.05
#: samples a median is taken over (the latest)
WINDOW = 64
#: samples needed at some batch size before the step estimate is trusted
MIN_STEPS = 8
#: prompts with fewer uncached tokens than this tell little about prefill speed (the step dominates)
MIN_PREFILL_TOKENS = 32
#: a smaller batch is kept to only when it makes this share more tokens a second than the larger one: the medians
#: are noisy (contexts of different lengths, other processes), and holding calls back on noise costs more than batching
BATCH_MARGIN = 0.1
#: seconds after which a batch size's medians are too old to hold calls back: the size is tried again, so a verdict
#: measured while the engine was briefly slow (another process, long prefills) does not stand for good
BATCH_VERDICT_SECONDS = 60.0


@dataclass
class MovingMean:
    """A plain mean over the first samples, an exponentially weighted one after (recent behaviour counts most)."""

    value: float = 0.0
    count: int = 0

    def add(self, sample: float) -> None:
        self.count += 1
        weight = max(SMOOTHING, 1.0 / self.count)
        self.value += weight * (sample - self.value)


class ProgramMeans:
    """A moving mean per program, and everyone's for a program not seen yet (pauses, answer lengths).

    A long-running kernel forgets the programs it has not seen for longest, past ``max_programs``.
    """

    def __init__(self, max_programs: int = 10_000) -> None:
        self.max_programs = max_programs
        self._per_program: OrderedDict[str, MovingMean] = OrderedDict()
        self.everyone = MovingMean()

    def add(self, program: str, sample: float) -> None:
        if program:
            mean = self._per_program.pop(program, None) or MovingMean()
            mean.add(sample)
            self._per_program[program] = mean
            while len(self._per_program) > self.max_programs:
                self._per_program.popitem(last=False)
        self.everyone.add(sample)

    def forget(self, program: str) -> None:
        self._per_program.pop(program, None)

    def typical(self, program: str) -> float | None:
        """The program's own mean; everyone's for a program not seen yet; None before any sample."""
        own = self._per_program.get(program)
        if own is not None and own.count:
            return own.value
        return self.everyone.value if self.everyone.count else None


class RecentMedian:
    """The median of the latest :data:`WINDOW` samples (computed when asked, kept until the next sample)."""

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=WINDOW)
        self._median: float | None = None
        #: monotonic time of the latest sample
        self.last_at = 0.0

    def add(self, sample: float, now: float | None = None) -> None:
        self._samples.append(sample)
        self._median = None
        self.last_at = time.monotonic() if now is None else now

    @property
    def count(self) -> int:
        return len(self._samples)

    @property
    def value(self) -> float:
        if self._median is None:
            self._median = statistics.median(self._samples)
        return self._median


@dataclass
class EngineSpeed:
    """Seconds per uncached prompt token and per decode step (by batch size) of one engine."""

    _steps: dict[int, RecentMedian] = field(default_factory=dict)
    #: the steps during which no stream waited for its first token: the engine's decoding alone, for the batch target
    _decode: dict[int, RecentMedian] = field(default_factory=dict)
    _prefill: RecentMedian = field(default_factory=RecentMedian)

    def observe_step(self, seconds: float, batch: int, now: float | None = None, *, prefilling: bool = False) -> None:
        """One inter-token interval of a stream while ``batch`` streams ran on the engine (``now``: monotonic time).

        ``prefilling``: another stream waited for its first token meanwhile, so the server likely put its prompt
        in this step. Routing prices steps as they come, prefills included; the batch target weighs decoding
        alone (at eight streams all starting at once, most steps are such prefills).
        """
        if seconds < 0 or batch < 1:
            return
        now = time.monotonic() if now is None else now
        self._steps.setdefault(batch, RecentMedian()).add(seconds, now)
        if not prefilling:
            self._decode.setdefault(batch, RecentMedian()).add(seconds, now)

    def observe_first_token(self, seconds: float, uncached_tokens: int, batch: int) -> None:
        """A stream's time to first token, once the server has said how much of its prompt it had cached."""
        step = self.step_seconds(batch)
        if uncached_tokens < MIN_PREFILL_TOKENS or step is None or seconds < 0:
            return
        self._prefill.add(max(0.0, seconds - step) / uncached_tokens)

    @property
    def ready(self) -> bool:
        """Whether both costs have been measured."""
        return self._prefill.count > 0 and self.step_seconds(1) is not None

    def step_seconds(self, batch: int) -> float | None:
        """A decode step's seconds at ``batch``: a least-squares line over the batch sizes seen (flat when only one was)."""
        seen = [(b, m) for b, m in self._steps.items() if m.count >= MIN_STEPS]
        if not seen:
            return None
        if len(seen) == 1:
            return seen[0][1].value
        weights = [m.count for _, m in seen]
        total = sum(weights)
        mean_b = sum(w * b for w, (b, _) in zip(weights, seen)) / total
        mean_t = sum(w * m.value for w, (_, m) in zip(weights, seen)) / total
        var = sum(w * (b - mean_b) ** 2 for w, (b, _) in zip(weights, seen))
        slope = max(0.0, sum(w * (b - mean_b) * (m.value - mean_t) for w, (b, m) in zip(weights, seen)) / var)
        return max(1e-6, mean_t + slope * (batch - mean_b))

    def best_batch(self, limit: int, running: int = 0, now: float | None = None) -> int:
        """The batch size, from ``running`` to ``limit``, to let the engine reach: ``limit`` unless a smaller size measured faster.

        ``limit`` is what the waiting work allows (streams running plus calls queued, at most the engine's
        slots); ``running`` streams run already and cannot be taken back, so a smaller size is no choice (they
        end by themselves). When ``limit`` itself has been measured lately, the answer is the largest recently
        measured size in that range whose tokens a second are within :data:`BATCH_MARGIN` of the best of them.
        A size not measured lately (:data:`BATCH_VERDICT_SECONDS`) holds nothing back: the engine gets to try it,
        as without this rule. So an engine whose step grows smoothly with the batch (a GPU server, the sim) is
        always filled, and one at three slow streams with a fourth call waiting takes it (three to four is faster).
        """
        limit = max(1, limit)
        low = max(1, min(running, limit))
        now = time.monotonic() if now is None else now
        recent = {b: m.value for b, m in self._decode.items()
                  if low <= b <= limit and m.count >= MIN_STEPS and now - m.last_at <= BATCH_VERDICT_SECONDS}
        if limit not in recent:
            return limit
        rates = {b: b / max(step, 1e-9) for b, step in recent.items()}
        top = max(rates.values())
        return max(b for b, rate in rates.items() if rate * (1 + BATCH_MARGIN) >= top)

    def prefill_seconds(self, tokens: int) -> float | None:
        """Seconds to prefill ``tokens`` uncached prompt tokens."""
        if self._prefill.count == 0:
            return None
        return self._prefill.value * max(0, tokens)

    def describe(self) -> dict[str, float | None]:
        """For stats: the fitted costs (None until measured)."""
        one, eight = self.step_seconds(1), self.step_seconds(8)
        return {
            "prefill_ms_per_token": None if self._prefill.count == 0 else round(self._prefill.value * 1000, 3),
            "step_ms_batch_1": None if one is None else round(one * 1000, 2),
            "step_ms_batch_8": None if eight is None else round(eight * 1000, 2),
        }

    def steps_by_batch(self) -> dict[str, float]:
        """For stats: the median decoding step in milliseconds at each batch size measured (keys are the sizes, as text)."""
        return {str(b): round(m.value * 1000, 2) for b, m in sorted(self._decode.items()) if m.count >= MIN_STEPS}


def route_cost(speed: EngineSpeed, *, uncached_tokens: int, output_tokens: int, running: int) -> float:
    """Seconds a request adds to everyone's completion on this engine: its own prefill and decode, plus the slowdown of the others.

    The request waits for its prefill and then decodes ``output_tokens`` steps at batch ``running + 1``; the
    ``running`` streams already there wait through the prefill and take each of those steps at the larger
    batch. ``speed`` must be :attr:`EngineSpeed.ready`.
    """
    prefill = speed.prefill_seconds(uncached_tokens) or 0.0
    step = speed.step_seconds(running + 1) or 0.0
    slowdown = max(0.0, step - (speed.step_seconds(running) or step)) if running else 0.0
    return prefill * (1 + running) + output_tokens * (step + running * slowdown)
