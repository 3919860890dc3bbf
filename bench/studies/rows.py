"""What a ``llama_decode`` costs by the number of rows that compute logits, on a KV cache as decoding leaves it.

    python -m aios.bench.studies.rows [--threads 1] [--sequences 12] [--max-rows 12] [--rounds 5] [--head] [--row-pass]

ggml's quantized matrix products take a micro-batch's rows in pairs and compute a leftover row in a pass of
its own. For the output layer (Gemma 3: 262,144 tokens by 640) that pass costs more than a pair, which is
why the embedded core evens out a micro-batch's logits rows (its "Even logits rows"). This study measures
it in a context made like the core's (``n_ubatch`` 63, unified KV, ``swa_full``), on ``--sequences``
sequences of ``--prompt`` prompt tokens and ``--decode`` steps decoded together:

* ``k decoding rows``: one token of each of ``k`` sequences, each with logits (a decode step), k = 1..max;
* ``8 rows, j with logits``: 8 prompt tokens of one sequence, the last ``j`` with logits (a chunk whose
  rows are marked), j = 1..8.

With ``--head``, the same decoding rows are timed once more with the core's greedy output head
(``aios_core.cores.llamacpp_head``): llama.cpp stops before its output layer and the head picks each row's
token (``k decoding rows, head``: the decode and the head's pass together). The context then has the head's
eval callback, so every batch pays its call per graph node, as the core's decodes do.

With ``--row-pass``, the same decoding rows are timed once more with the core's row pass
(``aios_core.cores.llamacpp_row_logits``): llama.cpp stops before its output layer and ggml's one-row
kernel computes every row's logits (``k decoding rows, row pass``: the decode and the pass together), at
every row count, whichever the core would take.

Every round times every batch once, in an order rotated each round; each batch is rolled back after it is
timed, so every round sees the same cache. Writes ``rows-<stamp>.json`` (every timing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np
from aios.bench.result_stamps import claim_stamp
from aios.bench.studies.ubatch import N_BATCH, N_CTX, N_SEQ_MAX, Engine
from aios.bench.suites.modes import round_order
from rich.console import Console
from rich.table import Table

from aios_core.cores.llamacpp import DEFAULT_UBATCH
from aios_core.cores.llamacpp_head import OutputHead, head_for_model, probe_tokens
from aios_core.cores.llamacpp_row_logits import row_logits_for
from aios_core.cores.llamacpp_runtime import load_model
from aios_core.cores.model_files import default_model_path

CHUNK = 8


def batches(max_rows: int) -> dict[str, tuple[list[tuple[int, int]], list[int]]]:
    """Each batch by name: its items ``(sequence, tokens)`` and, per item, how many last rows have logits."""
    out: dict[str, tuple[list[tuple[int, int]], list[int]]] = {}
    for k in range(1, max_rows + 1):
        out[f"{k} decoding rows"] = ([(s, 1) for s in range(k)], [1] * k)
    for j in range(1, CHUNK + 1):
        out[f"{CHUNK} rows, {j} with logits"] = ([(0, CHUNK)], [j])
    return out


def stopped_timed(engine: Engine, head: OutputHead, items: list[tuple[int, int]], row_pass: bool) -> float:
    """A decode stopped before llama.cpp's output layer, then the head's picks (or, ``row_pass``, the row pass's
    logits) for its rows, as the core's step runs them: the time of both."""
    head.arm(True)
    try:
        elapsed = engine.timed(items, [1] * len(items))
    finally:
        head.tap.active = False
    flags = np.ones(len(items), dtype=np.int8)
    t0 = time.perf_counter()
    if row_pass:
        done = head.row_logits(flags)
    else:
        done = head.picks(flags, list(range(len(items))), [None] * len(items)) is not None
    if not done:
        raise SystemExit(f"the tap took no hidden rows for {len(items)} outputs")
    return elapsed + time.perf_counter() - t0


