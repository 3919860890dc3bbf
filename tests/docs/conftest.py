"""The environment documentation code runs in: a temp working directory and the fast sim core."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: the substitution for the real model: pages say `aios.Kernel()`; in the tests that builds this core
SIM_CORES = '[{"kind": "sim", "t0": 0.0005, "a": 0.0, "b": 0.0}]'


@pytest.fixture
def docs_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOS_")}
    env.update(
        AIOS_CORES=SIM_CORES,
        AIOS_DATA_DIR=str(tmp_path / "data"),
        # the hashing embedder instead of loading MiniLM with torch: same API, seconds faster per page
        AIOS_MANAGERS__EMBEDDINGS__KIND="hashing",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONUNBUFFERED="1",
        # Open-Interpreter's litellm fetches a price list from the network on import; there is none here
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    return env
