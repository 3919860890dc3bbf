"""An attacker's tests of code tools: each one is an attack an agent tried through the kernel's tool syscall.

Every attack runs through the production path (a kernel on the sim core, a
``ToolSyscall`` from a registered agent, the tool manager, the built-in
``python`` tool or a ``sandboxed`` plugin tool). Where the attack is only
meaningful if it works without isolation, the same code is also run in the
weaker ``process`` mode and shown to succeed there: that is the old behaviour,
and it proves the attack code is real, so the bwrap assertion can fail.

Nothing here skips when bubblewrap cannot start: it is a dependency of the
kernel, and a machine where it fails must fail these tests, loudly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import textwrap
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from aios_core.config import load_config
from aios_core.cores.sim import SimCore
from aios_core.errors import ConfigError
from aios_core.kernel import Kernel
from aios_core.managers import isolation, managers_config
from aios_core.managers.isolation import Isolation, Probe
from aios_core.syscalls import StorageSyscall, ToolCall, ToolSyscall
from aios_core.tool import Tool

SECRET = "alice-secret-" + uuid.uuid4().hex
TOKEN = "admin-token-" + uuid.uuid4().hex


def peek_data_dir(path: str) -> str:
    """A plugin tool that asks for isolation and then tries to read the kernel's data directory."""
    try:
        return ",".join(sorted(os.listdir(path)))
    except OSError as exc:
        return f"refused: {type(exc).__name__}"


@asynccontextmanager
async def kernel_for(tmp_path: Path, *, isolation_mode: str = "bwrap", extra_tools: list[Tool] | None = None, **tools: object):
    """A kernel whose default group may run code without asking (so the attack, not the confirmation, is tested)."""
    data = tmp_path / "data"
    config = load_config(
        data_dir=data,
        entry_point_plugins=False,
        managers={
            "embeddings": {"kind": "hashing"},
            "tools": {"isolation": isolation_mode, "shell_enabled": True, **tools},
            "access": {"groups": {"default": {"preapproved": ["tool:*"]}, "net": {"preapproved": ["tool:*"]}}},
        },
    )
    kernel = Kernel(config, cores=[SimCore(t0=0.0005, a=0.0, b=0.0)], scheduler="fifo")
    async with kernel:
        for tool in extra_tools or []:
            kernel.managers.tools.register(tool)
        kernel.register_agent("alice")
        kernel.register_agent("mallory")
        kernel.register_agent("netagent", group="net")
        await kernel.acall(StorageSyscall(agent="alice", op="write", path="diary.txt", data=SECRET))
        # what `aios serve` keeps beside the database: the admin token
        (data / "server").mkdir(exist_ok=True)
        (data / "server" / "admin.token").write_text(TOKEN)
        kernel.managers.audit.flush()
        yield kernel, data


async def run(kernel: Kernel, agent: str, code: str, **arguments: object) -> dict:
    [result] = await kernel.acall(ToolSyscall(agent=agent, calls=[ToolCall(name="python", arguments={"code": textwrap.dedent(code), **arguments})]))
    assert result.ok, result.error
    return result.output


READ_EVERYTHING = """
import os
found = []
try:
    for root, _, files in os.walk(data):
        for name in files:
            try:
                blob = open(os.path.join(root, name), "rb").read()
            except OSError:
                continue
            for needle in (SECRET, TOKEN):
                if needle.encode() in blob:
                    found.append(name)
except OSError:
    pass
print("FOUND" if found else "NOTHING", sorted(set(found)))
"""


@pytest.mark.parametrize("mode, leaks", [("bwrap", False), ("process", True)])
async def test_code_cannot_read_storage_db_admin_token_or_other_agents_files(tmp_path, mode, leaks):
    async with kernel_for(tmp_path, isolation_mode=mode) as (kernel, data):
        code = f"SECRET = {SECRET!r}\nTOKEN = {TOKEN!r}\ndata = {str(data)!r}\n" + READ_EVERYTHING
        out = await run(kernel, "mallory", code)
    assert out["returncode"] == 0, out["stderr"]
    assert out["stdout"].startswith("FOUND") is leaks, out["stdout"]
    if leaks:  # the old behaviour: another agent's file out of storage.db, and the admin token
        assert "admin.token" in out["stdout"] and "storage.db" in out["stdout"]


@pytest.mark.parametrize("mode, leaks", [("bwrap", False), ("process", True)])
async def test_code_cannot_read_the_kernels_environment(tmp_path, mode, leaks):
    kernel_environ = Path(f"/proc/{os.getpid()}/environ").read_bytes()
    async with kernel_for(tmp_path, isolation_mode=mode) as (kernel, _):
        code = f"""
        import hashlib
        try:
            blob = open("/proc/{os.getpid()}/environ", "rb").read()
            print(hashlib.sha256(blob).hexdigest())
        except OSError as exc:
            print("refused", type(exc).__name__)
        """
        out = await run(kernel, "mallory", code)
    import hashlib

    assert (out["stdout"].strip() == hashlib.sha256(kernel_environ).hexdigest()) is leaks, out


