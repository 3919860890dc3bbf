"""The embedded core's greedy output head: the argmax of a Q8_0 output layer from an int8 pass and exact close tokens.

Without the model: activations quantized as ggml quantizes them; picks equal to the exact argmax of the Q8_0
product, with and without float dimensions, including rows built so that the int8 pass alone would pick
another token, with banned tokens and with every token tied; a pass that is not exact, or slower than the
output layer it stands in for, refused; the output
matrix found in a GGUF written here (and none for another type). With the model: a core whose head takes every
greedy decode gives the plain core's text, one row per micro-batch (where numbers do not depend on the batch)
and with several sequences (a row read from the wrong place changes it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import numpy as np
import pytest

from aios_core.cores import llamacpp_head
from aios_core.cores.llamacpp_head import (
    Q8_0_BLOCK,
    GreedyHead,
    HiddenTap,
    InexactPass,
    OutputHead,
    SlowPass,
    largest_dims,
    output_matrix,
    quantize_q8_0,
    requantize_rows,
)

N_EMBD = 64
N_VOCAB = 3000


def q8_0_blocks(weights: np.ndarray) -> np.ndarray:
    """The GGUF bytes of a float32 matrix quantized to Q8_0, shaped (rows, blocks, 34)."""
    gguf = pytest.importorskip("gguf")
    raw = gguf.quants.quantize(weights.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    return raw.reshape(weights.shape[0], weights.shape[1] // Q8_0_BLOCK, 2 + Q8_0_BLOCK)


def q8_0_activations(hidden: np.ndarray) -> np.ndarray:
    """The activations ggml multiplies (each row quantized to Q8_0), in float64."""
    q, qscale = quantize_q8_0(hidden)
    return (q.reshape(len(q), -1, Q8_0_BLOCK).astype(np.float64) * qscale[:, :, None].astype(np.float64)).reshape(len(q), -1)


def exact_logits(blocks: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """The Q8_0 product's logits in float64, written independently of the head: dequantize both sides."""
    scales = blocks[:, :, :2].copy().view(np.float16)[:, :, 0].astype(np.float64)
    values = blocks[:, :, 2:].copy().view(np.int8).astype(np.float64)
    weights = (values * scales[:, :, None]).reshape(blocks.shape[0], -1)
    return q8_0_activations(hidden) @ weights.T


def pass_alone(head: GreedyHead, hidden: np.ndarray) -> np.ndarray:
    """The logits of the head's int8 pass alone (a head without float dimensions), before any exact step."""
    torch = pytest.importorskip("torch")
    rows, scale, _ = requantize_rows(torch.from_numpy(q8_0_activations(hidden)))
    return head.int8_pass(rows.numpy()).numpy() * scale.numpy()[:, None]


@pytest.fixture(scope="module")
def matrix() -> np.ndarray:
    rng = np.random.default_rng(7)
    return q8_0_blocks(rng.standard_normal((N_VOCAB, N_EMBD)).astype(np.float32) * 0.05)


# --------------------------------------------------------------------------- without the model


def test_activations_are_quantized_as_ggml_does():
    x = np.zeros((2, 64), dtype=np.float32)
    x[0, :32] = np.linspace(-1.0, 2.54, 32)  # max |x| 2.54: scale 0.02, values x / 0.02 rounded half to even
    x[0, 32:] = 0.0  # an all-zero block: scale 0, values 0
    x[1, :] = 0.5
    q, scale = quantize_q8_0(x)
    assert q.dtype == np.int8 and scale.shape == (2, 2)
    assert scale[0, 0] == np.float32(np.float16(2.54 / 127)) and scale[0, 1] == 0
    assert q[0, 31] == 127 and q[0, 0] == round(-1.0 * 127 / 2.54) and not q[0, 32:].any()
    assert (q[1] == 127).all()


