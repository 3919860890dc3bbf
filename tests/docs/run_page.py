"""Run the code blocks of one documentation page, in order, like a reader following it.

    python tests/docs/run_page.py docs/quickstart.md

Python blocks share one namespace; titled blocks are written to files; marked
shell blocks run with ``bash -e``. The working directory and environment are
the caller's (the test gives a temp dir and a sim-core configuration). Exits
non-zero at the first failing block, naming it as ``page:line``.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from codeblocks import blocks


def main(page: Path) -> int:
    namespace: dict[str, object] = {"__name__": "__main__"}
    for block in blocks(page):
        if block.writes_file:
            target = Path(block.title)  # type: ignore[arg-type]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code, encoding="utf-8")
        if not block.runs:
            continue
        print(f"--- running {block.where} ({block.lang})", flush=True)
        if block.lang == "python":
            try:
                # padded so that a traceback's line numbers are the page's
                exec(compile("\n" * block.line + block.code, str(page), "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                print(f"FAILED: the python block at {block.where}", flush=True)
                return 1
        else:
            done = subprocess.run(["bash", "-e", "-c", block.code], check=False)
            if done.returncode != 0:
                print(f"FAILED: the shell block at {block.where} exited with {done.returncode}", flush=True)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
