import asyncio
import threading
import time

import pytest

from aios_core.components import BackendFactory
from aios_core.config import load_config
from aios_core.cores.sim import SimCore
from aios_core.errors import AccessDeniedError, ConfigError, SyscallCancelledError
from aios_core.hookspecs import hookimpl
from aios_core.kernel import Kernel
from aios_core.managers import ManagersConfig, build_managers, read_audit
from aios_core.managers.storage import StorageManager
from aios_core.syscalls import MemorySyscall, StorageSyscall, ToolCall, ToolSyscall
from aios_core.tool import Tool


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"managers\.memory\.k"):
        build_managers({"memory": {"k": 0}}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"managers\.tools\.shell"):
        build_managers({"tools": {"shell": True}}, data_dir=tmp_path)
    assert ManagersConfig().tools.shell_enabled is False


async def test_kernel_serves_managed_syscalls_end_to_end(tmp_path):
    answers = []

    def confirm(agent, action, detail):
        answers.append((agent, action))
        return agent == "trusted"

    config = load_config(
        data_dir=tmp_path / "data",
        entry_point_plugins=False,
        managers={"embeddings": {"kind": "hashing"}, "access": {"groups": {"default": {}, "peers": {"read_memory_of": ["*"]}}}},
    )
    kernel = Kernel(config, cores=[SimCore(t0=0.0005, a=0.0, b=0.0)], scheduler="fifo", confirm=confirm)
    async with kernel:
        kernel.register_agent("alice")
        kernel.register_agent("bob")
        kernel.register_agent("peer", group="peers")
        kernel.register_agent("trusted")
        await kernel.acall(MemorySyscall(agent="alice", op="add", key="plan", value="build the thing"))
        with pytest.raises(AccessDeniedError):
            await kernel.acall(MemorySyscall(agent="bob", op="get", key="plan", owner="alice"))
        got = await kernel.acall(MemorySyscall(agent="peer", op="get", key="plan", owner="alice"))
        assert got.value == "build the thing"
        v = await kernel.acall(StorageSyscall(agent="alice", op="write", path="a.txt", data="x"))
        assert v.version == 1
        results = await kernel.acall(
            ToolSyscall(agent="alice", calls=[ToolCall(name="calculator", arguments={"expression": "6*7"}), ToolCall(name="python", arguments={"code": "print(1)"})])
        )
        assert [r.ok for r in results] == [True, False]
        [ran] = await kernel.acall(ToolSyscall(agent="trusted", calls=[ToolCall(name="python", arguments={"code": "print(6*7)"})]))
        assert ran.ok and ran.output["stdout"] == "42\n"
        assert ("alice", "tool") in answers and ("trusted", "tool") in answers
        audit_path = kernel.managers.audit.path
    records = read_audit(audit_path, limit=1000)  # the kernel stopped: the log is complete
    assert any(r.agent == "bob" and r.decision == "deny" and r.action == "memory.read" for r in records)
    assert any(r.agent == "alice" and r.resource == "python" and r.decision == "deny" for r in records)
    assert any(r.agent == "trusted" and r.resource == "python" and r.decision == "allow" and r.irreversible for r in records)


async def _never_returns() -> None:
    await asyncio.sleep(3600)


class _HangingToolPlugin:
    @hookimpl
    def aios_register_tools(self):
        return [Tool("wait_forever", "never returns", {"type": "object", "properties": {}}, _never_returns, timeout=3600)]


