"""SWE-Bench-Lite with and without AIOS.

    python -m bench.swebench --framework sdk --agents 4 --model local [--data swe-bench-lite.jsonl] [--full] [--limit N]

Repository patching: the agent reads an issue and the source files and
replies with a unified diff (one retry if it does not apply); resolved when
the instance's FAIL_TO_PASS and PASS_TO_PASS tests pass. Offline, the shipped
stand-in (four small repositories) runs; ``--data`` with
``AIOS_SWEBENCH_REPOS`` runs official instances (tests in this environment,
not SWE-bench's Docker images: an approximation, labelled so).
"""

from __future__ import annotations

from bench.suite import main

if __name__ == "__main__":
    raise SystemExit(main("swebench", description=__doc__.split("\n\n")[0], default_max_tokens=384))
