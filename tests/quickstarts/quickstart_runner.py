"""Running a program of examples/quickstarts/ as a new user would: no API key, an empty home, one added line.

The program runs unchanged in a subprocess whose environment holds no
``OPENAI_API_KEY`` (nor any other provider key) and whose ``HOME`` is an
empty directory, from a directory with no framework configuration. The only
test-side settings are the kernel's: ``AIOS_CONFIG`` selects the sim core
and a temporary data directory, and a recorder plugin (installed as a
third-party plugin is, through an entry point) writes every finished syscall
to a file, so the test can check which agent made each model and tool call
and what each model call was shown.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aios_core.managers.audit import read_audit

QUICKSTARTS = Path(__file__).resolve().parents[2] / "examples" / "quickstarts"
HERE = Path(__file__).resolve().parent

#: environment variables a provider SDK would take a key or endpoint from: none may reach the program
_PROVIDER_PREFIXES = ("OPENAI_", "AZURE_OPENAI_", "ANTHROPIC_", "GEMINI_", "METAGPT_", "LITELLM_", "AIOS_")


@dataclass
class Run:
    stdout: str
    stderr: str
    records: list[dict[str, Any]]
    audit: list[Any]

    def calls(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["kind"] == kind]


def _install_recorder(site: Path) -> None:
    """The recorder as a third-party plugin: its module plus a .dist-info declaring the ``aios`` entry point."""
    shutil.copy(HERE / "quickstart_plugin.py", site / "quickstart_plugin.py")
    info = site / "aios_quickstart_recorder-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aios-quickstart-recorder\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[aios]\nquickstart_plugin = quickstart_plugin\n")


def clean_environment(tmp_path: Path, config: str, *, core: str = "sim", core_options: str = "t0 = 0.001") -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    site = tmp_path / "site"
    site.mkdir()
    _install_recorder(site)
    data = tmp_path / "aios-data"
    toml = tmp_path / "aios-sim.toml"
    toml.write_text(f'data_dir = "{data}"\n\n[[cores]]\nkind = "{core}"\n{core_options}\n\n{config}')
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PROVIDER_PREFIXES) and not k.endswith("_API_KEY") and k != "DISABLE_TELEMETRY"}
    env.update(
        HOME=str(home),
        AIOS_CONFIG=str(toml),
        AIOS_QUICKSTART_RECORD=str(tmp_path / "syscalls.jsonl"),
        PYTHONPATH=os.pathsep.join([str(site), *sys.path]),
    )
    return env


def run_quickstart(
    tmp_path: Path, script: str, *, config: str = "", core: str = "sim", env: dict[str, str] | None = None, timeout: float = 300
) -> Run:
    """Run ``examples/quickstarts/<script>`` in a clean environment on the sim core."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(QUICKSTARTS / script, work / script)
    env = {**clean_environment(tmp_path, config, core=core), **(env or {})}
    proc = subprocess.run([sys.executable, script], cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return Run(proc.stdout, proc.stderr, read_records(env), read_audit(tmp_path / "aios-data" / "audit.db", limit=10_000))


def read_records(env: dict[str, str]) -> list[dict[str, Any]]:
    """The syscalls the recorder plugin wrote, in the order they finished."""
    record_file = Path(env["AIOS_QUICKSTART_RECORD"])
    return [json.loads(line) for line in record_file.read_text().splitlines()] if record_file.exists() else []
