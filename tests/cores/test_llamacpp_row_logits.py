"""The embedded core's row pass: llama.cpp's output layer computed with ggml's one-row kernel, for the row counts
llama.cpp's batched kernel handles slowly.

Without the model: the pass's logits are the Q8_0 product's (ggml's own kernels on a matrix written here), the
same bits on any number of threads; hidden states it cannot take are refused with a clear error; a decode is the
pass's only for the row counts it was measured faster at; without a C compiler there is no pass. With the model:
every row the pass computes in a core's batched decodes is llama.cpp's own logits of the same decode, bit for bit,
so greedy and sampled text are the plain core's; ``row_pass=False`` computes no row.
"""

from __future__ import annotations

import asyncio
import ctypes

import numpy as np
import pytest
from test_llamacpp_head import exact_logits, q8_0_blocks, requests, text_of  # tests/cores is on the path

from aios_core.cores import llamacpp_head, llamacpp_row_logits
from aios_core.cores.llamacpp_drafts import StepCost
from aios_core.cores.llamacpp_head import HiddenTap, OutputHead
from aios_core.cores.llamacpp_row_logits import RowLogits, ggml_q8_0_kernels, row_logits_for, row_logits_library

N_EMBD = 128
N_VOCAB = 777


@pytest.fixture(scope="module")
def blocks() -> np.ndarray:
    rng = np.random.default_rng(11)
    return np.ascontiguousarray(q8_0_blocks(rng.standard_normal((N_VOCAB, N_EMBD)).astype(np.float32) * 0.05))


def a_pass(blocks: np.ndarray, threads: int = 1, max_rows: int = 8) -> RowLogits:
    rows = row_logits_for(blocks, threads=threads, max_rows=max_rows)
    assert rows is not None, "cc must compile the row pass here, and llama-cpp-python ships ggml's CPU library"
    return rows


# --------------------------------------------------------------------------- without the model


def test_the_row_pass_gives_the_q8_0_products_logits_the_same_on_any_number_of_threads(blocks):
    hidden = np.random.default_rng(3).standard_normal((5, N_EMBD)).astype(np.float32)
    got = a_pass(blocks).compute(hidden).copy()
    want = exact_logits(blocks, hidden)
    # float32 sums of 4 blocks against float64: within float32's rounding of the terms
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max(), np.abs(got - want).max()
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
    # the vocabulary split over threads changes no bit (each token's sum is computed by one thread, in one order)
    assert np.array_equal(a_pass(blocks, threads=3).compute(hidden), got)
    # one row alone is the same row among five (no row depends on another)
    assert np.array_equal(a_pass(blocks).compute(hidden[2:3])[0], got[2])


def test_hidden_states_the_pass_cannot_take_are_a_clear_error(blocks):
    rows = a_pass(blocks, max_rows=4)
    with pytest.raises(ValueError, match="width 128"):
        rows.compute(np.zeros((2, N_EMBD + 32), dtype=np.float32))
    with pytest.raises(ValueError, match="at most 4 rows"):
        rows.compute(np.zeros((5, N_EMBD), dtype=np.float32))
    with pytest.raises(ValueError, match="at most 4 rows"):
        rows.compute(np.zeros((0, N_EMBD), dtype=np.float32))
    with pytest.raises(ValueError, match="not a Q8_0 matrix"):
        row_logits_for(blocks[:, :, :33].copy(), threads=1, max_rows=4)
    # after the refusals it still computes
    assert rows.compute(np.ones((1, N_EMBD), dtype=np.float32)).shape == (1, N_VOCAB)


def test_a_decode_is_the_row_pass_only_for_the_row_counts_it_was_measured_faster_at(blocks):
    rows = a_pass(blocks)
    head = OutputHead(blocks, HiddenTap(N_EMBD), 1, rows=rows)
    assert not any(head.takes_rows(k) for k in range(1, 17))  # not measured yet: nothing
    rows.counts = frozenset({2, 3, 5})
    head.rows = rows
    assert [k for k in range(1, 17) if head.takes_rows(k)] == [2, 3, 5]
    assert not head.takes(2, True)  # the greedy head is another pass, not built here
    head.arm(True)
    assert head.logits(0) is None  # nothing computed for this decode yet


