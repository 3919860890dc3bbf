"""GAIA with and without AIOS.

    python -m bench.gaia --framework autogen --agents 8 --model local [--data GAIA/2023/validation] [--full] [--limit N]

Tool-using question answering: up to 6 turns of Python with search /
open_page / read_file tools, then ``FINAL ANSWER: ...``, scored by GAIA's
quasi-exact match. Offline, the shipped stand-in (fictional facts, local
pages as the web) runs; ``--data`` points at GAIA's validation metadata.
"""

from __future__ import annotations

from bench.suite import main

if __name__ == "__main__":
    raise SystemExit(main("gaia", description=__doc__.split("\n\n")[0], default_max_tokens=256))
