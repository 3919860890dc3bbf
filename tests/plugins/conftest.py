"""Fixtures for plugin tests: real distributions (``*.dist-info`` with entry points) written to a temp dir on sys.path.

``importlib.metadata`` finds them exactly as it finds a pip-installed package,
so the plugin host's entry-point loading, origins and failure attribution are
exercised for real, without installing anything into the shared venv.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds virtual environments or runs subprocesses (tens of seconds)")


Install = Callable[..., Path]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path (like site-packages) for the test's distributions; their modules are unloaded after."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    before = set(sys.modules)
    yield root
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if module is not None and str(getattr(module, "__file__", "") or "").startswith(str(root)):
            del sys.modules[name]


@pytest.fixture
def install(site: Path) -> Install:
    """``install("dist-name", {"ep": "module"}, {"module": source})``: a distribution with ``aios`` entry points."""

    def write(dist: str, entry_points: dict[str, str], modules: dict[str, str], version: str = "1.0") -> Path:
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[aios]\n{lines}")
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
        return info

    return write


@pytest.fixture
def kernel_with_plugins(tmp_path: Path) -> Iterator[Callable[..., Kernel]]:
    """A started kernel on a fast sim core that loads entry-point plugins (including the test's)."""
    kernels: list[Kernel] = []

    def build(**options: object) -> Kernel:
        options.setdefault("scheduler", "fifo")
        kernel = Kernel(cores=[SimCore(t0=0.0005, a=0.0, b=0.0)], data_dir=tmp_path / "data", **options)
        kernels.append(kernel)
        return kernel.start()

    yield build
    for kernel in kernels:
        kernel.stop()