async def test_code_sees_its_own_proc_and_no_kernel_process(tmp_path):
    async with kernel_for(tmp_path) as (kernel, _):
        out = await run(kernel, "mallory", "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    pids = json.loads(out["stdout"])
    assert os.getpid() not in pids and max(pids) < 100, pids  # a fresh PID namespace holds only the call's processes


@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def accepted(server: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


CONNECT = """
import socket
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("127.0.0.1", {port}))
    print("CONNECTED")
except OSError as exc:
    print("refused", type(exc).__name__)
"""


@pytest.mark.parametrize("mode, agent, reaches", [("bwrap", "mallory", False), ("process", "mallory", True), ("bwrap", "netagent", True)])
async def test_loopback_network_only_for_groups_that_grant_it(tmp_path, listener, mode, agent, reaches):
    port = listener.getsockname()[1]
    async with kernel_for(tmp_path, isolation_mode=mode, network_groups=["net"]) as (kernel, _):
        out = await run(kernel, agent, CONNECT.format(port=port))
    assert ("CONNECTED" in out["stdout"]) is reaches, out
    assert (accepted(listener) > 0) is reaches


async def test_code_cannot_tamper_with_the_audit_log_or_write_the_data_dir(tmp_path):
    async with kernel_for(tmp_path) as (kernel, data):
        audit = kernel.managers.audit.path
        code = f"""
        import os, sqlite3
        try:
            db = sqlite3.connect("file:{audit}?mode=rw", uri=True)
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
                db.execute(f"DROP TRIGGER {{name}}")
            db.execute("DELETE FROM audit")
            db.commit()
            print("TAMPERED")
        except sqlite3.Error as exc:
            print("refused", exc)
        try:
            open({str(data / "planted.txt")!r}, "w").write("x")
            print("PLANTED")
        except OSError as exc:
            print("refused", type(exc).__name__)
        """
        out = await run(kernel, "mallory", code)
        assert "TAMPERED" not in out["stdout"] and "PLANTED" not in out["stdout"], out
        assert not (data / "planted.txt").exists()
        with sqlite3.connect(audit) as db:
            triggers = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0]
            rows = db.execute("SELECT count(*) FROM audit").fetchone()[0]
        assert triggers >= 2 and rows > 0


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


async def test_no_process_outlives_the_call(tmp_path):
    marker = f"aios-escapee-{uuid.uuid4().hex}"
    code = f"""
    import os, subprocess, sys
    # a daemon: new session, double fork, detached from every pipe
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", {marker!r}],
                     start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)", {marker!r}])
        os._exit(0)
    print("spawned")
    """
    try:
        async with kernel_for(tmp_path) as (kernel, _):
            out = await run(kernel, "mallory", code)
            assert out["stdout"].strip() == "spawned", out
            left = _processes_with(marker)
        assert left == [], f"processes outlived the call: {left}"
    finally:
        for pid in _processes_with(marker):
            os.kill(pid, signal.SIGKILL)


def _processes_in_namespace(link: str) -> list[str]:
    """Every host process whose PID namespace is ``link`` (``pid:[inode]``), dying or unreaped ones too.

    The namespace's init is left out once it is a zombie: it has died (which the
    kernel allows only after every other process of the namespace is gone), and
    only its parent's reaping is still to come.
    """
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") != link:
                    continue
                status = dict(line.split(":", 1) for line in Path(f"/proc/{entry}/status").read_text().splitlines() if ":" in line)
            except OSError:
                continue
            if status["NSpid"].split()[-1] == "1" and status["State"].split()[0] == "Z":
                continue
            found.append(f"{entry} ({status['Name'].strip()}, {status['State'].strip()})")
    return found


async def test_the_sandbox_namespace_is_empty_when_the_call_returns(tmp_path):
    """bwrap reports the exit status before its namespace has died: the call must not return while an escapee still exists.

    The escapees make themselves slow to die: 30,000 separate shared mappings
    each take the kernel about half a second to tear down after SIGKILL.
    """
    code = """
    import os, subprocess, sys
    slow = "import mmap, time\\nheld = [mmap.mmap(-1, 4096) for _ in range(30000)]\\nfor m in held: m[0] = 1\\nprint('held', flush=True)\\ntime.sleep(120)"
    kids = [subprocess.Popen([sys.executable, "-c", slow], start_new_session=True, stdout=subprocess.PIPE) for _ in range(8)]
    ready = sum(k.stdout.readline() == b"held\\n" for k in kids)
    print(ready, os.readlink("/proc/self/ns/pid"))
    """
    async with kernel_for(tmp_path) as (kernel, _):
        out = await run(kernel, "mallory", code, timeout=60)
        ready, namespace = out["stdout"].split()
        assert ready == "8", out
        left = _processes_in_namespace(namespace)
    assert left == [], f"processes of the sandbox outlived the call: {left}"


async def test_fork_bomb_is_bounded(tmp_path):
    code = """
    import os, time
    born = 0
    for _ in range(200):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        born += 1
    print(born)
    """
    async with kernel_for(tmp_path, max_processes=16) as (kernel, _):
        out = await run(kernel, "mallory", code, timeout=20)
    assert out["returncode"] == 0, out
    assert int(out["stdout"]) < 16, out  # the process limit, not the loop, stopped it


async def test_plugin_tool_that_asks_for_isolation_cannot_see_the_data_dir(tmp_path):
    params = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
    peek = Tool("peek", "list a folder", params, peek_data_dir, sandboxed=True, timeout=30)
    async with kernel_for(tmp_path, extra_tools=[peek]) as (kernel, data):
        [res] = await kernel.acall(ToolSyscall(agent="mallory", calls=[ToolCall(name="peek", arguments={"path": str(data)})]))
    assert res.ok, res.error
    assert res.output.startswith("refused"), res.output


@pytest.mark.parametrize("mode", ["bwrap", "process"])
async def test_outputs_refuse_hard_links_fifos_and_symlinks(tmp_path, mode):
    code = """
    import os
    open("plain.txt", "w").write("fine")
    open("original.txt", "w").write("linked")
    os.link("original.txt", "hardlink.txt")
    os.mkfifo("pipe.txt")
    os.symlink("plain.txt", "symlink.txt")
    """
    async with kernel_for(tmp_path, isolation_mode=mode) as (kernel, _):
        out = await run(kernel, "mallory", code, outputs=["plain.txt", "hardlink.txt", "pipe.txt", "missing.txt"])
        stored = await kernel.acall(StorageSyscall(agent="mallory", op="list", path=""))
    outputs = out["outputs"]
    assert outputs["plain.txt"]["version"] == 1
    assert "hard link" in outputs["hardlink.txt"]["error"]
    assert "not a regular file" in outputs["pipe.txt"]["error"]
    assert "did not create" in outputs["missing.txt"]["error"]
    assert [f.path for f in stored] == ["plain.txt"]


async def test_code_tools_are_refused_when_bubblewrap_cannot_start(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(isolation, "_probe", Probe(False, None, "user namespaces are disabled"))
    caplog.set_level(logging.INFO, logger="aios_core.managers.tools")
    async with kernel_for(tmp_path) as (kernel, _):
        [res] = await kernel.acall(ToolSyscall(agent="mallory", calls=[ToolCall(name="python", arguments={"code": "print(1)"})]))
    assert not res.ok and res.error_type == "isolation_unavailable"
    assert 'isolation = "process"' in res.error
    assert any("code tools are refused" in r.getMessage() for r in caplog.records)
    # the operator's named opt-in runs it, in the weaker mode, and says so
    async with kernel_for(tmp_path / "opt-in", isolation_mode="process") as (kernel, _):
        out = await run(kernel, "mallory", "print(1)")
    assert out["stdout"] == "1\n"
    assert any("isolation=process" in r.getMessage() for r in caplog.records)


async def test_shell_runs_confined_too(tmp_path):
    async with kernel_for(tmp_path) as (kernel, data):
        [res] = await kernel.acall(ToolSyscall(agent="mallory", calls=[ToolCall(name="shell", arguments={"command": f"pwd; ls {data} || echo refused"})]))
    assert res.ok, res.error
    assert res.output["stdout"].startswith(isolation.WORK_DIR) and "refused" in res.output["stdout"], res.output


async def test_code_writes_only_its_own_folder_and_tmp(tmp_path):
    code = """
    import os
    for where in ("/sandbox/work/ok.txt", "/tmp/ok.txt", "/usr/evil.txt", "/etc/evil.txt", "/evil.txt"):
        try:
            open(where, "w").write("x")
            print(where, "written")
        except OSError as exc:
            print(where, "refused", type(exc).__name__)
    """
    async with kernel_for(tmp_path) as (kernel, _):
        out = await run(kernel, "mallory", code)
    lines = dict(line.split(" ", 1) for line in out["stdout"].splitlines())
    assert lines["/sandbox/work/ok.txt"] == "written" and lines["/tmp/ok.txt"] == "written", out
    assert all(lines[p].startswith("refused") for p in ("/usr/evil.txt", "/etc/evil.txt", "/evil.txt")), out


def test_isolation_mode_is_a_closed_choice():
    with pytest.raises(ConfigError, match="managers.tools.isolation"):
        managers_config({"tools": {"isolation": "none"}})
    assert managers_config({"tools": {"isolation": "process"}}).tools.isolation is Isolation.PROCESS
