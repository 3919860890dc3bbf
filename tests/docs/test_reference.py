"""The generated references cover everything, and every hook's example really works as a plugin."""

from __future__ import annotations

import sys
import types

import pytest
from conftest import DOCS

sys.path.insert(0, str(DOCS))
import gen_reference

from aios_core.config import KernelConfig
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.managers.factory import ManagersConfig
from aios_core.plugins import PluginHost

HOOKS = [name for name, _, _ in gen_reference.hook_specs()]
EXAMPLES = gen_reference.hook_examples()


def plugin_from(code: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(code, f"<example of {name}>", "exec"), module.__dict__)
    return module


def test_every_hook_is_documented_with_when_arguments_returns_and_an_example():
    import inspect

    assert len(HOOKS) >= 10
    for name, func, _ in gen_reference.hook_specs():
        doc = inspect.getdoc(func) or ""
        for section in ("**When:**", "**Arguments:**", "**Returns:**", "Example::"):
            assert section in doc, f"{name} lacks {section}"
    reference = gen_reference.hooks_reference()
    for name in HOOKS:
        assert f"## {name}" in reference and f"def {name}(" in reference
        assert EXAMPLES[name].strip() in reference


def test_the_configuration_reference_covers_every_key():
    reference = gen_reference.configuration_reference()
    for field in KernelConfig.model_fields:
        assert f"| `{field}` |" in reference and f"`AIOS_{field.upper()}`" in reference, field
    for manager, field in ManagersConfig.model_fields.items():
        assert f"### `[managers.{manager}]`" in reference
        for key in field.annotation.model_fields:
            assert f"| `{key}` |" in reference, f"managers.{manager}.{key}"
    host = PluginHost(entry_point_plugins=False)
    for scheduler in host.names("schedulers"):
        assert f'### `scheduler = "{scheduler}"`' in reference
    for core in host.names("cores"):
        assert f'### `kind = "{core}"`' in reference
    assert "| `quantum` | `int` | `32` |" in reference, "scheduler options come from the constructors"
    assert "| `t0` | `float` | `0.005` |" in reference, "core options come from the core classes behind the lazy factories"


REGISTERS = {
    "aios_register_schedulers": ("schedulers", "shortest-hint"),
    "aios_register_cores": ("cores", "instant-sim"),
    "aios_register_tools": ("tools", "dice"),
    "aios_register_memory_backends": ("memory_backends", "small"),
    "aios_register_storage_backends": ("storage_backends", "scratch"),
    "aios_register_adapters": ("adapters", "tinyframework"),
}


@pytest.mark.parametrize("hook", sorted(REGISTERS))
def test_each_registration_example_registers_what_it_says(hook):
    kind, name = REGISTERS[hook]
    host = PluginHost(entry_point_plugins=False)
    host.register(plugin_from(EXAMPLES[hook], hook), name=f"example-{hook}")
    assert host.report()["errors"] == [e for e in host.report()["errors"] if not e["plugin"].startswith("example-")]
    assert host.registries[kind][name].plugin == f"example-{hook}"


def run_kernel_with(module: types.ModuleType, tmp_path, **options) -> Kernel:
    host = PluginHost(entry_point_plugins=False)
    host.register(module, name="example")
    return Kernel(cores=[SimCore(t0=0.0005, a=0.0, b=0.0)], scheduler="fifo", plugins=host, data_dir=tmp_path, **options)


def test_the_scheduler_example_runs_the_shortest_hint_first(tmp_path):
    import asyncio

    module = plugin_from(EXAMPLES["aios_register_schedulers"], "sched")
    host = PluginHost(entry_point_plugins=False)
    host.register(module, name="example")
    finished: list[str] = []

    async def main():
        core = SimCore(t0=0.001, a=0.0, b=0.0, max_batch=1)
        async with Kernel(cores=[core], scheduler="shortest-hint", plugins=host, data_dir=tmp_path) as kernel:
            blocker = asyncio.create_task(kernel.agent("first").achat("occupy the core", max_tokens=16))
            await asyncio.sleep(0.003)

            async def ask(name, hint):
                agent = kernel.agent(name)
                await kernel.acall(agent.llm_syscall(f"{name} asks", max_tokens=8, hint_tokens=hint))
                finished.append(name)

            await asyncio.gather(ask("long", 500), ask("short", 5), ask("medium", 50), blocker)

    asyncio.run(main())
    assert finished == ["short", "medium", "long"]
    assert [e for e in host.errors if e.plugin == "example"] == []


