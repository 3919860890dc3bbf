"""The layering rules of the design card, checked on the code and on the built wheel.

- One installed namespace: the wheel holds ``aios`` and ``aios_*`` top-level names only (the repository's
  ``adapters/``, ``plugins/`` and ``bench/`` folders install as ``aios.adapters``, ``aios.plugins``,
  ``aios.bench``). Catches: a folder added without its package-dir mapping (it would install as a
  top-level ``bench`` again, or not at all), task data left out of the wheel.
- The kernel (``aios_core``) imports no outer layer by name: built-ins are found through entry points.
  Catches: ``from aios.plugins.managers import ...`` or ``"aios.bench.x"`` module strings in the core.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUTER = ("adapters", "plugins", "bench", "aios")
MAPPED = {"adapters": "aios.adapters", "plugins": "aios.plugins", "bench": "aios.bench"}


def _python_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _outer(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in OUTER)


def test_the_core_imports_no_outer_layer() -> None:
    offenders = []
    for path in _python_files("aios_core"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} import {a.name}" for a in node.names if _outer(a.name)]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _outer(node.module):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and any(
                node.value.startswith(f"aios.{layer}.") or node.value.startswith(f"{layer}.") for layer in MAPPED
            ):
                # a module path in a string (importlib, runpy, entry-point-like tables) is an import too
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} names module {node.value!r}")
    assert offenders == [], "aios_core must not name adapters/plugins/bench (register them as entry points):\n" + "\n".join(offenders)


def test_every_package_folder_is_installed_under_aios() -> None:
    """Every folder with an __init__.py is listed in pyproject's packages (under its installed name)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    assert config["package-dir"] == {v: k for k, v in MAPPED.items()}
    expected = set()
    for top in ("aios", "aios_core", *MAPPED):
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            expected.add(".".join((MAPPED.get(parts[0], parts[0]), *parts[1:])))
    assert sorted(expected - listed) == [], "package folders missing from [tool.setuptools] packages"
    assert sorted(listed - expected) == [], "listed packages without a folder"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # a copy of the source (setuptools writes build/ and *.egg-info into the tree it builds)
    source = tmp_path_factory.mktemp("source") / "aios"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "dist", "site", "*.egg-info", "__pycache__", "results"))
    # no isolation: the build backend (setuptools) is already in the environment, and CI has no time to fetch it again
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )
    (built,) = out.glob("aios_python-*.whl")
    return built


def test_the_wheel_installs_one_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert top == {"aios", "aios_core"}, f"top-level names in the wheel: {sorted(top)}"
    for module in ("aios/adapters/autogen/adapter.py", "aios/plugins/schedulers.py", "aios/bench/studies/schedulers.py",
                   "aios/bench/suites/tasks/mint.py"):
        assert module in names
    # data files travel with the wheel: offline task data, the sim's cost profile, the dashboard's pages
    assert any(n.startswith("aios/bench/suites/tasks/data/mint/") for n in names)
    assert "aios/bench/studies/profiles/gemma3-270m-cpu1.json" in names
    assert "aios/bench/studies/profiles/gemma3-270m-cpu1-plain.json" in names
    assert {"aios_core/server/dashboard_static/index.html", "aios_core/server/dashboard_static/app.js"} <= set(names)
    assert any(n.startswith("aios_core/server/dashboard_static/views/") for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[aios]" in text and "aios.plugins.schedulers = aios.plugins.schedulers" in text
    assert "[aios.bench]" in text and "schedulers = aios.bench.studies.schedulers:main" in text