@pytest.mark.parametrize("float_dims", [None, [0, 5, 33, 63]])
def test_picks_are_the_exact_argmax_of_the_q8_0_product(matrix, float_dims):
    head = GreedyHead(matrix, float_dims)
    rng = np.random.default_rng(1)
    hidden = rng.standard_normal((40, N_EMBD)).astype(np.float32)
    hidden[:, 5] *= 30  # one large dimension, as transformers have
    assert head.argmax(hidden).tolist() == np.argmax(exact_logits(matrix, hidden), axis=1).tolist()
    assert all(n >= 1 for n in head.last_close)


def test_the_largest_dimensions_are_found_over_rows():
    rng = np.random.default_rng(4)
    hidden = rng.standard_normal((6, N_EMBD)).astype(np.float32)
    hidden[:, 7] *= 40
    hidden[:, 3] *= 20
    hidden[2] *= 100  # one loud row does not choose alone: each row counts against its own RMS
    hidden[2, 50] = 5000
    assert largest_dims(hidden, 2).tolist() == [3, 7]


def test_a_near_tie_that_the_int8_pass_gets_wrong_is_settled_exactly():
    # token 0's two blocks have different scales: quantized again under one scale for the row, its second
    # block's values lose precision (63.5 rounds to 64) and the int8 pass misplaces it. Token 1 has one scale, so
    # the pass has it exactly; set between the two values of token 0, the pass alone picks wrong. The head must not.
    hidden = np.ones((1, N_EMBD), dtype=np.float32)
    blocks = q8_0_blocks(np.full((N_VOCAB, N_EMBD), 0.001, dtype=np.float32))
    values = blocks[:, :, 2:].view(np.int8)
    scales = blocks[:, :, :2].view(np.float16)
    values[:2] = 127
    scales[0, 0, 0], scales[0, 1, 0] = np.float16(0.02), np.float16(0.01)
    pass_0, exact_0 = pass_alone(GreedyHead(blocks), hidden)[0, 0], exact_logits(blocks, hidden)[0, 0]
    assert abs(pass_0 - exact_0) > 0.1
    scales[1, :, 0] = np.float16((pass_0 + exact_0) / 2 / (N_EMBD * 127 * q8_0_activations(hidden)[0, 0]))
    exact = exact_logits(blocks, hidden)[0]
    assert min(pass_0, exact_0) < exact[1] < max(pass_0, exact_0)
    right = int(np.argmax(exact))
    head = GreedyHead(blocks)
    assert int(np.argmax(pass_alone(head, hidden)[0])) == 1 - right  # the case is real: the pass alone picks wrong
    assert head.argmax(hidden).tolist() == [right]


def test_a_pass_that_is_not_exact_is_refused(matrix, monkeypatch):
    # a kernel whose 16-bit partial sums saturate is wrong only on large sums: emulated here on the rows the
    # load-time check builds to reach them
    exact_pass = GreedyHead.int8_pass

    def saturating(self, rows):  # noqa: ANN001, ANN202
        out = exact_pass(self, rows)
        loud = np.abs(rows.astype(np.int64)).sum(axis=1) > 127 * (rows.shape[1] - 1)
        out[loud] *= 0.999
        return out

    monkeypatch.setattr(GreedyHead, "int8_pass", saturating)
    with pytest.raises(InexactPass, match="integer product"):
        GreedyHead(matrix)


def test_a_pass_slower_than_the_output_layer_it_stands_in_for_is_refused(matrix):
    with pytest.raises(SlowPass, match="no fast int8 kernel for this CPU"):
        GreedyHead(matrix, max_pass_seconds=0.0)
    head = GreedyHead(matrix, max_pass_seconds=60.0)
    assert 0 < head.one_row_seconds() < 60.0


