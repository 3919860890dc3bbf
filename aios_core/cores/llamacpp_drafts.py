"""Guessed tokens for the rows a llama.cpp step computes at a loss anyway or for less than they return.

Why this exists: ggml's CPU matrix products (the repacked quantized kernels) take a micro-batch's rows in
pairs and do a leftover row in a separate pass. For the output layer, Gemma 3's 262,144-token vocabulary
by 640, that pass costs more than a whole pair: on this project's reference machine a step whose
micro-batch computes logits for 3 rows took longer than one for 4, and likewise 5 against 6 and 7 against
8 (``python -m aios.bench.studies.rows``, docs/benchmarks.md). One logits row alone is a cheaper pass
(a matrix-vector product). And a step's cost grows by less per row than its average per row: from 2 to
12 logits rows it took about 36 ms plus 14 ms a row, the fixed part being what every step pays (the
model's weights read once, whatever its rows).

So a decoding step gets guessed next tokens (:class:`NgramLookup`, prompt lookup: what followed the last
place the sequence's latest n-gram appeared, copied on as far as the guess goes) for greedy sequences,
in rows right after the sequence's decoding row:

* one guess when the first micro-batch would compute an odd number (3 or more) of logits rows: the row is
  cheaper than none, so even a filler goes there when nothing matches;
* a sequence decoding alone gets one only while its guesses have been right often enough to pay for the
  second row (:data:`SOLO_ACCEPTANCE`);
* pairs of rows more while they raise the step's expected tokens per unit of cost: a pair is added when
  the tokens it is expected to keep, per row, exceed the step's expected tokens per row counted with its
  fixed part (:class:`StepCost`: the core's own fit, :data:`STEP_ROWS` until it has one). The ``j``-th
  token of a sequence's guess is kept only if the ones before it were, so its chance is the sequence's
  running acceptance to the power ``j`` (the acceptance is recorded per guessed token, given that the
  tokens before it were right). So a sequence alone with a good record gets a run of several tokens,
  and 16 sequences decoding together get few guesses more.

The same step verifies them: a guessed token is kept only if it is the token the model picks after what
comes before it, and then the model's pick after it comes too. The KV cells of the rejected ones are
removed. So a sequence's tokens are the ones one-token steps would give (up to llama.cpp's
batch-dependent rounding, see the core's "Numerics"), and each kept guess is a token for a row.

A step that would otherwise compute an odd number (3 or more) of logits rows in a micro-batch without
decoding rows to guess for gets the logits of one more prompt row (:func:`even_outputs`), computed and
ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

K = TypeVar("K")

#: n-gram lengths looked up, longest first
NGRAM_SIZES = (3, 2, 1)
#: a guess for a sequence decoding alone costs a second logits row (about a third more time, same study);
#: it is made only while the sequence's guesses have been right at least this often
SOLO_ACCEPTANCE = 0.5
#: weight of the latest guessed token in a sequence's running acceptance rate
ACCEPTANCE_WEIGHT = 0.2
#: a step's fixed cost in rows until the core has fitted its own (:class:`StepCost`): from 2 to 12 logits rows
#: a step took 36 ms + 14 ms a row on this project's reference machine (the rows study), so 36 / 14
STEP_ROWS = 2.5
#: the same when the core's greedy output head takes the step (no output layer in llama.cpp, no odd-row
#: pass), until fitted: the rows study (python -m aios.bench.studies.rows --head, 350 cells a sequence) fits
#: 23.8 + 8.6 ms a row with the int8 pass (2.8 rows); the fits of the benchmarks' runs end at 3 to 6 rows
HEAD_STEP_ROWS = 3.5
#: longest guess for one sequence in one step
MAX_GUESS = 15
#: weight a step cost fit keeps of what it saw, per step it adds (about the last 200 steps count)
STEP_COST_MEMORY = 0.995
#: a fit prices guesses only after this much weight, with steps of different sizes among it
STEP_COST_MIN_WEIGHT = 30.0
#: and a variance of the steps' rows of at least this (a quarter: half the steps one row off the other half)
STEP_COST_MIN_SPREAD = 0.25
#: and only within these bounds (a fit outside them is noise, or a machine the guess rule was not made for)
STEP_COST_ROWS_RANGE = (0.5, 16.0)


@dataclass(frozen=True)
class Guess:
    """Guessed next tokens and the length of the n-gram that matched (0: no match, one filler token)."""

    tokens: tuple[int, ...]
    match: int


class NgramLookup:
    """A sequence's tokens indexed by the n-grams that precede each position, to guess what comes next.

    It reads the sequence's own token list (which only grows) and indexes what is new at each guess, so it
    holds no copy of the tokens.
    """

    def __init__(self, tokens: list[int]) -> None:
        self._tokens = tokens
        self._indexed = 0
        self._index: dict[tuple[int, ...], int] = {}
        #: running share of this sequence's guessed tokens the model kept, each given that the ones before
        #: it in the same step were kept (starts hopeful, so a solo sequence tries a guess before its record
        #: exists)
        self.acceptance = SOLO_ACCEPTANCE

    def _catch_up(self) -> None:
        t = self._tokens
        if len(t) < self._indexed:
            raise ValueError("a sequence's tokens only grow")
        # position i is indexed under the n tokens before it once token i exists, so a lookup of the
        # sequence's own ending (which no token follows yet) finds an earlier occurrence
        for i in range(max(1, self._indexed), len(t)):
            for n in NGRAM_SIZES:
                if i >= n:
                    self._index[tuple(t[i - n : i])] = i
        self._indexed = len(t)

    def guess(self, n: int = 1) -> Guess:
        """Up to ``n`` tokens: what followed the latest earlier occurrence of the longest matching ending, and on.

        The copy runs on into the tokens it copies (as an LZ77 match does), so a sequence repeating a
        short pattern gets the pattern repeated.
        """
        self._catch_up()
        t = self._tokens
        for size in NGRAM_SIZES:
            if len(t) <= size:
                continue
            i = self._index.get(tuple(t[-size:]))
            if i is not None:
                out: list[int] = []
                for j in range(max(1, n)):
                    at = i + j
                    out.append(t[at] if at < len(t) else out[at - len(t)])
                return Guess(tuple(out), size)
        return Guess((t[-1] if t else 0,), 0)

    def record(self, accepted: bool) -> None:
        self.acceptance += ACCEPTANCE_WEIGHT * (float(accepted) - self.acceptance)


class StepCost:
    """A step's fixed cost in rows, fitted from the core's own decoding steps (seconds against rows).

    The guess rule weighs a row against the step's fixed part (see the module docstring). That ratio depends
    on the machine, the model and the contexts (attention grows with them), so the core measures it: a
    least-squares line through the recent decoding steps (prompt-free, each with its rows and seconds),
    older ones weighing less (:data:`STEP_COST_MEMORY`). Until the steps seen give a usable line (enough of
    them, of different sizes, a positive slope and fixed part), it answers ``default``.
    """

    def __init__(self, default: float) -> None:
        self.default = default
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    @property
    def weight(self) -> float:
        """The steps the fit holds, older ones counted less (:data:`STEP_COST_MEMORY`)."""
        return self._w

    def add(self, rows: int, seconds: float) -> None:
        m = STEP_COST_MEMORY
        self._w = m * self._w + 1.0
        self._x = m * self._x + rows
        self._y = m * self._y + seconds
        self._xx = m * self._xx + rows * rows
        self._xy = m * self._xy + rows * seconds

    def fit(self) -> tuple[float, float] | None:
        """``(fixed seconds, seconds a row)`` of the recent steps, or None while they do not give a usable line."""
        if self._w < STEP_COST_MIN_WEIGHT:
            return None
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var = self._xx / self._w - mean_x * mean_x
        if var < STEP_COST_MIN_SPREAD:  # (nearly) every step had the same rows: the line is not determined
            return None
        slope = (self._xy / self._w - mean_x * mean_y) / var
        fixed = mean_y - slope * mean_x
        if slope <= 0 or fixed <= 0:
            return None
        return fixed, slope

    def rows(self) -> float:
        """The fixed part in rows: the fit's, else ``default``."""
        fit = self.fit()
        if fit is None:
            return self.default
        low, high = STEP_COST_ROWS_RANGE
        return min(high, max(low, fit[0] / fit[1]))


