"""Running an example program of examples/ as its README says, on the sim core instead of the embedded model.

The example is copied to a temporary directory (frameworks write workspaces
next to it) and run in a subprocess with a temporary ``HOME``; ``AIOS_CONFIG`` points the embedded kernel
that ``aios.patch`` starts at a sim core and a temporary data directory. The
kernel's audit log shows which agents were scheduled.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from aios_core.managers.audit import read_audit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(tmp_path: Path, directory: str, script: str, *, config: str = "", timeout: float = 300) -> tuple[Any, list[Any]]:
    """Run ``examples/<directory>/<script>``; its completed process and the kernel's audit records."""
    work = tmp_path / directory
    shutil.copytree(EXAMPLES / directory, work, ignore=shutil.ignore_patterns("workspace", "logs", "metagpt", "__pycache__"))
    data = tmp_path / "aios-data"
    toml = tmp_path / "aios-sim.toml"
    toml.write_text(f'data_dir = "{data}"\nentry_point_plugins = false\n\n[[cores]]\nkind = "sim"\n\n{config}')
    home = tmp_path / "home"  # the frameworks write to the user's home (OI: conversations, telemetry id)
    home.mkdir()
    env = {**os.environ, "AIOS_CONFIG": str(toml), "HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("METAGPT_PROJECT_ROOT", None)  # the example's own config/ is what a user runs with
    proc = subprocess.run([sys.executable, script], cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc, read_audit(data / "audit.db", limit=10_000)
