"""MINT with and without AIOS.

    python -m bench.mint --framework langchain --agents 8 --model local [--subsets gsm8k,humaneval] [--full] [--limit N]

Multi-turn problem solving: up to 5 turns of Python tool use with the
environment's feedback, at most 2 proposed answers (MINT's protocol without
an LLM feedback provider). Data: MINT's processed test prompts
(``../shared/data/mint``, ``AIOS_MINT_DATA`` or ``--data``); AlfWorld is not
included.
"""

from __future__ import annotations

import argparse

from bench.suite import main


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subsets", default="", help="comma-separated MINT subsets (default: all available)")


if __name__ == "__main__":
    raise SystemExit(main("mint", description=__doc__.split("\n\n")[0], default_max_tokens=256, extra=_extra))
