"""Cores benchmark: the embedded llama.cpp core through the kernel, against what frameworks do without AIOS.

    python -m aios.bench.studies.cores [--agents 1 4 8 16] [--tokens 64] [--threads N] [--rounds 2] [--out DIR]
    aios bench cores ...                                     # the same, through the CLI

For every number of concurrent agents N, in one process and one run, on the
same GGUF, the same prompts (the same prompt tokens on every side) and greedy
decoding, three setups generate up to ``--tokens`` tokens per agent:

* **engine** - the ceiling: llama.cpp's low-level API driven directly, with no
  kernel, no scheduler and no per-token Python work beyond an argmax: all N
  prompts prefilled in one batch, then one ``llama_decode`` per step for the N
  sequences, each generating exactly ``--tokens`` tokens;
* **kernel** - N agents of the AIOS SDK calling the kernel at once; the kernel's
  llamacpp core batches them (continuous batching, PLAS scheduler);
* **one Llama** - the same N agents sharing one high-level ``llama_cpp.Llama``
  object, each calling it in turn (it runs one sequence at a time), which is
  what an agent framework pointed at a local model does without AIOS;
* **llama-batched-bench** - the independent ceiling: llama.cpp's own
  ``llama-batched-bench`` from the same build as the llama-server baseline
  (``scripts/build_llama_server.sh``), N sequences of the same prompt length
  generating ``--tokens`` tokens each; its text-generation rate (``S_TG``) is
  the engine's peak as llama.cpp measures it, with no Python of ours at all.
  Skipped, with the build command printed, when the binary is not built.

Reported per N: the engine's **peak decode rate** (decode steps only, prefill
excluded), llama-batched-bench's, the kernel's decode rate over its decode
window (from the first token of the batch to the end, counting every token
after that first one), and the kernel's **efficiency**, kernel / ceiling, with
llama-batched-bench as the ceiling when it ran (else the raw engine): how much
of what the engine can decode the kernel delivers (target above 0.8 at 8 agents). Also end to end (prefill included) for the engine and the
kernel, the one-Llama rate, and the kernel's speed-up over one Llama. Setups
rotate their order from round to round and medians over rounds are reported,
so the slow drifts of a shared machine hit them alike; a ratio slightly above 1
is that noise. ggml's threads spin: numbers on a busy machine are much lower.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np
from aios.bench.result_stamps import claim_stamp
from aios.bench.studies.llamacpp_engine import counting
from aios.bench.suites.modes import round_order
from rich.console import Console
from rich.table import Table

from aios_core.cores.llamacpp import LlamaCppCore, engine_executor, physical_cores
from aios_core.cores.model_files import default_model_path
from aios_core.kernel import Kernel
from aios_core.syscalls import LLMRequest

log = logging.getLogger(__name__)

SETUPS = ("engine", "kernel", "one_llama")
BATCHED_BENCH = "batched_bench"


def agent_request(i: int, max_tokens: int) -> LLMRequest:
    """A distinct prompt per agent that a small base model continues for many tokens (the engine bench's)."""
    return counting(i, max_tokens)


def agent_prompt(i: int) -> str:
    return agent_request(i, 1).messages[0].content or ""


@dataclass
class Measure:
    """One setup at one concurrency in one round."""

    tokens: int
    seconds: float
    #: tokens generated in the decode window, and the window's seconds (engine and llama-batched-bench: after the
    #: prefill; kernel: from the first token of the batch to the end)
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    #: kernel only: each agent's first-token time, seconds after the start
    first_tokens: tuple[float, ...] = ()

    def raw(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens, "seconds": round(self.seconds, 4), "decode_tokens": self.decode_tokens,
            "decode_seconds": round(self.decode_seconds, 4), "first_tokens": [round(x, 4) for x in self.first_tokens],
        }

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class RawEngine:
    """llama.cpp's low-level API with nothing on top: the engine's own speed for N sequences decoding together."""

    def __init__(self, path: Path, *, n_ctx: int, n_seq: int, n_threads: int, n_batch: int = 512) -> None:
        params = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.swa_full = True
        cparams.kv_unified = True
        cparams.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            L.llama_model_free(self.model)
            raise RuntimeError(f"llama.cpp could not create a context with n_ctx={n_ctx}")
        self.mem = L.llama_get_memory(self.ctx)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.n_batch = n_batch
        self.batch = L.llama_batch_init(n_batch, 0, 1)

    def close(self) -> None:
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """items: (token, position, sequence, wants logits), at most n_batch of them."""
        b = self.batch
        for k, (token, pos, seq, logits) in enumerate(items):
            b.token[k] = token
            b.pos[k] = pos
            b.n_seq_id[k] = 1
            b.seq_id[k][0] = seq
            b.logits[k] = logits
        b.n_tokens = len(items)
        rc = L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with code {rc}")

    def _argmax(self, i: int) -> int:
        return int(np.ctypeslib.as_array(L.llama_get_logits_ith(self.ctx, i), shape=(self.n_vocab,)).argmax())

    def run(self, prompts: list[list[int]], n_tokens: int) -> Measure:
        """Prefill every prompt (batched), then generate exactly ``n_tokens`` per sequence, all sequences per decode."""
        L.llama_memory_clear(self.mem, True)
        t0 = time.perf_counter()
        items = [(tok, pos, s, pos == len(p) - 1) for s, p in enumerate(prompts) for pos, tok in enumerate(p)]
        nxt = [0] * len(prompts)
        for lo in range(0, len(items), self.n_batch):
            chunk = items[lo : lo + self.n_batch]
            self._decode(chunk)
            # logits live until the next decode: read the first token of every prompt that ended in this chunk
            for k, (_, _, s, wants) in enumerate(chunk):
                if wants:
                    nxt[s] = self._argmax(k)
        t1 = time.perf_counter()
        pos = [len(p) for p in prompts]
        generated = [[t] for t in nxt]
        for _ in range(n_tokens - 1):
            self._decode([(nxt[s], pos[s], s, True) for s in range(len(prompts))])
            nxt = [self._argmax(s) for s in range(len(prompts))]
            pos = [p + 1 for p in pos]
            for s, t in enumerate(nxt):
                generated[s].append(t)
        t2 = time.perf_counter()
        #: the token ids of the last run, per sequence (tests check the setups decode the same thing)
        self.last_tokens = generated
        return Measure(tokens=n_tokens * len(prompts), seconds=t2 - t0, decode_tokens=(n_tokens - 1) * len(prompts), decode_seconds=t2 - t1)


def batched_bench_argv(binary: str | Path, model: Path, *, n_ctx: int, prompt_tokens: int, tokens: int, levels: list[int], threads: int) -> list[str]:
    """llama-batched-bench for ``levels`` parallel sequences of ``prompt_tokens`` each, generating ``tokens`` each."""
    return [
        str(binary), "-m", str(model), "-c", str(n_ctx), "-b", "512", "-ub", "512",
        "-npp", str(prompt_tokens), "-ntg", str(tokens), "-npl", ",".join(str(n) for n in levels),
        "-t", str(threads), "-tb", str(threads), "-kvu", "--output-format", "jsonl",  # one KV buffer, as the raw engine and the core
    ]


def parse_batched_bench(output: str) -> dict[int, dict[str, Any]]:
    """The JSON lines of llama-batched-bench's output, by number of parallel sequences (``pl``)."""
    rows: dict[int, dict[str, Any]] = {}
    for line in output.splitlines():
        line = line.strip()
        if not (line.startswith("{") and '"speed_tg"' in line):
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        rows[int(row["pl"])] = row
    return rows


class BatchedBench:
    """llama.cpp's own batched benchmark (same build as llama-server): the engine's decode peak without our code."""

    def __init__(self, binary: Path, model: Path, *, n_ctx: int, prompt_tokens: int, threads: int) -> None:
        self.binary, self.model, self.n_ctx, self.prompt_tokens, self.threads = binary, model, n_ctx, prompt_tokens, threads
        self.last_row: dict[str, Any] = {}

    def run(self, n: int, tokens: int) -> Measure:
        argv = batched_bench_argv(self.binary, self.model, n_ctx=self.n_ctx, prompt_tokens=self.prompt_tokens, tokens=tokens, levels=[n], threads=self.threads)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        rows = parse_batched_bench(out.stdout + "\n" + out.stderr)
        if out.returncode != 0 or n not in rows:
            tail = (out.stderr or out.stdout)[-800:]
            raise RuntimeError(f"llama-batched-bench failed (exit {out.returncode}): {tail}")
        row = self.last_row = rows[n]
        return Measure(
            tokens=n * tokens, seconds=float(row["t"]), decode_tokens=n * tokens, decode_seconds=float(row["t_tg"]),
        )


class Bench:
    """Holds the three setups loaded once, and runs one (setup, N) measurement at a time."""

    def __init__(self, *, levels: list[int], tokens: int, threads: int, n_ctx: int, batched_bench: bool = True) -> None:
        self.use_batched_bench = batched_bench
        self.levels = levels
        self.tokens = tokens
        self.threads = threads
        self.n_ctx = n_ctx
        self.path = default_model_path()
        self.kernel: Kernel | None = None
        self.engine: RawEngine | None = None
        self.llama: Any = None
        self.prompts: dict[int, list[int]] = {}
        self.batched_bench: BatchedBench | None = None

    @property
    def setups(self) -> tuple[str, ...]:
        return SETUPS + ((BATCHED_BENCH,) if self.batched_bench is not None else ())

    async def start(self) -> None:
        core = LlamaCppCore(max_batch=max(self.levels), n_threads=self.threads, n_ctx=self.n_ctx, prefix_slots=0)
        self.kernel = Kernel(cores=[core], scheduler="plas", entry_point_plugins=False)
        await self.kernel.astart()
        # the prompt tokens as the core renders them (the model's chat template): every setup gets exactly these
        self.prompts = {i: core.prompt_tokens(agent_request(i, self.tokens)) for i in range(max(self.levels))}
        loop = asyncio.get_running_loop()
        self.engine = await loop.run_in_executor(
            engine_executor(),
            lambda: RawEngine(self.path, n_ctx=self.n_ctx, n_seq=max(self.levels), n_threads=self.threads),
        )
        self.llama = await loop.run_in_executor(engine_executor(), self._open_llama)
        if self.use_batched_bench:
            from aios.bench.suites.agents.llama_cpp_server import LlamaServerMissing, find_binary

            try:
                binary = find_binary("llama-batched-bench")
            except LlamaServerMissing as exc:
                log.warning("no independent ceiling: %s", exc)
            else:
                prompt_len = round(statistics.median(len(p) for p in self.prompts.values()))
                self.batched_bench = BatchedBench(binary, self.path, n_ctx=self.n_ctx, prompt_tokens=prompt_len, threads=self.threads)
        # warm-up, unrecorded: first calls page the weights in and build ggml's graphs
        for setup in SETUPS:
            await self.measure(setup, 1, tokens=4)

    def _open_llama(self) -> Any:
        return L.Llama(
            model_path=str(self.path), n_ctx=self.n_ctx, n_threads=self.threads, n_threads_batch=self.threads,
            swa_full=True, seed=0, verbose=False,
        )

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self.kernel is not None:
            await self.kernel.astop()
        if self.engine is not None:
            await loop.run_in_executor(engine_executor(), self.engine.close)
        if self.llama is not None:
            await loop.run_in_executor(engine_executor(), self.llama.close)

    async def measure(self, setup: str, n: int, *, tokens: int | None = None) -> Measure:
        tokens = tokens or self.tokens
        loop = asyncio.get_running_loop()
        if setup == "engine":
            assert self.engine is not None
            prompts = [self.prompts[i] for i in range(n)]
            return await loop.run_in_executor(engine_executor(), self.engine.run, prompts, tokens)
        if setup == "kernel":
            assert self.kernel is not None
            agents = [self.kernel.agent(f"agent{i}") for i in range(n)]

            async def one(i: int) -> tuple[float, int]:
                first = 0.0
                async for piece in agents[i].astream(agent_prompt(i), max_tokens=tokens):
                    if piece.delta and not first:
                        first = time.perf_counter()
                    if piece.response is not None:
                        return first, piece.response.usage.completion_tokens
                raise RuntimeError("the stream ended without a response")

            t0 = time.perf_counter()
            done = await asyncio.gather(*(one(i) for i in range(n)))
            t_end = time.perf_counter()
            # decode window: from the first token of the batch to the end; every token after that first one counts
            # (the prefill of agents admitted later falls inside the window, as it does for the kernel's users)
            window_start = min(first for first, _ in done)
            total = sum(k for _, k in done)
            return Measure(
                tokens=total, seconds=t_end - t0, decode_tokens=total - 1, decode_seconds=t_end - window_start,
                first_tokens=tuple(first - t0 for first, _ in done),
            )
        if setup == BATCHED_BENCH:
            if self.batched_bench is None:
                raise ValueError("llama-batched-bench is not available")
            return await asyncio.to_thread(self.batched_bench.run, n, tokens)
        if setup == "one_llama":
            # the agents' calls reach the one Llama object one after the other (it holds one sequence)
            def serial() -> Measure:
                t0 = time.perf_counter()
                total = 0
                for i in range(n):
                    # another agent's conversation: no KV of an earlier call is reused (Llama would keep the last prompt's)
                    self.llama.reset()
                    out = self.llama.create_completion(
                        self.prompts[i], max_tokens=tokens, temperature=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0, seed=0,
                    )
                    total += out["usage"]["completion_tokens"]
                return Measure(tokens=total, seconds=time.perf_counter() - t0)

            return await loop.run_in_executor(engine_executor(), serial)
        raise ValueError(f"unknown setup {setup!r}")


def _median_rate(ms: list[Measure], decode: bool = False) -> float:
    if decode:
        return statistics.median(m.decode_tokens / m.decode_seconds if m.decode_seconds > 0 else 0.0 for m in ms)
    return statistics.median(m.rate for m in ms)


def summarize(samples: dict[tuple[str, int], list[Measure]], levels: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in levels:
        rate = {s: _median_rate(samples[(s, n)]) for s in SETUPS}
        engine_decode = _median_rate(samples[("engine", n)], decode=True)
        kernel_decode = _median_rate(samples[("kernel", n)], decode=True)
        bb = samples.get((BATCHED_BENCH, n)) or []
        bb_decode = _median_rate(bb, decode=True) if bb else None
        ceiling = bb_decode or engine_decode
        rows.append({
            "agents": n,
            "engine_tok_s": round(rate["engine"], 2),
            "engine_decode_peak_tok_s": round(engine_decode, 2),
            "batched_bench_decode_tok_s": round(bb_decode, 2) if bb_decode else None,
            "batched_bench_tok_s": round(_median_rate(bb), 2) if bb else None,
            "ceiling": BATCHED_BENCH if bb_decode else "engine",
            "kernel_tok_s": round(rate["kernel"], 2),
            "kernel_decode_tok_s": round(kernel_decode, 2),
            "one_llama_tok_s": round(rate["one_llama"], 2),
            # the headline: the kernel's decode rate as a fraction of the ceiling (llama-batched-bench when it ran)
            "efficiency": round(kernel_decode / ceiling, 3) if ceiling else None,
            "efficiency_vs_engine": round(kernel_decode / engine_decode, 3) if engine_decode else None,
            "efficiency_end_to_end": round(rate["kernel"] / rate["engine"], 3) if rate["engine"] else None,
            "speedup_vs_one_llama": round(rate["kernel"] / rate["one_llama"], 3) if rate["one_llama"] else None,
            "kernel_tokens": [m.tokens for m in samples[("kernel", n)]],
            "one_llama_tokens": [m.tokens for m in samples[("one_llama", n)]],
            "engine_tokens": samples[("engine", n)][0].tokens,
        })
    return rows


def render(rows: list[dict[str, Any]], header: str) -> Table:
    table = Table(title=header)
    columns = (
        ("agents", "agents", "{}"),
        ("batched_bench_decode_tok_s", "llama-batched-bench decode tok/s", "{:.1f}"),
        ("engine_decode_peak_tok_s", "engine decode peak tok/s", "{:.1f}"),
        ("kernel_decode_tok_s", "kernel decode tok/s", "{:.1f}"),
        ("efficiency", "efficiency (decode, kernel / ceiling)", "{:.2f}"),
        ("engine_tok_s", "engine tok/s (incl. prefill)", "{:.1f}"),
        ("kernel_tok_s", "kernel tok/s (incl. prefill)", "{:.1f}"),
        ("efficiency_end_to_end", "efficiency end to end", "{:.2f}"),
        ("one_llama_tok_s", "one Llama tok/s", "{:.1f}"),
        ("speedup_vs_one_llama", "kernel / one Llama", "{:.2f}x"),
    )
    for _, title, _ in columns:
        table.add_column(title, justify="right")
    for r in rows:
        table.add_row(*(fmt.format(r[key]) if r[key] is not None else "-" for key, _, fmt in columns))
    return table


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["agents"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if any(r.get("batched_bench_decode_tok_s") for r in rows):
        ax1.plot(n, [r.get("batched_bench_decode_tok_s") or float("nan") for r in rows], "D:", label="llama-batched-bench decode (ceiling)")
    ax1.plot(n, [r["engine_decode_peak_tok_s"] for r in rows], "o--", label="engine decode peak (llama.cpp directly)")
    ax1.plot(n, [r["engine_tok_s"] for r in rows], "o-", label="engine, prefill + decode")
    ax1.plot(n, [r["kernel_tok_s"] for r in rows], "s-", label="AIOS kernel, prefill + decode")
    ax1.plot(n, [r["one_llama_tok_s"] for r in rows], "^-", label="one Llama, agents in turn")
    ax1.set_xlabel("concurrent agents")
    ax1.set_ylabel("generated tokens/s (aggregate)")
    ax1.set_xticks(n)
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.bar([str(x) for x in n], [r["efficiency"] or 0 for r in rows], color="tab:orange")
    ax2.axhline(0.8, color="grey", linestyle="--", label="target 0.8")
    ax2.set_ylim(0, 1.1)
    ax2.set_xlabel("concurrent agents")
    ax2.set_ylabel("kernel decode rate / ceiling")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def run(
    levels: list[int], tokens: int, threads: int, rounds: int, n_ctx: int, progress: bool = True, batched_bench: bool = True,
) -> dict[str, Any]:
    console = Console(stderr=True, quiet=not progress)
    bench = Bench(levels=levels, tokens=tokens, threads=threads, n_ctx=n_ctx, batched_bench=batched_bench)
    load = os.getloadavg()
    with console.status("loading the model three times (kernel core, raw engine, one Llama)..."):
        await bench.start()
    setups = bench.setups
    samples: dict[tuple[str, int], list[Measure]] = {(s, n): [] for s in setups for n in levels}
    raw: list[dict[str, Any]] = []
    try:
        for r in range(rounds):
            order = round_order(setups, r)  # rotate who goes first
            for n in levels:
                for position, setup in enumerate(order):
                    with console.status(f"round {r + 1}/{rounds}: {n} agents, {setup}..."):
                        m = await bench.measure(setup, n)
                    samples[(setup, n)].append(m)
                    raw.append({"round": r + 1, "agents": n, "setup": setup, "position": position, **m.raw()})
                    console.log(f"round {r + 1}: {n:2d} agents {setup:9s} {m.tokens:5d} tokens in {m.seconds:6.2f}s = {m.rate:6.1f} tok/s")
        stats = bench.kernel.cores["llamacpp"].stats().as_dict() if bench.kernel else {}
    finally:
        await bench.stop()
    return {
        "benchmark": "cores",
        "model": str(bench.path.name),
        "threads": threads,
        "tokens_per_agent": tokens,
        "rounds": rounds,
        "n_ctx": n_ctx,
        "load_average_at_start": [round(x, 2) for x in load],
        "cpus": os.cpu_count(),
        "rows": summarize(samples, levels),
        "kernel_core_stats": stats,
        "samples": {f"{s}@{n}": [[m.tokens, round(m.seconds, 4)] for m in ms] for (s, n), ms in samples.items()},
        # every measurement of every round, in the order it ran
        "raw": raw,
        "ceiling": "llama-batched-bench" if bench.batched_bench is not None else "engine (llama-batched-bench not built)",
        "batched_bench_argv": batched_bench_argv(
            bench.batched_bench.binary, bench.path, n_ctx=n_ctx, prompt_tokens=bench.batched_bench.prompt_tokens,
            tokens=tokens, levels=levels, threads=threads,
        ) if bench.batched_bench is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aios bench cores", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, nargs="+", default=[1, 4, 8, 16], help="concurrency levels (default 1 4 8 16)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per agent (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="ggml threads for every setup (default: physical cores)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; setups rotate their order (default 3)")
    parser.add_argument("--n-ctx", type=int, default=4096, help="KV cells of each setup's context (default 4096)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="where the JSON and PNG go")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-batched-bench", action="store_true", help="skip llama-batched-bench (the independent ceiling)")
    args = parser.parse_args(argv)
    if min(args.agents) < 1 or args.tokens < 2 or args.rounds < 1:
        parser.error("--agents must be >= 1, --tokens >= 2 and --rounds >= 1")
    threads = args.threads or physical_cores()
    result = asyncio.run(run(
        sorted(set(args.agents)), args.tokens, threads, args.rounds, args.n_ctx, progress=not args.no_progress,
        batched_bench=not args.no_batched_bench,
    ))
    header = (
        f"llamacpp core: {result['model']}, {threads} ggml thread(s), {args.tokens} tokens per agent, "
        f"medians of {args.rounds} round(s), load average at start {result['load_average_at_start'][0]}"
    )
    Console(width=160).print(render(result["rows"], header))
    stamp, claim = claim_stamp(args.out, "cores")
    with claim:
        json_path = args.out / f"cores-{stamp}.json"
        json_path.write_text(json.dumps(result, indent=2))
        plot(result["rows"], args.out / f"cores-{stamp}.png")
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
