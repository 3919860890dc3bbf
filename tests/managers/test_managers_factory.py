import pytest

from aios_core.config import load_config
from aios_core.cores.sim import SimCore
from aios_core.errors import AccessDeniedError, ConfigError
from aios_core.kernel import Kernel
from aios_core.managers import ManagersConfig, build_managers, read_audit
from aios_core.syscalls import MemorySyscall, StorageSyscall, ToolCall, ToolSyscall


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
