"""What a ``llama_decode`` costs by the size of llama.cpp's micro-batches, on a KV cache as decoding leaves it.

    python -m aios.bench.studies.ubatch [--threads 1] [--ubatch 512 63 60] [--rounds 4] [--streams 63] [--tap] [--native-tap] [--busy]

ggml's CPU flash attention changes kernel at 64 query rows in a micro-batch: below, each row skips the
cells its mask hides; from 64 on, a tile of 64 cells is skipped only when every row of the 64-row tile is
masked from it. Sequences that decode together leave their cells interleaved in a unified cache, so a
micro-batch mixing several sequences' rows attends over all their cells. This study builds that cache
(``--sequences`` sequences, each a ``--prompt``-token prompt then ``--decode`` steps decoded together),
once per ``--ubatch`` value, in contexts made like the embedded core's (unified KV, ``swa_full``, 32768
cells, ``n_batch`` 512, 80 sequence ids), and times the same batches in each, alternating the contexts
every round. Each batch is rolled back after it is timed, so every round sees the same cache.

Batches: the decoding rows of all sequences but the last; a 56-token chunk of the last sequence alone
(a tool result appended to a conversation); both in one batch (a step that decodes and prefills);
a 400-token prompt alone; and with the decoding rows. Writes ``ubatch-<stamp>.json`` (every timing).

``--streams U`` adds a context with one KV stream per sequence (``kv_unified`` off, as llama-server runs
without ``--kv-unified``), micro-batches of ``U``, filled and timed alike. A row there walks only its own
sequence's cells; in the unified cache, even below 64 rows, it walks every cell up to the highest one in
use and skips, once per attention head and layer, those its mask hides: one by one in stock llama.cpp,
16 mask values at a time (and the next own cell prefetched) with ``scripts/patches/llama.cpp``. The
difference is what that walk costs (the embedded core shares prefix cells between sequences, which needs
one stream). The JSON names the ggml library that ran (``$LLAMA_CPP_LIB_PATH`` picks another build: the
unpatched wheel's, say).

``--tap`` adds a context like the first ``--ubatch`` one with an eval callback that takes nothing (what the
greedy head's tap is while the head does not take a decode): ggml calls it, in Python, for every node of
every graph. ``--native-tap`` adds one with the greedy head's C callback
(:mod:`aios_core.cores.llamacpp_native_tap`), idle too: ggml calls it as often, without the GIL.
``--busy`` keeps a Python thread spinning while every batch is timed, as the kernel's loop is when agents
run in its process: each call of the Python callback then waits for the GIL.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import llama_cpp as L
from aios.bench.result_stamps import claim_stamp
from rich.console import Console
from rich.table import Table

from aios_core.cores.llamacpp_runtime import load_model, shorten_switch_interval
from aios_core.cores.model_files import default_model_path

N_CTX = 32768
N_BATCH = 512
N_SEQ_MAX = 80


class Engine:
    """One llama.cpp context and the positions of its sequences."""

    def __init__(self, model: Any, ubatch: int, threads: int, sequences: int, eval_callback: Any = None,
                 stream_cells: int = 0, eval_user_data: Any = None) -> None:
        """``stream_cells``: one KV stream of that many cells per sequence instead of the unified cache."""
        params = L.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = N_CTX, N_BATCH, ubatch, N_SEQ_MAX
        if stream_cells:
            params.n_ctx, params.n_seq_max = stream_cells * sequences, sequences
        params.n_threads = params.n_threads_batch = threads
        params.swa_full, params.kv_unified, params.no_perf = True, not stream_cells, True
        if eval_callback is not None:  # ggml's eval callback (the greedy head's tap), kept alive by the caller
            params.cb_eval = eval_callback
            params.cb_eval_user_data = eval_user_data
        self.ctx = L.llama_init_from_model(model, params)
        if not self.ctx:
            raise SystemExit(f"llama.cpp could not create a context with n_ubatch={ubatch}")
        self.memory = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(N_BATCH, 0, 1)
        self.pos = [0] * sequences

    def decode(self, items: list[tuple[int, int]], logits: list[int] | None = None) -> float:
        """One llama_decode of ``n`` tokens for each ``(sequence, n)``; its time in seconds.

        ``logits``: per item, how many of its last rows compute logits (default 1).
        """
        k = 0
        for i, (seq, n) in enumerate(items):
            outputs = 1 if logits is None else logits[i]
            for j in range(n):
                p = self.pos[seq]
                # the same tokens in every context: a function of sequence and position
                self.batch.token[k] = 1000 + (seq * 7919 + p * 104729) % 40000
                self.batch.pos[k] = p
                self.batch.n_seq_id[k] = 1
                self.batch.seq_id[k][0] = seq
                self.batch.logits[k] = j >= n - outputs
                self.pos[seq] = p + 1
                k += 1
        self.batch.n_tokens = k
        t0 = time.perf_counter()
        rc = L.llama_decode(self.ctx, self.batch)
        elapsed = time.perf_counter() - t0
        if rc != 0:
            raise SystemExit(f"llama_decode failed with code {rc}")
        return elapsed

    def fill(self, prompt: int, decode: int) -> None:
        """Each sequence's ``prompt`` tokens, one sequence after another, then ``decode`` steps of all of them together
        (their cells interleave, as decoding leaves a unified cache)."""
        for s in range(len(self.pos)):
            left = prompt
            while left:
                n = min(left, N_BATCH)
                self.decode([(s, n)])
                left -= n
        for _ in range(decode):
            self.decode([(s, 1) for s in range(len(self.pos))])

    def timed(self, items: list[tuple[int, int]], logits: list[int] | None = None) -> float:
        """The batch's time, with the cache put back as it was."""
        before = list(self.pos)
        elapsed = self.decode(items, logits)
        for seq, _ in items:
            L.llama_memory_seq_rm(self.memory, seq, before[seq], -1)
            self.pos[seq] = before[seq]
        return elapsed

    def close(self) -> None:
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)


