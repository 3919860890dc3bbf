"""``aios.unpatch`` restores every framework exactly: ``vars()`` of every class and module of the framework compared.

For each of the four frameworks the test imports what the adapter patches,
records ``vars()`` of every module and class of the framework's packages (by
identity of each value), patches the framework onto a sim kernel, unpatches it,
and compares again: nothing added, nothing removed, every value the very same
object. The attributes the adapter replaced are found by watching
``Patcher.replace``, so the test checks all of them (the older test checked 8 of
the 18 AutoGen's patch replaces) and cannot pass vacuously.

Mutations these catch: an unpatch that forgets one attribute; a restore that
sets an inherited attribute on the subclass instead of deleting the shadow; an
adapter that replaces something without its Patcher (a leftover after unpatch).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

import aios
from aios_core.patching import Patcher

# MetaGPT reads its config at import and Open-Interpreter/litellm phone home unless told not to (see
# tests/adapters/conftest.py, which does the same when it is collected first)
if "METAGPT_PROJECT_ROOT" not in os.environ:
    _root = Path(tempfile.mkdtemp(prefix="aios-metagpt-root-"))
    (_root / "config").mkdir()
    (_root / "config" / "config2.yaml").write_text(
        "llm:\n  api_type: openai\n  model: gpt-4o-mini\n  api_key: sk-placeholder-never-sent\n  base_url: http://127.0.0.1:9/v1\n"
    )
    os.environ["METAGPT_PROJECT_ROOT"] = str(_root)
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DISABLE_TELEMETRY", "true")

#: framework -> (modules the adapter patches, imported before the first snapshot; the packages compared)
FRAMEWORKS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "autogen": (
        ["autogen_agentchat.agents", "autogen_agentchat.teams", "autogen_ext.models.openai", "autogen_ext.models.replay", "autogen_core.tools"],
        ("autogen_agentchat", "autogen_core", "autogen_ext"),
    ),
    "langchain": (
        ["langchain_core.language_models", "langchain_core.tools", "langchain_core.runnables", "langchain_openai", "langgraph.prebuilt"],
        ("langchain_core", "langchain_openai", "langgraph", "langchain"),
    ),
    "metagpt": (["metagpt.roles", "metagpt.team", "metagpt.provider.base_llm", "metagpt.config2"], ("metagpt",)),
    "open-interpreter": (["interpreter", "interpreter.core.core", "interpreter.core.llm.llm", "interpreter.terminal_interface"], ("interpreter",)),
}


def _in_packages(module_name: str, packages: tuple[str, ...]) -> bool:
    return module_name.split(".", 1)[0] in packages


def _namespaces(packages: tuple[str, ...]) -> dict[int, Any]:
    """Every loaded module of ``packages`` and every class defined in one, by id."""
    found: dict[int, Any] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not _in_packages(name, packages):
            continue
        found[id(module)] = module
        for value in list(vars(module).values()):
            if isinstance(value, type) and _in_packages(getattr(value, "__module__", "") or "", packages):
                found[id(value)] = value
    return found


def _with_user_subclasses(objects: dict[int, Any]) -> dict[int, Any]:
    """``objects`` plus every live subclass of their classes defined elsewhere (a user's agent or model class):
    the adapters patch those too (classes defined after patching are routed as well), so their vars() are compared
    like the framework's own. Which of them exist depends on what ran before in the process."""
    found = dict(objects)
    pending = [obj for obj in objects.values() if isinstance(obj, type)]
    while pending:
        cls = pending.pop()
        try:
            subclasses = type.__subclasses__(cls)
        except TypeError:
            continue
        for sub in subclasses:
            if id(sub) not in found:
                found[id(sub)] = sub
                pending.append(sub)
    return found


def _materialize_lazy_attributes(packages: tuple[str, ...]) -> None:
    """Resolve the names modules export through a module ``__getattr__`` (LangChain's lazy imports cache them in
    the module on first access, which would otherwise look like an attribute the patch left behind)."""
    for name, module in list(sys.modules.items()):
        if module is None or not _in_packages(name, packages) or "__getattr__" not in vars(module):
            continue
        for exported in getattr(module, "__all__", ()):
            try:
                getattr(module, exported)
            except Exception:  # noqa: BLE001 - an export that cannot be imported here is not what this test is about
                pass


def _snapshot(objects: dict[int, Any]) -> dict[int, dict[str, Any]]:
    return {key: dict(vars(obj)) for key, obj in objects.items()}


def _differences(before: dict[int, dict[str, Any]], after: dict[int, dict[str, Any]], objects: dict[int, Any]) -> list[str]:
    found = []
    for key, old in before.items():
        new = after[key]
        where = getattr(objects[key], "__qualname__", None) or objects[key].__name__
        found += [f"{where}.{n} added" for n in new.keys() - old.keys()]
        found += [f"{where}.{n} removed" for n in old.keys() - new.keys()]
        found += [f"{where}.{n} is another object" for n in old.keys() & new.keys() if old[n] is not new[n]]
    return sorted(found)


@pytest.mark.frameworks
@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_unpatch_restores_vars_of_every_class_and_module(framework, make_kernel, monkeypatch):
    imports, packages = FRAMEWORKS[framework]
    for module in imports:
        importlib.import_module(module)
    _materialize_lazy_attributes(packages)
    objects = _with_user_subclasses(_namespaces(packages))
    before = _snapshot(objects)

    replaced: list[tuple[Any, str]] = []
    real_replace = Patcher.replace

    def watching_replace(self: Patcher, owner: Any, name: str, new: Any) -> Any:
        replaced.append((owner, name))
        return real_replace(self, owner, name, new)

    monkeypatch.setattr(Patcher, "replace", watching_replace)
    kernel = make_kernel(auto_register_agents=True).start()
    try:
        aios.patch(framework, kernel)
        try:
            during = _snapshot(objects)
        finally:
            aios.unpatch(framework)
    finally:
        kernel.stop()
    after = _snapshot(objects)

    assert replaced, f"the {framework} adapter replaced nothing through its Patcher"
    unknown = sorted({f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', o)}" for o, _ in replaced if id(o) not in objects})
    assert not unknown, f"patched outside the compared namespaces (add the module to FRAMEWORKS[{framework!r}]): {unknown}"
    unchanged = [f"{getattr(o, '__qualname__', o)}.{n}" for o, n in replaced if during[id(o)].get(n, None) is before[id(o)].get(n, None)]
    assert not unchanged, f"attributes the patch did not change, so this test would not see them restored: {unchanged}"
    assert _differences(before, after, objects) == [], f"unpatch({framework!r}) left the framework changed"
