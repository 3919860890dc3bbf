"""The transformers core's mechanics on CPU with a tiny Llama built here (random weights, a word-level tokenizer).

The model and tokenizer are saved with ``save_pretrained`` into a temporary
directory and loaded back by the core exactly as a user's model directory
would be, with nothing fetched from any hub. Random weights make the text
meaningless but the mechanics exact: greedy decoding is a pure function of the
prompt, so batched output, preempted-and-resumed output and output alone can be
compared token for token.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time

import pytest

# installed by scripts/setup.sh: a missing or broken install fails these tests, it does not skip them
torch = importlib.import_module("torch")
transformers = importlib.import_module("transformers")

from aios_core.cores.base import Generation  # noqa: E402
from aios_core.cores.transformers_core import TransformersCore  # noqa: E402
from aios_core.errors import ConfigError, ContextLengthError  # noqa: E402
from aios_core.syscalls import LLMRequest  # noqa: E402

WORDS = (
    "the a an agent model kernel queue token step batch cache snapshot restore plan call tool file read write test "
    "code answer question sea sky blue red green one two three four five six seven eight nine ten and or not is are "
    "was were be to of in on at by for with from up down left right yes no hello world python torch tiny random"
).split()
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
CONTEXT = 128


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer Llama (hidden 64) and a word-level tokenizer, written as a model directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-llama")
    vocab = {tok: i for i, tok in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=SPECIALS[4:],
    )
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=CONTEXT, bos_token_id=2, eos_token_id=3, pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture
async def core(tiny_model_dir):
    c = TransformersCore("tiny", model_path=tiny_model_dir, max_batch=4, dtype="float32", threads=1)
    await c.start()
    yield c
    await c.stop()


def request(text: str, max_tokens: int = 12, **options) -> LLMRequest:
    options.setdefault("extra", {"ignore_eos": True})
    return LLMRequest(messages=[{"role": "user", "content": text}], max_tokens=max_tokens, **options)


async def run(core, gen_id: str, req: LLMRequest) -> list:
    return [c async for c in core.generate(Generation(id=gen_id, request=req))]


def text_of(chunks) -> str:
    return "".join(c.text for c in chunks)


PROMPTS = ["hello world", "the agent reads a file and writes the answer to the queue", "one two three"]


async def test_batch_of_three_generates(core):
    results = await asyncio.gather(*(run(core, f"g{i}", request(p)) for i, p in enumerate(PROMPTS)))
    for chunks in results:
        assert chunks[-1].finish_reason == "length"
        assert sum(c.tokens for c in chunks) == 12
        assert chunks[0].prompt_tokens > 0
    stats = core.stats()
    assert stats.mean_batch > 2  # the three decoded together
    assert stats.generated_tokens == 36 and core.running() == 0


async def test_greedy_batched_equals_alone(core):
    alone = [text_of(await run(core, f"a{i}", request(p, 16))) for i, p in enumerate(PROMPTS)]
    batched = await asyncio.gather(*(run(core, f"b{i}", request(p, 16)) for i, p in enumerate(PROMPTS)))
    assert [text_of(c) for c in batched] == alone
    assert len(set(alone)) == 3  # different prompts, different continuations: the rows did not mix


async def test_sequences_join_and_leave_between_steps(core):
    """A short request joins a running batch, leaves early; the long ones' text is unaffected."""
    alone = text_of(await run(core, "solo", request(PROMPTS[1], 24)))
    long_task = asyncio.ensure_future(run(core, "long", request(PROMPTS[1], 24)))
    while core.stats().generated_tokens < 40:  # the solo run's 24 plus a few of this one
        await asyncio.sleep(0.001)
    short = await run(core, "short", request(PROMPTS[0], 3))
    assert short[-1].finish_reason == "length"
    assert text_of(await long_task) == alone


async def test_snapshot_restore_is_exact(core):
    req = request(PROMPTS[1], 20)
    whole = await run(core, "w", req)
    first, last = [], None
    async for chunk in core.generate(Generation(id="p", request=req)):
        if chunk.finish_reason:
            last = chunk
            break
        first.append(chunk)
        if len(first) == 7:
            core.preempt("p")
    assert last.finish_reason == "preempted"
    snap = last.snapshot
    assert isinstance(snap.data, bytes) and snap.nbytes == len(snap.data) > 0
    assert core.running() == 0
    # the snapshot survives a trip through bytes only (what the context manager's disk spill keeps)
    from aios_core.cores.base import Snapshot

    copy = Snapshot(gen_id=snap.gen_id, core=snap.core, state=dict(snap.state), data=bytes(snap.data))
    rest = [c async for c in core.generate(Generation(id="p", request=req, resume=copy))]
    assert text_of(first) + text_of(rest) == text_of(whole)
    assert sum(c.tokens for c in first) + sum(c.tokens for c in rest) == 20
    assert core.stats().snapshots == 1 and core.stats().restores == 1


async def test_restore_joins_a_running_batch_exactly(core):
    req = request(PROMPTS[2], 18)
    whole = text_of(await run(core, "w", req))
    first, snap = [], None
    async for chunk in core.generate(Generation(id="p", request=req)):
        if chunk.finish_reason:
            snap = chunk.snapshot
            break
        first.append(chunk)
        if len(first) == 5:
            core.preempt("p")
    others = asyncio.ensure_future(asyncio.gather(*(run(core, f"o{i}", request(p, 20)) for i, p in enumerate(PROMPTS[:2]))))
    while core.stats().generated_tokens < 18 + 5 + 4:
        await asyncio.sleep(0.001)
    rest = await run_resume(core, "p", req, snap)
    await others
    assert text_of(first) + text_of(rest) == whole


