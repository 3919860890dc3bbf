"""Adapters reach a kernel only through the typed port, and both kernels implement it.

- Static: every attribute an adapter reads off a kernel (``kernel.x``, ``route.kernel.x``,
  ``self.route.kernel.x``) is a member of :class:`aios_core.port.KernelPort`, and no adapter probes a
  kernel with ``getattr``/``hasattr``. Catches: an adapter reading ``kernel.pools``, ``kernel.managers``
  or ``getattr(kernel, "agents", None)`` again.
- Typed: a type checker accepts ``Kernel`` and ``RemoteKernel`` where a ``KernelPort`` is expected.
  Catches: a port method renamed or re-typed on one kernel but not the other.
- At run time: an adapter driven against a kernel proxy that refuses every non-port attribute still works.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from aios_core.port import KernelPort, ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
PORT = {name for name in dir(KernelPort) if not name.startswith("_")} | set(KernelPort.__annotations__)


def _is_kernel(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "kernel") or (isinstance(node, ast.Attribute) and node.attr == "kernel")


def test_adapters_use_only_the_port() -> None:
    offenders = []
    for path in sorted((ROOT / "adapters").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Attribute) and _is_kernel(node.value) and node.attr not in PORT:
                offenders.append(f"{where} reads kernel.{node.attr}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and node.args
                and _is_kernel(node.args[0])
            ):
                offenders.append(f"{where} probes the kernel with {node.func.id}()")
    assert offenders == [], "adapters must use aios_core.port.KernelPort only:\n" + "\n".join(offenders)


def test_both_kernels_implement_the_port_for_a_type_checker(tmp_path: Path) -> None:
    probe = tmp_path / "port_probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            from aios_core.kernel import Kernel
            from aios_core.port import KernelPort
            from aios_core.server.remote import RemoteKernel

            def embedded(kernel: Kernel) -> KernelPort:
                return kernel

            def remote(kernel: RemoteKernel) -> KernelPort:
                return kernel
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports", "--no-error-summary",
         "--cache-dir", str(tmp_path / "cache"), str(probe)],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


class PortOnly:
    """A kernel seen through the port alone: any other attribute is an AttributeError naming it."""

    def __init__(self, kernel: Any) -> None:
        object.__setattr__(self, "_kernel", kernel)

    def __getattr__(self, name: str) -> Any:
        if name not in PORT:
            raise AttributeError(f"adapter touched kernel.{name}, which is not part of aios_core.port.KernelPort")
        return getattr(object.__getattribute__(self, "_kernel"), name)


def test_an_adapter_runs_against_the_port_alone(sim_kernel: Any) -> None:
    """A LangChain model call and tool call through a kernel proxy that refuses every non-port attribute.

    Catches: an adapter (or the shared route / tool router) reaching past the port at run time, e.g. through a
    helper the static scan cannot see.
    """
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.tools import tool

    import aios
    from aios_core.identity import agent_scope
    from aios_core.syscalls import LLMSyscall, ToolSyscall

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    port = PortOnly(sim_kernel)
    assert isinstance(port, KernelPort)
    assert isinstance(sim_kernel.tool_registry(), ToolRegistry)
    with pytest.raises(AttributeError, match="kernel.pools"):
        port.pools  # noqa: B018 - the proxy really refuses
    with aios.patched("langchain", port), agent_scope("ported"):
        FakeListChatModel(responses=["never used: the kernel answers"]).invoke("hello")
        assert add.invoke({"a": 2, "b": 3}) == 5
    kinds = [(type(sc), sc.agent) for sc, _ in sim_kernel.served]
    assert (LLMSyscall, "ported") in kinds and (ToolSyscall, "ported") in kinds
    assert sim_kernel.has_agent("ported")