def test_stop_cancels_a_hanging_tool_call_and_a_restart_opens_the_managers_again(tmp_path):
    config = load_config(data_dir=tmp_path / "data", entry_point_plugins=False, managers={"embeddings": {"kind": "hashing"}})
    kernel = Kernel(config, cores=[SimCore(t0=0.0005, a=0.0, b=0.0)], scheduler="fifo")
    kernel.plugins.register(_HangingToolPlugin(), name="hanging-tool")
    kernel.start()
    try:
        kernel.register_agent("alice")
        outcome: list[BaseException | object] = []

        def caller() -> None:
            try:
                outcome.append(kernel.call(ToolSyscall(agent="alice", calls=[ToolCall(name="wait_forever", arguments={})])))
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                outcome.append(exc)

        thread = threading.Thread(target=caller)
        thread.start()
        deadline = time.monotonic() + 10
        while kernel.managers.tools.stats["calls"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        kernel.stop(grace=0.2)
        thread.join(10)
        assert not thread.is_alive(), "a caller of a hanging tool was left blocked by stop()"
        assert isinstance(outcome[0], SyscallCancelledError) and "stopping" in str(outcome[0])

        kernel.start()  # managers are rebuilt, not the closed ones reused
        [result] = kernel.call(ToolSyscall(agent="alice", calls=[ToolCall(name="calculator", arguments={"expression": "6*7"})]))
        assert result.ok and result.output == 42
        audit_path = kernel.managers.audit.path
    finally:
        kernel.stop()
    assert any(r.resource == "calculator" and r.agent == "alice" for r in read_audit(audit_path, limit=100))


class _CountingStorage(StorageManager):
    """The built-in storage, counting the versions it writes (what a third-party backend subclass would do)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writes = 0

    async def _owner_write(self, owner, path, data, **kw):
        self.writes += 1
        return await super()._owner_write(owner, path, data, **kw)


class _BackendsPlugin:
    @hookimpl
    def aios_register_storage_backends(self):
        def counting(config, context):
            return _CountingStorage(config, data_dir=context.data_dir / config.options.get("subdir", "."), access=context.access,
                                    embedder=context.embedder)

        def broken(config, context):
            raise RuntimeError("cannot reach the storage cluster")

        return [BackendFactory("counting", counting, "counts writes"), BackendFactory("broken", broken, "always fails")]

    @hookimpl
    def aios_register_memory_backends(self):
        return [BackendFactory("not-a-manager", lambda config, context: object(), "returns the wrong thing")]


def _kernel_with_backends(tmp_path, **managers):
    config = load_config(data_dir=tmp_path / "data", entry_point_plugins=False, managers={"embeddings": {"kind": "hashing"}, **managers})
    kernel = Kernel(config, cores=[SimCore(t0=0.0005, a=0.0, b=0.0)], scheduler="fifo")
    kernel.plugins.register(_BackendsPlugin(), name="backends-plugin")
    return kernel


async def test_a_plugin_storage_backend_serves_storage_syscalls_and_memory_evicts_into_it(tmp_path):
    kernel = _kernel_with_backends(tmp_path, storage={"backend": "counting", "options": {"subdir": "elsewhere"}},
                                   memory={"per_agent_limit": 300})
    async with kernel:
        kernel.register_agent("alice")
        assert isinstance(kernel.managers.storage, _CountingStorage) and kernel.managers.memory.storage is kernel.managers.storage
        await kernel.acall(StorageSyscall(agent="alice", op="write", path="a.txt", data="x"))
        for i in range(6):
            await kernel.acall(MemorySyscall(agent="alice", op="add", key=f"k{i}", value="v" * 100))
        assert kernel.managers.storage.writes >= 2  # the file, and memory evicted into the plugin's storage
        assert (tmp_path / "data" / "elsewhere" / "storage.db").exists()


@pytest.mark.parametrize(
    "managers, message",
    [
        ({"storage": {"backend": "nosuch"}}, r"managers\.storage\.backend: no storage backend named 'nosuch'; registered: broken, counting, sqlite"),
        ({"storage": {"backend": "broken"}}, r"managers\.storage\.backend: the storage backend 'broken' failed to start: RuntimeError\('cannot reach"),
        ({"memory": {"backend": "not-a-manager"}}, r"managers\.memory\.backend: .* lacks handle, aclose"),
    ],
)
async def test_a_backend_that_is_unknown_fails_or_is_not_a_manager_stops_the_start_with_the_key_named(tmp_path, managers, message):
    kernel = _kernel_with_backends(tmp_path, **managers)
    with pytest.raises(ConfigError, match=message):
        await kernel.astart()
    assert kernel.cores == {} or all(not c.running() for c in kernel.cores.values())


def test_the_builtin_backends_are_listed_as_plugins_like_any_other():
    from aios_core.plugins import PluginHost

    report = PluginHost(entry_point_plugins=False).report()
    builtin = next(p for p in report["plugins"] if p["name"] == "aios.plugins.managers")
    assert builtin["origin"] == "builtin"
    assert builtin["contributes"] == {"memory_backends": ["lru-k"], "storage_backends": ["sqlite"]}
