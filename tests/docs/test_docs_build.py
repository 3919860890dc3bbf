"""The documentation site builds with ``mkdocs build --strict`` and carries the generated references."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from aios_core.config import KernelConfig
from aios_core.hookspecs import PROJECT


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if subprocess.run([sys.executable, "-c", "import mkdocs, material"], check=False, capture_output=True).returncode != 0:
        pytest.fail("mkdocs-material is not installed: it belongs to the dev extra (pip install mkdocs-material)")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # material's end-of-life banner, not a build problem
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    return out, log


def test_the_site_builds_without_warnings(site):
    _, log = site
    assert not re.search(r"\bWARNING\b", log), log[-6000:]


def test_every_page_of_the_nav_is_built(site):
    out, _ = site
    for page in ("index.html", "quickstart/index.html", "concepts/index.html", "openai-endpoint/index.html", "plugins/guide/index.html"):
        assert (out / page).is_file(), page
    for tutorial in ("autogen", "metagpt", "open-interpreter", "langchain"):
        assert (out / "tutorials" / tutorial / "index.html").is_file(), tutorial


def test_the_generated_references_are_in_the_site(site):
    out, _ = site
    hooks = (out / "reference" / "hooks" / "index.html").read_text()
    import aios_core.hookspecs as specs

    for name in (n for n in vars(specs) if n.startswith("aios_") and hasattr(getattr(specs, n), f"{PROJECT}_spec")):
        assert f'id="{name}"' in hooks, name
    configuration = (out / "reference" / "configuration" / "index.html").read_text()
    for field in KernelConfig.model_fields:
        assert f"<code>{field}</code>" in configuration, field
    assert "the generated pages are never written into docs/" and not (ROOT / "docs" / "reference").exists()
