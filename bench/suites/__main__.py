"""``python -m aios.bench.suites <suite> [options]``: the same as ``aios bench <suite>``."""

from __future__ import annotations

import sys

from aios.bench.suites.run import main
from aios.bench.suites.tasks import SUITES

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in SUITES:
        sys.exit(f"usage: python -m aios.bench.suites {{{','.join(SUITES)}}} [options]")
    sys.exit(main(sys.argv[1], sys.argv[2:], prog=f"python -m aios.bench.suites {sys.argv[1]}"))
