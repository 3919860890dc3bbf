"""The isolation study: each attack class a code-running agent tried, refused or not, and what the sandbox costs per call.

    aios bench isolation [--calls 40] [--out bench/results]

Every attack goes through the kernel's tool path (a kernel on the sim core,
a registered agent, a ``python`` tool call, the tool manager) once with
``isolation = "bwrap"`` and once with ``isolation = "process"`` (the old
behaviour, kept as the operator's named opt-in). Reported per attack and
mode: refused (the attack did not get what it went for) and audited (the
call, with its code, is in the kernel's audit log; what the sandbox refuses
inside its namespaces is not a kernel decision and is not logged separately).

Cost: the median wall time of a trivial ``python`` call (``print(1)``) with
each mode, calls alternating between the two kernels in one run, and the
added latency and ratio of bwrap over process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aios_core.config import load_config
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.managers.audit import read_audit
from aios_core.managers.isolation import probe
from aios_core.syscalls import StorageSyscall, ToolCall, ToolSyscall

SECRET = "victim-secret-" + uuid.uuid4().hex
TOKEN = "admin-token-" + uuid.uuid4().hex
MODES = ("bwrap", "process")


@dataclass
class Target:
    """What an attack aims at in one kernel: its data directory, its pid, a loopback listener."""

    data: Path
    audit: Path
    pid: int
    port: int
    marker: str


@dataclass
class Attack:
    name: str
    #: the python code the attacker submits
    code: Callable[[Target], str]
    #: whether the attack was refused, from the tool's output and the target after the call
    refused: Callable[[dict[str, Any], Target], bool]
    outputs: tuple[str, ...] = ()


def _walk_for_secrets(t: Target) -> str:
    return f"""
    import os
    found = []
    for root, _, files in os.walk({str(t.data)!r}):
        for name in files:
            try:
                blob = open(os.path.join(root, name), "rb").read()
            except OSError:
                continue
            if {SECRET!r}.encode() in blob or {TOKEN!r}.encode() in blob:
                found.append(name)
    print("FOUND" if found else "NOTHING", sorted(set(found)))
    """


def _alive(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def _no_escapee(out: dict[str, Any], t: Target) -> bool:
    left = _alive(t.marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return not left


def _listener_untouched(out: dict[str, Any], t: Target) -> bool:
    return "CONNECTED" not in out["stdout"]


def _audit_intact(out: dict[str, Any], t: Target) -> bool:
    import sqlite3

    with sqlite3.connect(t.audit) as db:
        triggers = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0]
        rows = db.execute("SELECT count(*) FROM audit").fetchone()[0]
    return "TAMPERED" not in out["stdout"] and triggers > 0 and rows > 0


ATTACKS = [
    Attack(
        "list the kernel's data directory",
        lambda t: f"import os\ntry:\n    print(os.listdir({str(t.data)!r}))\nexcept OSError as e:\n    print('refused', e)",
        lambda out, t: "storage.db" not in out["stdout"],
    ),
    Attack("read another agent's file out of storage.db / the admin token", _walk_for_secrets, lambda out, t: out["stdout"].startswith("NOTHING")),
    Attack(
        "read the kernel's /proc/<pid>/environ",
        lambda t: f"try:\n    print(len(open('/proc/{t.pid}/environ', 'rb').read()), 'BYTES')\nexcept OSError as e:\n    print('refused', e)",
        lambda out, t: "BYTES" not in out["stdout"],
    ),
    Attack(
        "TCP connect to a listener on 127.0.0.1",
        lambda t: (
            "import socket\ns = socket.socket()\ns.settimeout(3)\ntry:\n"
            f"    s.connect(('127.0.0.1', {t.port}))\n    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e)"
        ),
        _listener_untouched,
    ),
    Attack(
        "drop the audit triggers and delete audit rows",
        lambda t: textwrap.dedent(f"""
        import sqlite3
        try:
            db = sqlite3.connect("file:{t.audit}?mode=rw", uri=True)
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
                db.execute("DROP TRIGGER " + name)
            db.execute("DELETE FROM audit")
            db.commit()
            print("TAMPERED")
        except sqlite3.Error as e:
            print("refused", e)
        """),
        _audit_intact,
    ),
    Attack(
        "plant a file in the data directory",
        lambda t: f"try:\n    open({str(t.data / 'planted')!r}, 'w').write('x')\nexcept OSError as e:\n    print('refused', e)",
        lambda out, t: not (t.data / "planted").exists(),
    ),
    Attack(
        "leave a setsid grandchild running",
        lambda t: textwrap.dedent(f"""
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", {t.marker!r}])
            os._exit(0)
        """),
        _no_escapee,
    ),
    Attack(
        "fork bomb (200 sleeping children)",
        lambda t: textwrap.dedent("""
        import os, time
        born = 0
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(20)
                os._exit(0)
            born += 1
        print(born)
        """),
        lambda out, t: out["stdout"].strip().isdigit() and int(out["stdout"]) < 200,
    ),
    Attack(
        "save a hard link / a FIFO as outputs",
        lambda t: "import os\nopen('a', 'w').write('x')\nos.link('a', 'hard.txt')\nos.mkfifo('fifo.txt')",
        lambda out, t: all("error" in out.get("outputs", {}).get(p, {}) for p in ("hard.txt", "fifo.txt")),
        outputs=("hard.txt", "fifo.txt"),
    ),
]


def _kernel(data: Path, mode: str) -> Kernel:
    config = load_config(
        data_dir=data,
        entry_point_plugins=False,
        managers={
            "embeddings": {"kind": "hashing"},
            "tools": {"isolation": mode, "max_processes": 32},
            "access": {"groups": {"default": {"preapproved": ["tool:python"]}}},
        },
    )
    return Kernel(config, cores=[SimCore(t0=0.0005, a=0.0, b=0.0)], scheduler="fifo")


async def _python(kernel: Kernel, agent: str, code: str, **arguments: Any) -> tuple[str, dict[str, Any]]:
    call = ToolCall(name="python", arguments={"code": code, **arguments})
    [result] = await kernel.acall(ToolSyscall(agent=agent, calls=[call]))
    return call.id, (result.output if result.ok else {"stdout": "", "error": result.error})


async def run_attacks(mode: str, root: Path) -> list[dict[str, Any]]:
    data = root / mode
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    rows = []
    try:
        async with _kernel(data, mode) as kernel:
            kernel.register_agent("victim")
            kernel.register_agent("attacker")
            await kernel.acall(StorageSyscall(agent="victim", op="write", path="diary.txt", data=SECRET))
            (data / "server").mkdir(exist_ok=True)
            (data / "server" / "admin.token").write_text(TOKEN)
            kernel.managers.audit.flush()
            for attack in ATTACKS:
                target = Target(data, kernel.managers.audit.path, os.getpid(), listener.getsockname()[1], f"aios-escapee-{uuid.uuid4().hex}")
                code = textwrap.dedent(attack.code(target))
                call_id, out = await _python(kernel, "attacker", code, outputs=list(attack.outputs), timeout=20)
                refused = attack.refused(out, target)
                kernel.managers.audit.flush()
                records = read_audit(kernel.managers.audit.path, "attacker", limit=1000, action="tool")
                audited = any(r.detail.get("call_id") == call_id and r.detail.get("arguments", {}).get("code") == code for r in records)
                rows.append({"attack": attack.name, "mode": mode, "refused": refused, "audited": audited, "stdout": out.get("stdout", "")[:200]})
    finally:
        listener.close()
    return rows


async def measure_cost(root: Path, calls: int) -> dict[str, Any]:
    """Median wall time of ``print(1)`` per mode, the two kernels' calls alternating so drift hits both alike."""
    times: dict[str, list[float]] = {m: [] for m in MODES}
    kernels = {m: _kernel(root / f"cost-{m}", m) for m in MODES}
    for k in kernels.values():
        await k.astart()
        k.register_agent("timer")
    try:
        for mode in MODES:  # warm-up: the bwrap probe, imports, the first workspace
            await _python(kernels[mode], "timer", "print(1)")
        for i in range(calls):
            order = MODES if i % 2 == 0 else MODES[::-1]
            for mode in order:
                start = time.perf_counter()
                _, out = await _python(kernels[mode], "timer", "print(1)")
                times[mode].append(time.perf_counter() - start)
                if out.get("stdout") != "1\n":
                    raise RuntimeError(f"the {mode} call failed: {out}")
    finally:
        for k in kernels.values():
            await k.astop()
    medians = {m: statistics.median(v) for m, v in times.items()}
    return {
        "calls_per_mode": calls,
        "median_ms": {m: round(v * 1000, 2) for m, v in medians.items()},
        "p90_ms": {m: round(sorted(v)[int(0.9 * (len(v) - 1))] * 1000, 2) for m, v in times.items()},
        "added_ms": round((medians["bwrap"] - medians["process"]) * 1000, 2),
        "ratio": round(medians["bwrap"] / medians["process"], 3),
    }


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="attacks through the python tool (refused / audited)")
    table.add_column("attack")
    for mode in MODES:
        table.add_column(f"{mode}: refused")
        table.add_column(f"{mode}: audited")
    for name in dict.fromkeys(r["attack"] for r in rows):
        cells = [name]
        for mode in MODES:
            row = next(r for r in rows if r["attack"] == name and r["mode"] == mode)
            cells += ["yes" if row["refused"] else "NO", "yes" if row["audited"] else "NO"]
        table.add_row(*cells)
    return table


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    found = probe()
    if not found.available:
        raise SystemExit(f"bubblewrap cannot start here ({found.detail}): the isolation study needs it")
    console = Console(width=max(140, Console().width))
    with tempfile.TemporaryDirectory(prefix="aios-isolation-") as tmp:
        root = Path(tmp)
        rows = []
        for mode in MODES:
            rows += await run_attacks(mode, root)
        console.print(_table(rows))
        cost = await measure_cost(root, args.calls)
    console.print(
        f"cost of a trivial python call ({cost['calls_per_mode']} calls per mode, alternating): median bwrap {cost['median_ms']['bwrap']} ms, "
        f"process {cost['median_ms']['process']} ms, added {cost['added_ms']} ms ({cost['ratio']}x)"
    )
    return {
        "bwrap": found.binary,
        "kernel_uid": os.geteuid(),
        "attacks": rows,
        "cost": cost,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str] | None = None) -> int:
    """Attack classes against code tools, refused or not under bwrap and process isolation, and the sandbox's cost per call."""
    parser = argparse.ArgumentParser(prog="aios bench isolation", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="timed python calls per mode")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for isolation.json, or a .json file")
    args = parser.parse_args(argv)
    result = asyncio.run(main_async(args))
    out = args.out if args.out.suffix == ".json" else args.out / "isolation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    Console().print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