def test_banned_tokens_are_never_picked_and_ties_go_to_the_first(matrix):
    head = GreedyHead(matrix)
    rng = np.random.default_rng(2)
    hidden = rng.standard_normal((3, N_EMBD)).astype(np.float32)
    exact = exact_logits(matrix, hidden)
    top = np.argsort(-exact, axis=1)[:, :5]
    picks = head.argmax(hidden, [top[0], None, top[2, :1]])
    assert picks[0] == int(np.argmax(np.where(np.isin(np.arange(N_VOCAB), top[0]), -np.inf, exact[0])))
    assert picks[1] == top[1, 0] and picks[2] == top[2, 1]
    # a zero row: every logit is 0, every token is close; the first one is picked, as np.argmax does
    assert head.argmax(np.zeros((1, N_EMBD), dtype=np.float32)).tolist() == [0]
    assert head.last_close == [N_VOCAB]


def _write_gguf(path: Path, tensor: np.ndarray, qtype) -> None:  # noqa: ANN001 - a gguf enum
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "gemma3")
    if qtype == gguf.GGMLQuantizationType.F32:
        writer.add_tensor("token_embd.weight", tensor)
    else:
        raw = gguf.quants.quantize(tensor, qtype)
        writer.add_tensor("token_embd.weight", raw, raw_shape=raw.shape, raw_dtype=qtype)
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_the_output_matrix_is_read_from_the_gguf_only_when_it_is_q8_0(tmp_path, caplog):
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(5)
    weights = rng.standard_normal((N_VOCAB, N_EMBD)).astype(np.float32)
    q8 = tmp_path / "q8.gguf"
    _write_gguf(q8, weights, gguf.GGMLQuantizationType.Q8_0)
    blocks = output_matrix(q8, N_VOCAB, N_EMBD)
    assert blocks is not None
    head = GreedyHead(blocks)
    hidden = rng.standard_normal((4, N_EMBD)).astype(np.float32)
    assert head.argmax(hidden).tolist() == np.argmax(exact_logits(q8_0_blocks(weights), hidden), axis=1).tolist()
    f32 = tmp_path / "f32.gguf"
    _write_gguf(f32, weights, gguf.GGMLQuantizationType.F32)
    with caplog.at_level(logging.INFO, logger="aios_core.cores.llamacpp_head"):
        assert output_matrix(f32, N_VOCAB, N_EMBD) is None
        assert output_matrix(q8, N_VOCAB + 1, N_EMBD) is None  # not the shape the model says
    assert "not Q8_0" in caplog.text


def test_a_decode_is_taken_only_with_enough_rows_all_greedy(matrix):
    out = OutputHead(matrix, HiddenTap(N_EMBD), min_rows=4)
    assert not out.takes(8, True)  # not built yet (at load)
    out.head = GreedyHead(matrix)
    assert not out.takes(3, True) and not out.takes(8, False) and out.takes(4, True)
    assert not out.arm(False) and not out.tap.active and not out.tap.stop
    assert out.arm(True, stop=False) and out.tap.active and not out.tap.stop  # at load: llama.cpp's logits as well
    assert out.arm(True) and out.tap.active and out.tap.stop
    # no hidden states came (the graph was not stopped): llama.cpp's logits stand
    assert out.picks(np.array([1, 1, 1, 1], dtype=np.int8), [0, 1], [None, None]) is None
    assert not out.tap.active


# --------------------------------------------------------------------------- with the model

from aios_core.cores.base import Generation  # noqa: E402
from aios_core.cores.llamacpp import LlamaCppCore  # noqa: E402 - installed by scripts/setup.sh: missing fails, not skips
from aios_core.syscalls import LLMRequest, Message  # noqa: E402

PROMPTS = [
    "Repeat after me, word for word, twice: pack my box with five dozen liquor jugs.",
    "Count from 1 to 30, separated by commas.",
    "Name three colours.",
    "Write a Python function that adds two numbers.",
]


def test_a_negative_fast_head_rows_is_a_clear_error():
    from aios_core.errors import ConfigError

    with pytest.raises(ConfigError, match="fast_head_rows must be >= 0"):
        LlamaCppCore(name="bad", fast_head_rows=-1)


