"""The example plugin packages: installed in this environment, listed by ``aios plugins``, and their own tests pass.

scripts/setup.sh installs every ``examples/plugins/*/`` package (``pip install -e``),
as a user would install a third-party plugin; this checks the result end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from aios_core.cli import main as aios_main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p for p in (ROOT / "examples" / "plugins").iterdir() if (p / "pyproject.toml").is_file())
EXPECTED = {
    "aios-notes": ("notes", {"tools": ["text_stats", "note_add", "note_read", "note_list", "notes_clear"]}),
    "aios-stride": ("stride", {"schedulers": ["stride"]}),
}


def test_every_example_is_known_here():
    assert sorted(p.name for p in EXAMPLES) == sorted(EXPECTED)


@pytest.mark.parametrize("dist", sorted(EXPECTED))
def test_the_example_is_installed_from_its_folder(dist):
    try:
        installed = distribution(dist)
    except PackageNotFoundError:
        pytest.fail(f"{dist} is not installed: scripts/setup.sh installs examples/plugins/*/ (pip install -e examples/plugins/{dist})")
    [entry_point] = [ep for ep in installed.entry_points if ep.group == "aios"]
    assert entry_point.name == EXPECTED[dist][0]


def test_aios_plugins_lists_them_with_their_origin(install, capsys):
    install("aios-broken", {"broken": "broken_plugin"}, {"broken_plugin": "raise ImportError('needs libfoo')"})
    assert aios_main(["plugins", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    plugins = {p["name"]: p for p in report["plugins"]}
    for dist, (name, contributes) in EXPECTED.items():
        assert plugins[name]["origin"] == f"entry point {dist} 0.1.0"
        assert plugins[name]["contributes"] == contributes
    assert plugins["aios.plugins.schedulers"]["origin"] == "builtin"
    [broken] = [e for e in report["errors"] if e["plugin"] == "broken"]
    assert broken["origin"] == "entry point aios-broken 1.0" and "needs libfoo" in broken["message"]


def test_aios_plugins_table_shows_origin_and_errors(install, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one table row per line, as on a wide terminal
    install("aios-broken", {"broken": "broken_plugin"}, {"broken_plugin": "raise ImportError('needs libfoo')"})
    assert aios_main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "entry point aios-notes 0.1.0" in out and "entry point aios-stride 0.1.0" in out
    assert "plugin error" in out and "needs libfoo" in out


@pytest.mark.slow
@pytest.mark.parametrize("folder", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_examples_own_tests_pass(folder):
    """Each plugin ships its own tests; run them as its author would, in a separate interpreter."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(folder / "tests"), "-q", "-p", "no:cacheprovider"],
        check=False,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