def shapes(sequences: int) -> dict[str, list[tuple[int, int]]]:
    last = sequences - 1
    decoding = [(s, 1) for s in range(last)]
    return {
        f"{last} decoding rows": decoding,
        f"{last + 1} decoding rows": decoding + [(last, 1)],
        "56-token chunk": [(last, 56)],
        f"{last} decoding rows + 56-token chunk": decoding + [(last, 56)],
        "400-token prompt": [(last, 400)],
        f"{last} decoding rows + 400-token prompt": decoding + [(last, 400)],
    }


def _take_nothing(tensor: Any, ask: bool, user_data: Any) -> bool:
    return False


def run(ubatches: list[int], threads: int, sequences: int, prompt: int, decode: int, rounds: int, command: str = "",
        streams: int = 0, tap: bool = False, busy: bool = False, native_tap: bool = False) -> dict[str, Any]:
    load = os.getloadavg()
    model = load_model(default_model_path())
    engines = {str(u): Engine(model, u, threads, sequences) for u in ubatches}
    if streams:
        # each stream holds its sequence and the largest batch timed on it (a 400-token prompt), in whole 256s
        cells = -(-(prompt + decode + 400) // 256) * 256
        engines[f"{streams} streams"] = Engine(model, streams, threads, sequences, stream_cells=cells)
    callback = L.ggml_backend_sched_eval_callback(_take_nothing) if tap else None  # alive until the contexts go
    if callback is not None:
        engines[f"{ubatches[0]} tap"] = Engine(model, ubatches[0], threads, sequences, callback)
    native = None  # alive until the contexts go, like the callback
    if native_tap:
        from aios_core.cores.llamacpp_native_tap import native_tap as make_native_tap

        native = make_native_tap(L.llama_model_n_embd(model), N_BATCH)
        if native is None:
            raise SystemExit("--native-tap: the C callback could not be compiled or loaded here (see the log)")
        engines[f"{ubatches[0]} native tap"] = Engine(model, ubatches[0], threads, sequences, native.callback,
                                                      eval_user_data=native.user_data)
    for key, engine in engines.items():
        print(f"filling the cache of n_ubatch={key}: {sequences} sequences, {prompt}-token prompts, {decode} steps...", file=sys.stderr)
        engine.fill(prompt, decode)
    batches = shapes(sequences)
    times: dict[str, dict[str, list[float]]] = {key: {name: [] for name in batches} for key in engines}
    keys = list(engines)
    spinning = threading.Event()
    if busy:
        shorten_switch_interval()  # as the embedded core does in a process with its engine thread
        spinning.set()
        threading.Thread(target=_spin, args=(spinning,), daemon=True).start()
    try:
        for r in range(rounds):
            for key in keys if r % 2 == 0 else list(reversed(keys)):
                for name, items in batches.items():
                    times[key][name].append(engines[key].timed(items))
    finally:
        spinning.clear()
    for engine in engines.values():
        engine.close()
    L.llama_model_free(model)
    return {
        "kind": "aios-bench-ubatch",
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_at_start": [round(x, 2) for x in load],
        # which build ran: the wheel's (with scripts/patches) or one chosen by $LLAMA_CPP_LIB_PATH
        "ggml_cpu_library": loaded_library("libggml-cpu"),
        "options": {"threads": threads, "sequences": sequences, "prompt": prompt, "decode": decode, "rounds": rounds,
                    "n_ctx": N_CTX, "n_batch": N_BATCH, "ubatch": ubatches, "streams": streams, "tap": tap, "native_tap": native_tap,
                    "busy": busy},
        "cells_per_sequence": prompt + decode,
        "median_ms": {u: {name: round(1000 * statistics.median(v), 1) for name, v in per.items()} for u, per in times.items()},
        "seconds": times,
    }


def loaded_library(name: str) -> str | None:
    """The path of the shared library ``name`` this process has loaded (Linux), or None."""
    try:
        with open("/proc/self/maps") as maps:
            return next((line.split()[-1] for line in maps if f"/{name}" in line), None)
    except OSError:
        return None


def _spin(spinning: threading.Event) -> None:
    """Python bytecode without pause (it holds the GIL but for the interpreter's switch interval)."""
    n = 0
    while spinning.is_set():
        n += 1


def render(result: dict[str, Any]) -> Table:
    ubatches = list(result["median_ms"])
    table = Table(title=f"median ms per llama_decode, {result['options']['sequences']} sequences of "
                        f"{result['cells_per_sequence']} interleaved cells, {result['options']['threads']} thread(s)")
    table.add_column("batch")
    for u in ubatches:
        table.add_column(f"n_ubatch {u}", justify="right")
    for u in ubatches[1:]:
        table.add_column(f"{ubatches[0]} / {u}", justify="right")
    for name in result["median_ms"][ubatches[0]]:
        cells = [result["median_ms"][u][name] for u in ubatches]
        table.add_row(name, *(f"{c:.0f}" for c in cells), *(f"{cells[0] / c:.2f}x" for c in cells[1:]))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aios.bench.studies.ubatch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ubatch", type=int, nargs="+", default=[512, 63, 60], help="n_ubatch values compared (default 512 63 60)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sequences", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=300, help="prompt tokens per sequence before decoding (default 300)")
    parser.add_argument("--decode", type=int, default=300, help="steps all sequences decode together (default 300)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--streams", type=int, default=0, metavar="U",
                        help="also time a context with one KV stream per sequence and n_ubatch U (default: none)")
    parser.add_argument("--tap", action="store_true", help="also time a context with an eval callback that takes nothing")
    parser.add_argument("--native-tap", action="store_true",
                        help="also time a context with the greedy head's C eval callback, taking nothing")
    parser.add_argument("--busy", action="store_true", help="keep a Python thread busy while timing")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if any(not 1 <= u <= N_BATCH for u in args.ubatch) or args.sequences < 2 or args.threads < 1 or args.rounds < 1:
        parser.error(f"--ubatch values must be 1..{N_BATCH}, --sequences >= 2, --threads and --rounds >= 1")
    if not 0 <= args.streams <= N_BATCH:
        parser.error(f"--streams must be a micro-batch size 1..{N_BATCH} (or 0: no such context)")
    if args.sequences > N_SEQ_MAX or args.sequences * (args.prompt + args.decode + 400) > N_CTX:
        parser.error(f"the sequences must fit {N_CTX} cells and {N_SEQ_MAX} sequence ids")
    command = "python -m aios.bench.studies.ubatch " + " ".join(sys.argv[1:] if argv is None else argv)
    result = run(args.ubatch, args.threads, args.sequences, args.prompt, args.decode, args.rounds, command, args.streams,
                 args.tap, args.busy, args.native_tap)
    Console(width=140).print(render(result))
    stamp, claim = claim_stamp(args.out, "ubatch")
    with claim:
        path = args.out / f"ubatch-{stamp}.json"
        path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