async def text_of(core: LlamaCppCore, request: LLMRequest) -> str:
    chunks = [c async for c in core.generate(Generation(id=uuid.uuid4().hex, request=request))]
    return "".join(c.text for c in chunks)


def requests() -> list[LLMRequest]:
    out = [LLMRequest(messages=[Message(role="user", content=p)], max_tokens=40, temperature=0.0) for p in PROMPTS]
    # never ends by itself: its end-of-turn tokens are banned, which the head must respect
    out.append(LLMRequest(messages=[Message(role="user", content="Say hi.")], max_tokens=24, temperature=0.0, extra={"ignore_eos": True}))
    return out


async def texts(fast_head_rows: int, **kw) -> tuple[list[str], LlamaCppCore]:  # noqa: ANN003
    core = LlamaCppCore(name=f"head{fast_head_rows}", n_ctx=4096, max_batch=6, n_threads=1, prefix_slots=2, fast_head_rows=fast_head_rows, **kw)
    await core.start()
    head = core.stats().extra["head"]
    if "no fast int8 kernel" in head:
        # refused as slower than llama.cpp's own output layer here; its picks are checked without the model above
        await core.stop()
        pytest.skip(f"the greedy head is not used on this CPU: {head}")
    try:
        return list(await asyncio.gather(*(text_of(core, r) for r in requests()))), core
    finally:
        await core.stop()


@pytest.mark.model
@pytest.mark.asyncio
async def test_the_head_gives_llama_cpps_text_one_row_per_micro_batch():
    plain, off = await texts(0, n_ubatch=1)
    got, on = await texts(1, n_ubatch=1)
    assert got == plain
    assert off.metrics().head_rows == 0
    m = on.metrics()
    assert m.head_rows > 100 and m.head_close_tokens >= m.head_rows, m
    assert on.stats().extra["head_rows"] == m.head_rows


@pytest.mark.model
@pytest.mark.asyncio
async def test_the_head_gives_llama_cpps_picks_for_a_batch_of_sequences(monkeypatch):
    # the default micro-batches, llama.cpp's output layer computed as well: every pick the head gives for a
    # decode it takes is llama.cpp's own argmax of the same row (a row read from the wrong place is not)
    checked: list[bool] = []
    arm, pick = OutputHead.arm, LlamaCppCore._pick

    def arm_and_compute(self, take, stop=True):  # noqa: ANN001, ANN202
        return arm(self, take, stop=False)

    def compare(self, st, row, n_generated, picks):  # noqa: ANN001, ANN202
        if picks is not None:
            checked.append(picks[row] == int(np.argmax(self._llama.logits(row))))
        return pick(self, st, row, n_generated, picks)

    monkeypatch.setattr(OutputHead, "arm", arm_and_compute)
    monkeypatch.setattr(LlamaCppCore, "_pick", compare)
    _, core = await texts(2)
    assert len(checked) > 100 and all(checked), checked.count(False)
    assert core.metrics().head_rows >= len(checked)  # rows after a wrong guess are picked for, never read
    # every decoding step the head took went into the step cost fit that prices guesses
    cost = core._step_cost[True]
    assert cost.weight > 20 and core._step_cost[False].weight == 0, (cost.weight, core._step_cost[False].weight)
    assert core.stats().extra["step_rows_head"] == round(cost.rows(), 2)


