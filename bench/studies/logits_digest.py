"""One digest of everything llama.cpp computes for a multi-sequence workload: for checking a build against another.

    python -m aios.bench.studies.logits_digest [--sequences 8] [--steps 20]
    LLAMA_CPP_LIB_PATH=<another build's lib dir> python -m aios.bench.studies.logits_digest

A patch in ``scripts/patches/llama.cpp`` may change how fast llama.cpp computes, never what. This study
decodes a fixed workload in the micro-batch study's context (made like the embedded core's: unified KV,
``swa_full``, micro-batches of 63, one thread; the same tokens for a sequence and position in every run):
``--sequences`` prompts of different lengths, prefilled in interleaved chunks of up to 50 tokens per
sequence, then ``--steps`` decoding steps of all sequences together, so that the masks hold prompt-long
runs, interleaved cells and causal triangles. It takes the logits of every row that has them
and writes their SHA-256 (of the float32 bytes) and the ggml library that ran to ``logits-digest-<stamp>.json``.
Two builds agree bit for bit when the digests are equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np
from aios.bench.result_stamps import claim_stamp
from aios.bench.studies.ubatch import Engine, loaded_library

from aios_core.cores.llamacpp_runtime import load_model
from aios_core.cores.model_files import default_model_path

CHUNK = 50


def run(sequences: int, steps: int, seed: int) -> dict[str, Any]:
    model = load_model(default_model_path())
    engine = Engine(model, ubatch=63, threads=1, sequences=sequences)  # micro-batches of 63, like the core's
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    lengths = [int(x) for x in np.random.default_rng(seed).integers(40, 320, sequences)]
    digest, rows, decodes = hashlib.sha256(), 0, 0

    def decode(items: list[tuple[int, int]]) -> None:
        """One decode of ``(sequence, tokens)`` items, each with logits on its last row, into the digest."""
        nonlocal rows, decodes
        engine.decode(items)
        digest.update(np.ctypeslib.as_array(L.llama_get_logits(engine.ctx), shape=(len(items) * n_vocab,)).tobytes())
        rows, decodes = rows + len(items), decodes + 1

    try:
        for start in range(0, max(lengths), CHUNK):
            decode([(seq, min(CHUNK, length - start)) for seq, length in enumerate(lengths) if length > start])
        for _ in range(steps):
            decode([(seq, 1) for seq in range(sequences)])
    finally:
        engine.close()
        L.llama_model_free(model)
    return {"sha256": digest.hexdigest(), "logits_rows": rows, "decodes": decodes, "prompt_lengths": lengths}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aios.bench.studies.logits_digest", description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="decoding steps of all sequences after the prompts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if not 1 <= args.sequences <= 10 or not 0 <= args.steps <= 200:
        parser.error("--sequences must be 1..10 (one batch holds every chunk) and --steps 0..200")
    command = "python -m aios.bench.studies.logits_digest " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"kind": "aios-bench-logits-digest", "command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "options": vars(args) | {"out": str(args.out)}, **run(args.sequences, args.steps, args.seed),
              "ggml_cpu_library": loaded_library("libggml-cpu")}
    stamp, claim = claim_stamp(args.out, "logits-digest")
    with claim:
        path = args.out / f"logits-digest-{stamp}.json"
        path.write_text(json.dumps(result, indent=2))
    print(f"{result['sha256']}  {result['logits_rows']} logits rows in {result['decodes']} decodes, {result['ggml_cpu_library']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
