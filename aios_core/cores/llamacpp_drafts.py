"""Guessed tokens for the rows a llama.cpp step would compute at a loss anyway, and the rows it should mark.

Why this exists: ggml's CPU matrix products (the repacked quantized kernels) take a micro-batch's rows in
pairs and do a leftover row in a separate pass. For the output layer, Gemma 3's 262,144-token vocabulary
by 640, that pass costs more than a whole pair: on this project's reference machine a step whose
micro-batch computes logits for 3 rows took longer than one for 4, and likewise 5 against 6 and 7 against
8 (``python -m aios.bench.studies.rows``, docs/benchmarks.md). One logits row alone is a cheaper pass
(a matrix-vector product) and stays as it is.

So a micro-batch that would compute an odd number (3 or more) of logits rows gets one more:

* when the step decodes, a guessed next token for one greedy sequence (:class:`NgramLookup`, prompt
  lookup: the token that followed the last place the sequence's latest n-gram appeared). The same step
  verifies it: the guess is kept only if it is the token the model picks after the sequence's last
  token, and then the model's pick after the guess comes too. A rejected guess's KV cell is removed. So
  a sequence's tokens are the ones one-token steps would give (up to llama.cpp's batch-dependent
  rounding, see the core's "Numerics"), and an accepted guess is a token for free;
* otherwise, the logits of one more prompt row (:func:`even_outputs`), which are computed and ignored.

A sequence decoding alone is guessed for too when its guesses have been right often enough to pay for
the second row (:data:`SOLO_ACCEPTANCE`).
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
#: weight of the latest guess in a sequence's running acceptance rate
ACCEPTANCE_WEIGHT = 0.2


@dataclass(frozen=True)
class Guess:
    """A guessed next token and the length of the n-gram that matched (0: no match, a filler)."""

    token: int
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
        #: running share of this sequence's guesses the model accepted (starts hopeful, so a solo sequence
        #: tries a guess before its record exists)
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

    def guess(self) -> Guess:
        """The token that followed the latest earlier occurrence of the longest matching ending."""
        self._catch_up()
        t = self._tokens
        for n in NGRAM_SIZES:
            if len(t) <= n:
                continue
            i = self._index.get(tuple(t[-n:]))
            if i is not None:
                return Guess(t[i], n)
        return Guess(t[-1] if t else 0, 0)

    def record(self, accepted: bool) -> None:
        self.acceptance += ACCEPTANCE_WEIGHT * (float(accepted) - self.acceptance)


def first_ubatch_logits(decoding: int, prompts: Sequence[tuple[int, bool]], n_ubatch: int) -> int:
    """Logits rows the first micro-batch computes once a guess row is added.

    The core lays a batch out as llama.cpp splits it: ``decoding`` rows first (one logits row each), then the
    guess, then each prompt chunk as ``(rows, ends)``, whose last row has logits when the prompt ends there.
    """
    outputs, row = decoding, decoding + 1
    for rows, ends in prompts:
        row += rows
        if row > n_ubatch:
            break
        outputs += ends
    return outputs


def pick_guess(candidates: Sequence[tuple[K, NgramLookup]], outputs: int) -> tuple[K, int] | None:
    """Which sequence gets a guess, and the token; None when none should.

    With ``outputs`` (the first micro-batch's logits rows) odd and 3 or more the row is cheaper than none, so
    the longest n-gram match gets it (then the best record), a filler if nothing matches. With 1 it costs a
    third more, so only a matching sequence whose guesses are mostly right gets it.
    """
    if outputs % 2 == 0 or not candidates:
        return None
    best: tuple[int, float, K, int] | None = None
    for key, lookup in candidates:
        guess = lookup.guess()
        if best is None or (guess.match, lookup.acceptance) > best[:2]:
            best = (guess.match, lookup.acceptance, key, guess.token)
    assert best is not None
    match, acceptance, key, token = best
    if outputs == 1 and (match == 0 or acceptance < SOLO_ACCEPTANCE):
        return None
    return key, token


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