def test_the_core_example_serves_a_kernel(tmp_path):
    from aios_core.config import load_config

    host = PluginHost(entry_point_plugins=False)
    host.register(plugin_from(EXAMPLES["aios_register_cores"], "cores"), name="example")
    config = load_config(cores=[{"kind": "instant-sim", "max_batch": 2}], data_dir=tmp_path, entry_point_plugins=False)
    with Kernel(config, plugins=host) as kernel:
        assert kernel.agent("a").chat("hi", max_tokens=4).usage.completion_tokens > 0
        assert kernel.cores["instant-sim"].model == "instant"


def test_the_tool_example_runs_with_its_schema(tmp_path):
    with run_kernel_with(plugin_from(EXAMPLES["aios_register_tools"], "tools"), tmp_path) as kernel:
        ok, bad = kernel.agent("a").call_tools(
            [{"name": "dice", "arguments": {"sides": 6, "times": 3}}, {"name": "dice", "arguments": {"sides": 1}}]
        )
        assert ok.ok and len(ok.output) == 3 and all(1 <= f <= 6 for f in ok.output)
        assert not bad.ok and "less than the minimum of 2" in bad.error


def test_the_adapter_example_patches_and_restores(tmp_path):
    module = plugin_from(EXAMPLES["aios_register_adapters"], "adapters")
    framework = types.ModuleType("tinyframework")
    original = framework.complete = lambda prompt: "unpatched"
    sys.modules["tinyframework"] = framework
    try:
        with run_kernel_with(types.ModuleType("empty"), tmp_path) as kernel:
            module.ADAPTER.patch(kernel, agent="tiny")
            assert framework.complete("hello") != "unpatched" and module.ADAPTER.patched
            module.ADAPTER.unpatch()
            assert framework.complete is original and not module.ADAPTER.patched
    finally:
        del sys.modules["tinyframework"]


def test_the_observer_examples_see_the_kernel_and_its_syscalls(tmp_path, caplog):
    import logging

    code = "\n".join(EXAMPLES[h] for h in ("aios_kernel_started", "aios_kernel_stopping", "aios_syscall_finished"))
    module = plugin_from(code, "observers")
    caplog.set_level(logging.INFO, logger="my_plugin")
    kernel = run_kernel_with(module, tmp_path)
    with kernel:
        agent = kernel.agent("watched")
        agent.chat("hello", max_tokens=4)
        agent.call_tools([{"name": "calculator", "arguments": {"expression": "1+1"}}])
    assert "kernel up with cores ['sim']" in caplog.text
    assert module.FINISHED[("watched", "llm", "ok")] == 1 and module.FINISHED[("watched", "tool", "ok")] == 1
    assert module.LAST_STATS["state"] == "stopping" and module.LAST_STATS["agents"][0]["name"] == "watched"
    assert [e for e in kernel.plugins.errors if e.plugin == "example"] == []


def test_the_confirmation_example_lets_ci_agents_run_code(tmp_path):
    with run_kernel_with(plugin_from(EXAMPLES["aios_confirm_action"], "confirm"), tmp_path) as kernel:
        [ci] = kernel.agent("ci-runner").call_tools([{"name": "python", "arguments": {"code": "print(6 * 7)"}}])
        [other] = kernel.agent("intern").call_tools([{"name": "python", "arguments": {"code": "print(6 * 7)"}}])
    assert ci.ok, ci.error
    assert not other.ok and other.error_type == "access_denied"