def first_ubatch_logits(rows: int, prompts: Sequence[tuple[int, bool]], n_ubatch: int) -> int:
    """Logits rows the first micro-batch computes.

    The core lays a batch out as llama.cpp splits it: ``rows`` decoding and guess rows first (logits for
    each), then each prompt chunk as ``(rows, ends)``, whose last row has logits when the prompt ends there.
    """
    outputs, row = min(rows, n_ubatch), rows
    for n, ends in prompts:
        row += n
        if row > n_ubatch:
            break
        outputs += ends
    return outputs


@dataclass(frozen=True)
class _Row:
    value: float
    at: int
    match: int
    key: object
    token: int


def plan_guesses(
    candidates: Sequence[tuple[K, NgramLookup, int]],
    decoding: int,
    prompts: Sequence[tuple[int, bool]],
    n_ubatch: int,
    room: int,
    *,
    step_rows: float = STEP_ROWS,
    even: bool = True,
) -> dict[K, list[int]]:
    """Which sequences get guessed tokens this step, and the tokens.

    ``candidates`` are the greedy decoding sequences as ``(key, lookup, longest guess allowed)``;
    ``decoding`` and ``prompts`` lay out the batch as :func:`first_ubatch_logits` reads it; ``room`` guess
    rows are left in the batch, and all go in the first micro-batch. Its logits rows end up even (or stay
    one): the first row goes to the guess most likely kept (the longest match breaks ties), a filler if it
    evens out 3 or more rows, only a good record if the sequence decodes alone; then pairs of rows, while
    the tokens a pair is expected to keep exceed what two rows of the step make (see the module docstring).
    ``step_rows`` is the step's fixed cost in rows; ``even`` False (llama.cpp computes no output layer for this
    step, see the core's "Greedy output head") drops the evening row and adds rows one at a time.
    """
    base = first_ubatch_logits(decoding, prompts, n_ubatch)
    rows: list[_Row] = []
    for key, lookup, longest in candidates:
        if longest < 1:
            continue
        guess = lookup.guess(min(longest, MAX_GUESS))
        p = lookup.acceptance if guess.match else 0.0
        for j, token in enumerate(guess.tokens, 1):
            rows.append(_Row(p**j, j, guess.match, key, token))
    # a sequence's tokens are worth less the further they go, so each takes its guess from the first token on
    rows.sort(key=lambda r: (-r.value, r.at, -r.match))
    room = min(room, len(rows), n_ubatch - decoding)
    take, expected = 0, float(decoding)
    if not even:
        while take < room and rows[take].value > expected / (decoding + take + step_rows):
            take, expected = take + 1, expected + rows[take].value
    else:
        if base % 2 and room and (base >= 3 or rows[0].value >= SOLO_ACCEPTANCE):
            if first_ubatch_logits(decoding + 1, prompts, n_ubatch) % 2 == 0:
                take, expected = 1, expected + rows[0].value
        while take + 2 <= room:
            pair = rows[take].value + rows[take + 1].value
            if pair <= 2 * expected / (decoding + take + step_rows):
                break
            if first_ubatch_logits(decoding + take + 2, prompts, n_ubatch) % 2:
                break
            take, expected = take + 2, expected + pair
    planned: dict[K, list[int]] = {}
    for r in rows[:take]:
        planned.setdefault(r.key, []).append(r.token)  # type: ignore[arg-type]
    return planned


def even_outputs(logits: np.ndarray, n_rows: int, n_ubatch: int) -> int:
    """Mark one more row in every micro-batch whose logits rows are odd and at least 3; how many were marked.

    ``logits`` is the batch's 0/1 output flags (llama.cpp's ``batch.logits``), changed in place. A marked
    row's logits are computed and not read. Only rows without logits can be marked, so a micro-batch of
    decoding rows alone is evened out by a guess (see the module docstring), not here.
    """
    marked = 0
    for s in range(0, n_rows, n_ubatch):
        window = logits[s : min(s + n_ubatch, n_rows)]
        n = int(window.sum())
        if n >= 3 and n % 2 == 1:
            free = np.flatnonzero(window == 0)
            if free.size:
                window[free[-1]] = 1
                marked += 1
    return marked