def run(threads: int, sequences: int, prompt: int, decode: int, max_rows: int, rounds: int, command: str = "",
        with_head: bool = False, with_rows: bool = False) -> dict[str, Any]:
    load = os.getloadavg()
    path = default_model_path()
    model = load_model(path)
    head = head_for_model(path, model, 1, threads) if with_head or with_rows else None
    if (with_head or with_rows) and head is None:
        raise SystemExit("the core's output layers do not apply to this model (its output matrix is not Q8_0)")
    # the tap's callback with its own data (the C tap's state: without it the callback reads address 0)
    engine = Engine(model, DEFAULT_UBATCH, threads, sequences, head.tap.callback if head else None,
                    eval_user_data=head.tap.user_data if head else None)
    if with_head and head is not None:
        # build() is true when either pass is used: the greedy head itself must be
        head.build(engine.ctx, engine.batch, probe_tokens(L.llama_model_get_vocab(model), N_BATCH), 0)
        if head.head is None:
            raise SystemExit("the greedy head was refused at load (see the log)")
    if head is not None and with_rows:
        # every row count the row pass's, whatever the core would measure: the study times them all
        head.rows = row_logits_for(head.blocks, threads=threads, max_rows=max_rows)
        if head.rows is None:
            raise SystemExit("the row pass cannot run here (no C compiler, or no ggml CPU library: see the log)")
        head.rows.counts = frozenset(range(1, max_rows + 1))
    print(f"filling the cache: {sequences} sequences, {prompt}-token prompts, {decode} steps...", file=sys.stderr)
    engine.fill(prompt, decode)
    shapes = batches(max_rows)
    if with_head:
        shapes.update({f"{k} decoding rows, head": ([(s, 1) for s in range(k)], [1] * k) for k in range(1, max_rows + 1)})
    if with_rows:
        shapes.update({f"{k} decoding rows, row pass": ([(s, 1) for s in range(k)], [1] * k) for k in range(1, max_rows + 1)})
    times: dict[str, list[float]] = {name: [] for name in shapes}
    for r in range(rounds):
        for name in round_order(list(shapes), r):
            items, logits = shapes[name]
            if name.endswith((", head", ", row pass")):
                assert head is not None
                times[name].append(stopped_timed(engine, head, items, row_pass=name.endswith(", row pass")))
            else:
                times[name].append(engine.timed(items, logits))
    engine.close()
    L.llama_model_free(model)
    return {
        "kind": "aios-bench-rows",
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_at_start": [round(x, 2) for x in load],
        "options": {"threads": threads, "sequences": sequences, "prompt": prompt, "decode": decode, "max_rows": max_rows,
                    "rounds": rounds, "head": with_head, "row_pass": with_rows, "n_ctx": N_CTX, "n_batch": N_BATCH, "n_ubatch": DEFAULT_UBATCH},
        "cells_per_sequence": prompt + decode,
        "median_ms": {name: round(1000 * statistics.median(v), 1) for name, v in times.items()},
        "seconds": times,
    }


def render(result: dict[str, Any]) -> Table:
    med = result["median_ms"]
    table = Table(title=f"median ms per llama_decode, {result['options']['sequences']} sequences of "
                        f"{result['cells_per_sequence']} interleaved cells, {result['options']['threads']} thread(s)")
    table.add_column("batch")
    table.add_column("ms", justify="right")
    table.add_column("/ one more logits row", justify="right")
    groups = [[f"{k} decoding rows" for k in range(1, result["options"]["max_rows"] + 1)],
              [f"{CHUNK} rows, {j} with logits" for j in range(1, CHUNK + 1)]]
    if result["options"].get("head"):
        groups.append([f"{k} decoding rows, head" for k in range(1, result["options"]["max_rows"] + 1)])
    if result["options"].get("row_pass"):
        groups.append([f"{k} decoding rows, row pass" for k in range(1, result["options"]["max_rows"] + 1)])
    for group in groups:
        for name, more in zip(group, [*group[1:], None]):
            table.add_row(name, f"{med[name]:.1f}", f"{med[name] / med[more]:.2f}x" if more else "")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aios.bench.studies.rows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sequences", type=int, default=12)
    parser.add_argument("--prompt", type=int, default=300, help="prompt tokens per sequence before decoding (default 300)")
    parser.add_argument("--decode", type=int, default=50, help="steps all sequences decode together (default 50)")
    parser.add_argument("--max-rows", type=int, default=12, help="most decoding rows timed (default 12, at most --sequences)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--head", action="store_true", help="time the decoding rows with the core's greedy output head too")
    parser.add_argument("--row-pass", action="store_true", help="time the decoding rows with the core's row pass too")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1 or args.prompt < CHUNK or args.decode < 0:
        parser.error(f"--threads and --rounds must be >= 1, --prompt >= {CHUNK}, --decode >= 0")
    if not 1 <= args.max_rows <= args.sequences or args.max_rows > DEFAULT_UBATCH:
        parser.error(f"--max-rows must be 1..--sequences and at most {DEFAULT_UBATCH} (one micro-batch)")
    if args.sequences > N_SEQ_MAX or args.sequences * (args.prompt + args.decode + CHUNK) > N_CTX:
        parser.error(f"the sequences must fit {N_CTX} cells and {N_SEQ_MAX} sequence ids")
    command = "python -m aios.bench.studies.rows " + " ".join(sys.argv[1:] if argv is None else argv)
    result = run(args.threads, args.sequences, args.prompt, args.decode, args.max_rows, args.rounds, command, args.head, args.row_pass)
    Console(width=140).print(render(result))
    stamp, claim = claim_stamp(args.out, "rows")
    with claim:
        path = args.out / f"rows-{stamp}.json"
        path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