async def run_resume(core, gen_id, req, snap):
    return [c async for c in core.generate(Generation(id=gen_id, request=req, resume=snap))]


async def test_seeded_sampling_is_reproducible_across_preemption(core):
    req = request(PROMPTS[0], 14, temperature=1.0, seed=42)
    a = text_of(await run(core, "s1", req))
    assert a == text_of(await run(core, "s2", req))
    first, snap = [], None
    async for chunk in core.generate(Generation(id="s3", request=req)):
        if chunk.finish_reason:
            snap = chunk.snapshot
            break
        first.append(chunk)
        if len(first) == 4:
            core.preempt("s3")
    assert text_of(first) + text_of(await run_resume(core, "s3", req, snap)) == a
    other = text_of(await run(core, "s4", request(PROMPTS[0], 14, temperature=1.0, seed=7)))
    assert other != a


async def test_cancel_frees_the_sequence_and_the_batch_goes_on(core):
    keep = asyncio.ensure_future(run(core, "keep", request(PROMPTS[2], 30)))
    seen = 0
    async for chunk in core.generate(Generation(id="c", request=request(PROMPTS[0], 100))):
        if chunk.finish_reason:
            assert chunk.finish_reason == "cancelled"
            break
        seen += 1
        if seen == 3:
            core.cancel("c")
    assert seen == 3
    kept = await keep
    assert kept[-1].finish_reason == "length" and sum(c.tokens for c in kept) == 30
    assert core.running() == 0
    alone = text_of(await run(core, "again", request(PROMPTS[2], 30)))
    assert text_of(kept) == alone


async def test_context_overflow_is_a_clear_error(core, make_kernel):
    too_long = request(" ".join(WORDS * 2), 8)
    with pytest.raises(ContextLengthError, match="exceeds the context of core tiny"):
        core.check_request(too_long)
    fits_prompt_not_output = request("hello", CONTEXT)
    with pytest.raises(ContextLengthError):
        core.check_request(fits_prompt_not_output)
    async with make_kernel(cores=[core]) as kernel:
        agent = kernel.agent("zoe")
        with pytest.raises(ContextLengthError):
            await agent.achat(" ".join(WORDS * 2), max_tokens=8)
        response = await agent.achat("hello world", max_tokens=5, extra={"ignore_eos": True})
        assert response.usage.completion_tokens == 5 and response.core == "tiny"


async def test_kernel_round_robin_preemption_keeps_outputs_exact(tiny_model_dir, make_kernel):
    core = TransformersCore("tiny1", model_path=tiny_model_dir, max_batch=1, dtype="float32", threads=1)
    async with make_kernel(cores=[core], scheduler="rr", scheduler_options={"quantum": 3}) as kernel:
        alone = [await kernel.agent(f"alone{i}").achat(p, max_tokens=10, extra={"ignore_eos": True}) for i, p in enumerate(PROMPTS)]
        calls = [kernel.agent(f"rr{i}").llm_syscall(p, max_tokens=10, extra={"ignore_eos": True}) for i, p in enumerate(PROMPTS)]
        together = await asyncio.gather(*(kernel.acall(c) for c in calls))
        assert [r.content for r in together] == [r.content for r in alone]
        assert sum(c.timing.preemptions for c in calls) >= 2
        assert core.stats().restores >= 2


def test_bad_paths_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        TransformersCore(model_path=tmp_path / "missing")
    with pytest.raises(ConfigError, match="does not exist"):
        TransformersCore(model_path=tmp_path, gguf_file="nope.gguf")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf at all")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        TransformersCore(model_path=tmp_path, gguf_file=str(fake))


async def test_a_directory_without_a_model_fails_to_start_with_a_config_error(tmp_path):
    core = TransformersCore("empty", model_path=tmp_path)
    with pytest.raises(ConfigError, match="could not load"):
        await core.start()


@pytest.mark.model
@pytest.mark.slow
async def test_loads_the_gemma_gguf_and_generates(tmp_path_factory):
    from llama_server_kit import GEMMA_TEMPLATE, gemma_gguf

    path = gemma_gguf(tmp_path_factory.mktemp("gguf"))
    t0 = time.perf_counter()
    core = TransformersCore("gemma-hf", model_path=path.parent, gguf_file=path.name, max_batch=2, chat_template=GEMMA_TEMPLATE,
                            threads=os.cpu_count())
    await core.start()
    try:
        load_seconds = time.perf_counter() - t0
        req = LLMRequest(messages=[{"role": "user", "content": "Name a color."}], max_tokens=8, extra={"ignore_eos": True})
        alone = await run(core, "g", req)
        assert alone[-1].finish_reason == "length" and sum(c.tokens for c in alone) == 8
        # the core's batching and cache give exactly what transformers' own generate() gives
        ids = core.prompt_ids(req)
        assert ids[0] == core.tokenizer.bos_token_id
        with torch.inference_mode():
            reference = core.torch_model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None)
        assert text_of(alone) == core.tokenizer.decode(reference[0, len(ids):], skip_special_tokens=True)
        both = await asyncio.gather(run(core, "x", req), run(core, "y", request("Count to three.", 8)))
        assert text_of(both[0]) == text_of(alone)
        print(f"gemma gguf via transformers: load {load_seconds:.1f} s, answer {text_of(alone)!r}")
    finally:
        await core.stop()