def test_without_a_compiler_there_is_no_row_pass(blocks, tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_NATIVE_CACHE", str(tmp_path / "native"))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    row_logits_library.cache_clear()
    try:
        assert row_logits_for(blocks, threads=1, max_rows=4) is None
        assert not list((tmp_path / "native").glob("*"))
    finally:
        row_logits_library.cache_clear()


def test_the_kernels_are_ggml_one_row_q8_0_kernels():
    kernels = ggml_q8_0_kernels()
    assert kernels is not None and all(isinstance(k, int) and k for k in kernels)
    assert isinstance(row_logits_library(), ctypes.CDLL)


# --------------------------------------------------------------------------- with the model

from aios_core.cores.llamacpp import LlamaCppCore  # noqa: E402 - installed by scripts/setup.sh: missing fails, not skips


def sampled_requests() -> list:
    out = requests()
    for r, seed in ((out[1], 5), (out[3], 9)):  # two of them sampled, with their own seeds
        r.temperature, r.top_p, r.seed = 0.9, 0.95, seed
    return out


async def core_texts(started: list[bool] | None = None, **kw) -> tuple[list[str], LlamaCppCore]:  # noqa: ANN003
    core = LlamaCppCore(name="rows", n_ctx=4096, max_batch=6, n_threads=1, prefix_slots=2, **kw)
    await core.start()
    if started is not None:
        started.append(True)
    try:
        return list(await asyncio.gather(*(text_of(core, r) for r in sampled_requests()))), core
    finally:
        await core.stop()


@pytest.mark.model
@pytest.mark.asyncio
async def test_every_row_the_pass_computes_is_llama_cpps_own_logits_bit_for_bit(monkeypatch):
    # every row count taken (whatever this CPU measured), llama.cpp's output layer computed as well: each row a
    # sequence reads from the pass equals llama.cpp's logits of the same decode, bit for bit
    monkeypatch.setattr(llamacpp_row_logits, "GAIN", 1e9)
    monkeypatch.setattr(llamacpp_head, "_ROW_COUNTS", {})
    arm, pick = OutputHead.arm, LlamaCppCore._pick
    checked: list[bool] = []
    started: list[bool] = []

    def arm_and_compute(self, take, stop=True):  # noqa: ANN001, ANN202
        return arm(self, take, stop=stop and not started)  # the load's measurement as it is

    def compare(self, st, row, n_generated, picks):  # noqa: ANN001, ANN202
        import llama_cpp as L

        ours = self._llama.head.logits(row)
        if ours is not None:
            theirs = np.ctypeslib.as_array(L.llama_get_logits_ith(self._llama.ctx, row), shape=ours.shape)
            checked.append(bool(np.array_equal(ours, theirs)))
        return pick(self, st, row, n_generated, picks)

    monkeypatch.setattr(OutputHead, "arm", arm_and_compute)
    monkeypatch.setattr(LlamaCppCore, "_pick", compare)
    # and the guess rule's fit gets each of the pass's decoding steps as llama.cpp's output layer would have made it
    # (here a second more than the decode), not as the pass made it
    fitted: list[float] = []
    add = StepCost.add
    monkeypatch.setattr(OutputHead, "llama_output_seconds", lambda self, n_rows: 1.0)
    monkeypatch.setattr(StepCost, "add", lambda self, rows, seconds: (fitted.append(seconds), add(self, rows, seconds)))
    _, core = await core_texts(started)
    assert len(checked) > 50 and all(checked), checked.count(False)
    assert core.metrics().row_pass_rows >= len(checked)
    assert sum(s > 1.0 for s in fitted) >= 5, fitted


@pytest.mark.model
@pytest.mark.asyncio
async def test_a_core_on_the_row_pass_gives_the_plain_cores_greedy_and_sampled_text(monkeypatch):
    # one row per micro-batch (llama.cpp's numbers then do not depend on the batch), every row count the pass's
    monkeypatch.setattr(llamacpp_row_logits, "GAIN", 1e9)
    monkeypatch.setattr(llamacpp_head, "_ROW_COUNTS", {})
    plain, _ = await core_texts(n_ubatch=1, fast_head_rows=0)
    got, on = await core_texts(n_ubatch=1)
    assert got == plain
    assert on.metrics().row_pass_rows > 50, on.metrics()
    off_texts, off = await core_texts(n_ubatch=1, row_pass=False)
    assert off_texts == plain
    assert off.metrics().row_pass_rows == 0 and "row pass [" not in off.stats().extra["head"]
