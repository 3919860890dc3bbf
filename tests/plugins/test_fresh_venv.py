"""Each example plugin, built from its folder and installed into a fresh virtual environment, works through the kernel.

The environment is a real ``venv`` without system site packages: it sees
neither this project's .venv nor anything installed there. AIOS goes in with
its own (light) dependencies, the plugins are built from their folders like any
third-party package (``pip install ./folder``, which builds a wheel through the
plugin's own build backend), then a script uses both plugins through a kernel
on the sim core, and ``aios plugins`` reports them with their origin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "examples" / "plugins"

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from aios_core.config import load_config
    from aios_core.kernel import Kernel

    config = load_config(
        cores=[{"kind": "sim", "t0": 0.001, "a": 0.0, "b": 0.0}],
        scheduler="stride",
        scheduler_options={"tickets": {"alice": 300}},
        data_dir=sys.argv[1],
    )
    with Kernel(config) as kernel:
        alice = kernel.agent("alice")
        reply = alice.chat("Plan the week.", max_tokens=8)
        stats, added = alice.call_tools([
            {"name": "text_stats", "arguments": {"text": "one two three"}},
            {"name": "note_add", "arguments": {"title": "week", "body": reply.content}},
        ])
        [cleared] = alice.call_tools([{"name": "notes_clear"}])
        print(json.dumps({
            "scheduler": type(kernel.pools["sim"].scheduler).__module__,
            "reply_tokens": reply.usage.completion_tokens,
            "stats": stats.output,
            "added": added.output,
            "clear_denied": cleared.error_type,
            "plugin_errors": kernel.plugins.report()["errors"],
        }))
    """
)


def run(args: list[str | Path], **options) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], check=False, capture_output=True, text=True, timeout=300, **options)
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_example_plugins_install_into_a_fresh_venv_and_work_through_the_kernel(tmp_path):
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    run([base_python, "-m", "venv", venv])
    python, pip = venv / "bin" / "python", [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check", "--quiet"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIOS_", "PYTHON", "VIRTUAL_ENV"))}

    isolated = run(
        [python, "-c", "import importlib.util as u; print(u.find_spec('llama_cpp') is None, u.find_spec('aios_core') is None)"],
        env=env,
        cwd=tmp_path,
    )
    assert isolated.stdout.split() == ["True", "True"], "the venv must not see the project's environment"

    # AIOS itself (with its declared dependencies only), then each plugin built from its folder
    run([*pip, "install", "-e", ROOT], env=env)
    for folder in ("aios-notes", "aios-stride"):
        run([*pip, "install", PLUGINS / folder], env=env)
    listed = run([python, "-m", "pip", "list", "--format=json"], env=env)
    installed = {p["name"]: p for p in json.loads(listed.stdout)}
    assert "editable_project_location" not in installed["aios-notes"], "plugins are installed as built wheels, not linked"
    assert installed["aios-stride"]["version"] == "0.1.0"

    result = json.loads(run([python, "-c", SCRIPT, tmp_path / "data"], env=env, cwd=tmp_path).stdout)
    assert result["scheduler"] == "aios_stride.scheduler"
    assert result["reply_tokens"] > 0
    assert result["stats"] == {"words": 3, "characters": 13, "lines": 1}
    assert result["added"]["title"] == "week"
    assert result["clear_denied"] == "access_denied", "the irreversible tool needs a confirmation"
    assert result["plugin_errors"] == []

    report = json.loads(run([venv / "bin" / "aios", "plugins", "--json"], env=env, cwd=tmp_path).stdout)
    origins = {p["name"]: p["origin"] for p in report["plugins"]}
    assert origins["notes"] == "entry point aios-notes 0.1.0"
    assert origins["stride"] == "entry point aios-stride 0.1.0"
    assert report["errors"] == []
