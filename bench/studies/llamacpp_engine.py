"""Raw numbers of the embedded llama.cpp core, driven directly (no kernel, no scheduler).

    python -m aios.bench.studies.llamacpp_engine [--threads N] [--tokens 64] [--concurrency 4 8 16]

Prints: single-stream decode speed, aggregate speed with several concurrent
sequences (continuous batching), and the cost of a KV snapshot/restore of a
512-token sequence against recomputing it (prefill). The machine's load
average is printed too: ggml threads spin, so numbers on a busy machine are
much lower (and 2 threads can be slower than 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from aios_core.cores.base import Generation
from aios_core.cores.llamacpp import LlamaCppCore
from aios_core.syscalls import LLMRequest, Message


def counting(i: int, max_tokens: int) -> LLMRequest:
    start = 100 + 37 * i
    text = "Continue the list: " + ", ".join(str(n) for n in range(start, start + 6)) + ","
    return LLMRequest(messages=[Message(role="user", content=text)], max_tokens=max_tokens)


async def stream(core: LlamaCppCore, gen: Generation, marks: dict[str, float] | None = None) -> int:
    n = 0
    async for chunk in core.generate(gen):
        if chunk.tokens and marks is not None and "first" not in marks:
            marks["first"] = time.perf_counter()
        n += chunk.tokens
    if marks is not None:
        marks["last"] = time.perf_counter()
    return n


async def single_stream(threads: int, tokens: int) -> None:
    core = LlamaCppCore(max_batch=1, n_threads=threads, prefix_slots=0)
    await core.start()
    await stream(core, Generation(id="warm", request=counting(99, 4)))
    marks: dict[str, float] = {}
    n = await stream(core, Generation(id="one", request=counting(0, tokens)), marks)
    rate = (n - 1) / (marks["last"] - marks["first"]) if n > 1 else 0.0
    print(f"single stream: {n} tokens, decode {rate:.1f} tok/s (after the first token)")
    await core.stop()


async def aggregate(threads: int, tokens: int, levels: list[int]) -> None:
    core = LlamaCppCore(max_batch=max(levels), n_threads=threads, prefix_slots=0)
    await core.start()
    await stream(core, Generation(id="warm", request=counting(99, 4)))
    for n_seq in levels:
        s0 = core.stats()
        steps0, sum0 = s0.steps, s0.batch_size_sum
        decode0 = core.metrics().decode_seconds
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(stream(core, Generation(id=f"c{n_seq}-{i}", request=counting(i, tokens))) for i in range(n_seq)))
        elapsed = time.perf_counter() - t0
        s1 = core.stats()
        mean_batch = (s1.batch_size_sum - sum0) / max(1, s1.steps - steps0)
        in_decode = core.metrics().decode_seconds - decode0
        print(
            f"{n_seq:2d} concurrent: {sum(counts)} tokens in {elapsed:.2f}s = {sum(counts) / elapsed:.1f} tok/s aggregate "
            f"(mean batch {mean_batch:.1f}; {100 * in_decode / elapsed:.0f}% of the time inside llama_decode)"
        )
    await core.stop()


async def snapshot_cost(threads: int, target: int = 512) -> None:
    core = LlamaCppCore(max_batch=2, n_threads=threads, prefix_slots=0)
    await core.start()

    def prompt(words: int) -> LLMRequest:
        return LLMRequest(messages=[Message(role="user", content="Summarise: " + " ".join(f"item{i}" for i in range(words)))], max_tokens=16)

    words = 400
    for _ in range(4):  # find the word count whose prompt is `target` tokens
        n_prompt = core.count_tokens(prompt(words))
        if n_prompt == target:
            break
        words = max(10, words + round((target - n_prompt) * words / n_prompt))
    request = prompt(words)
    n_prompt = core.count_tokens(request)

    # recompute: a fresh prefill of the same tokens (time to the first token)
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    gen = Generation(id="recompute", request=request)
    async for chunk in core.generate(gen):
        if chunk.tokens:
            marks["first"] = time.perf_counter()
            core.cancel(gen.id)
    recompute = marks["first"] - t0

    # snapshot after the prompt and a few tokens; then restore it
    gen = Generation(id="snap", request=request)
    last = None
    async for chunk in core.generate(gen):
        if chunk.tokens:
            core.preempt(gen.id)
        last = chunk
    assert last is not None and last.snapshot is not None, last
    snap = last.snapshot
    stats = core.stats().extra
    cells = snap.state["n_past"]
    t0 = time.perf_counter()
    resumed = Generation(id="snap", request=request, resume=snap)
    marks = {}
    async for chunk in core.generate(resumed):
        if chunk.tokens and "first" not in marks:
            marks["first"] = time.perf_counter()
            core.cancel(resumed.id)
    resume_to_token = marks["first"] - t0
    stats = core.stats().extra
    print(
        f"snapshot of a {cells}-token sequence (prompt {n_prompt}): {snap.nbytes / 1e6:.2f} MB, "
        f"get {stats['snapshot_ms_mean']:.2f} ms, set {stats['restore_ms_mean']:.2f} ms, "
        f"resume to next token {resume_to_token * 1000:.0f} ms; recompute (prefill to first token) {recompute * 1000:.0f} ms"
    )
    await core.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="ggml threads (default: the core's default)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per sequence")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args()
    threads = args.threads or LlamaCppCore().n_threads
    print(f"n_threads={threads}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    await single_stream(threads, args.tokens)
    await aggregate(threads, args.tokens, args.concurrency)
    await snapshot_cost(threads)


if __name__ == "__main__":
    asyncio.run(main())