@pytest.mark.model
@pytest.mark.asyncio
async def test_a_head_that_disagrees_at_load_is_not_used(caplog, monkeypatch):
    # a head reading another width than the model's hidden states takes nothing; the load-time check sees it
    original = HiddenTap.__init__
    monkeypatch.setattr(HiddenTap, "__init__", lambda self, n_embd: original(self, n_embd + 32))
    # and the context is made again without its tap: ggml calls no Python for the decodes that follow
    calls = {"load": 0, "after": 0}
    phase = ["load"]
    on_node = HiddenTap._on_node

    def counted(self, tensor, ask, user_data):  # noqa: ANN001, ANN202
        calls[phase[0]] += 1
        return on_node(self, tensor, ask, user_data)

    monkeypatch.setattr(HiddenTap, "_on_node", counted)
    start = LlamaCppCore.start

    async def start_then_count(self):  # noqa: ANN001, ANN202
        await start(self)
        phase[0] = "after"

    monkeypatch.setattr(LlamaCppCore, "start", start_then_count)
    with caplog.at_level(logging.WARNING):
        got, core = await texts(1, n_ubatch=1, native_tap=False)  # the Python tap (the C one: test_llamacpp_native_tap)
    assert core.metrics().head_rows == 0 and "llama.cpp computes every output layer" in caplog.text
    assert calls["load"] > 0 and calls["after"] == 0, calls  # the probe ran through the tap, nothing since
    expected, _ = await texts(0, n_ubatch=1)
    assert got == expected


@pytest.mark.model
@pytest.mark.asyncio
async def test_a_head_slower_than_llama_cpps_output_layer_at_load_is_not_used(caplog, monkeypatch):
    # as on a CPU without a fast oneDNN int8 kernel (an AMD EPYC: seconds a row, where llama.cpp's output layer
    # takes milliseconds): the core starts, says why in its stats, and answers with llama.cpp's output layer
    monkeypatch.setattr(GreedyHead, "one_row_seconds", lambda self: 10.0)
    monkeypatch.setattr(llamacpp_head, "_SLOW_PASSES", {})  # what the process remembers of a slow head: this test's alone
    # the greedy head alone (the row pass is another pass: test_llamacpp_row_logits)
    core = LlamaCppCore(name="slow-head", n_ctx=4096, max_batch=2, n_threads=1, prefix_slots=2, row_pass=False)
    with caplog.at_level(logging.WARNING):
        await core.start()
    try:
        head = core.stats().extra["head"]
        assert head.startswith("off (") and "no fast int8 kernel for this CPU" in head, head
        assert "llama.cpp computes every output layer" in caplog.text
        assert await text_of(core, requests()[0])
        assert core.metrics().head_rows == 0
    finally:
        await core.stop()
    # the next core of this process is told at once (the check requantizes the whole matrix: 11 s on that EPYC)
    made = []
    monkeypatch.setattr(GreedyHead, "__init__", lambda self, *a, **kw: made.append(a))
    again = LlamaCppCore(name="slow-head-again", n_ctx=4096, max_batch=2, n_threads=1, prefix_slots=2, row_pass=False)
    await again.start()
    try:
        assert not made and again.stats().extra["head"] == head
    finally:
        await again.stop()


@pytest.mark.model
@pytest.mark.asyncio
async def test_a_head_check_that_raises_fails_the_start_and_frees_what_the_load_made(monkeypatch):
    import aios_core.cores.llamacpp_context as context

    freed: list[str] = []
    free_ctx, free_model, free_batch = context.L.llama_free, context.L.llama_model_free, context.L.llama_batch_free
    monkeypatch.setattr(context.L, "llama_free", lambda ctx: (freed.append("context"), free_ctx(ctx)))
    monkeypatch.setattr(context.L, "llama_model_free", lambda model: (freed.append("model"), free_model(model)))
    monkeypatch.setattr(context.L, "llama_batch_free", lambda batch: (freed.append("batch"), free_batch(batch)))

    def out_of_memory(self, *args):  # noqa: ANN001, ANN202
        raise MemoryError("the head's pass could not be allocated")

    monkeypatch.setattr(OutputHead, "build", out_of_memory)
    core = LlamaCppCore(name="raising", n_ctx=1024, max_batch=2, n_threads=1, prefix_slots=0)
    with pytest.raises(MemoryError, match="could not be allocated"):
        await core.start()
    assert sorted(freed) == ["batch", "context", "model"] and not core.loaded
