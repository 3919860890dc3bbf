"""Every runnable code block of the documentation runs, so the pages cannot rot.

Each page runs in its own interpreter (``run_page.py``), in a temp directory,
with ``AIOS_CORES`` set to a fast sim core: code that says ``aios.Kernel()`` or
``aios.patch(...)`` gets a kernel on the sim core instead of the real model.
Blocks marked ``<!-- docs-test: skip: reason -->`` are listed with their reason.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from codeblocks import blocks
from conftest import DOCS, ROOT

RUNNER = Path(__file__).with_name("run_page.py")
#: pages whose blocks are not documentation examples (bench/ writes benchmarks.md: its commands run for minutes)
NOT_EXAMPLES = {"benchmarks.md"}
PAGES = sorted(p for p in DOCS.rglob("*.md") if str(p.relative_to(DOCS)) not in NOT_EXAMPLES)
RUNNABLE = [p for p in PAGES if any(b.runs for b in blocks(p))]
TUTORIALS = {
    "autogen.md": "autogen_agentchat",
    "metagpt.md": "metagpt",
    "open-interpreter.md": "interpreter",
    "langchain.md": "langchain_core",
}


def page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


@pytest.mark.parametrize("page", RUNNABLE, ids=[page_id(p) for p in RUNNABLE])
def test_the_code_blocks_of_the_page_run(page, tmp_path, docs_env):
    framework = TUTORIALS.get(page.name)
    if framework and page.parent.name == "tutorials":
        # a missing framework fails the page everywhere, not only in CI (a skip hid a broken set-up on workstations)
        assert importlib.util.find_spec(framework) is not None, f"{framework} is not installed (scripts/setup.sh installs the four frameworks)"
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(page)], check=False, cwd=work, env=docs_env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{page_id(page)}:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"


def test_every_skipped_block_says_why():
    unexplained = [b.where for p in PAGES for b in blocks(p) if b.action == "skip" and not (b.reason or "").strip()]
    assert unexplained == []


def test_every_tutorial_runs_python():
    for name in TUTORIALS:
        page = DOCS / "tutorials" / name
        assert page.is_file(), f"missing tutorial {name}"
        runnable = [b for b in blocks(page) if b.runs and b.lang == "python"]
        assert len(runnable) >= 2, f"{name}: at least two executed python blocks"


def test_the_block_parser_sees_directives_titles_and_indented_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n<!-- docs-test: skip: needs a GPU -->\n```python\nimport torch\n```\n\n"
        '```toml title="aios.toml"\nscheduler = "rr"\n```\n\n'
        "1. step\n\n    ```python\n    x = 1\n    ```\n\n"
        "<!-- docs-test: run -->\n\n```bash\naios config\n```\n\n```bash\nmake run\n```\n"
    )
    found = blocks(page)
    assert [(b.lang, b.runs, b.writes_file) for b in found] == [
        ("python", False, False),
        ("toml", False, True),
        ("python", True, False),
        ("bash", True, False),
        ("bash", False, False),
    ]
    assert found[0].reason == "needs a GPU" and found[1].title == "aios.toml" and found[2].code == "x = 1\n"
    assert found[2].line == 14


def test_a_failing_block_fails_the_page(tmp_path, docs_env):
    page = tmp_path / "broken.md"
    page.write_text("# Broken\n\n```python\nx = 1\n```\n\n```python\nassert x == 2, 'stale docs'\n```\n")
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(page)], check=False, cwd=tmp_path, env=docs_env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"FAILED: the python block at {page}:7" in done.stdout
    assert f'File "{page}", line 8' in done.stderr and "stale docs" in done.stderr


def test_repository_root_is_where_mkdocs_yml_is():
    assert (ROOT / "mkdocs.yml").is_file()
