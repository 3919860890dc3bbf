"""``aios top`` (a live terminal view of a running kernel) and ``aios ps`` (its agents, programs and states).

Both read the server's admin endpoints: ``/v1/kernel/stats`` once a second
for ``top`` (a screen refresh, not a scheduler poll) and ``/v1/kernel/ps`` for
``ps``. The URL and token default to ``AIOS_URL`` / ``AIOS_TOKEN``, then to
``http://127.0.0.1:8765`` and the admin token file the server wrote under its
data directory.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from aios_core.errors import AIOSError
from aios_core.server.auth import read_admin_token
from aios_core.server.errors import error_from_body
from aios_core.server.remote import DEFAULT_URL


def resolve_target(url: str | None, token: str | None) -> tuple[str, str]:
    """The kernel URL and admin token from the arguments, the environment, or the local server's token file."""
    url = (url or os.environ.get("AIOS_URL") or DEFAULT_URL).rstrip("/")
    token = token or os.environ.get("AIOS_TOKEN")
    if not token:
        state_dir = os.environ.get("AIOS_SERVER_STATE_DIR")
        if state_dir is None:
            from aios_core.config import load_config

            state_dir = str(Path(load_config().data_dir) / "server")
        token = read_admin_token(Path(state_dir))
        if token is None:
            raise AIOSError(
                f"no admin token: pass --token, set AIOS_TOKEN, or run this on the server's machine "
                f"(the server writes it to {state_dir}/admin.token)"
            )
    return url, token


def fetch(url: str, token: str, path: str, *, client: httpx.Client | None = None) -> Any:
    try:
        if client is not None:
            response = client.get(url + path, headers={"Authorization": f"Bearer {token}"})
        else:
            response = httpx.get(url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
    except httpx.HTTPError as exc:
        raise AIOSError(f"cannot reach the kernel at {url}: {exc}") from exc
    try:
        data = response.json()
    except ValueError:
        data = response.text
    if response.status_code >= 400:
        raise error_from_body(response.status_code, data)
    return data


# --------------------------------------------------------------------------- top


def _fmt_seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _fmt_bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def render_top(stats: dict[str, Any], *, url: str = "", max_rows: int = 15) -> Group:
    """One frame of ``aios top`` from ``/v1/kernel/stats``."""
    server = stats.get("server", {})
    http = server.get("http", {})
    header = Text.assemble(
        ("AIOS kernel ", "bold"),
        (url + "  ", "cyan"),
        (f"state {stats.get('state', '?')}", "green" if stats.get("state") == "running" else "red"),
        f"  up {_fmt_seconds(server.get('uptime', 0.0))}",
        f"  http in flight {server.get('in_flight', 0)}",
        f"  requests {http.get('requests', 0)}",
        f"  rate-limited {server.get('rate_limited', 0)}",
        (" DRAINING" if server.get("draining") else "", "bold red"),
    )

    queues = Table(title="LLM queues", title_justify="left", expand=True)
    for col in ("model", "scheduler", "queued", "running", "completed", "failed"):
        queues.add_column(col, justify="left" if col in ("model", "scheduler") else "right")
    cores = Table(title="cores", title_justify="left", expand=True)
    for col in ("core", "model", "batch", "mean batch", "tokens/s", "generated", "prefix hit", "snapshots", "restores"):
        cores.add_column(col, justify="left" if col in ("core", "model") else "right")
    for model, pool in stats.get("pools", {}).items():
        queues.add_row(model, pool["scheduler"], str(pool["queued"]), str(pool["running"]), str(pool["completed"]), str(pool["failed"]))
        for c in pool.get("cores", []):
            cores.add_row(
                c["name"], model, f"{c['running']}/{c['max_batch']}", f"{c['mean_batch']:.2f}", f"{c.get('tokens_per_s', 0.0):.1f}",
                str(c["generated_tokens"]), f"{100 * c.get('prefix_hit_rate', 0.0):.0f}%", str(c["snapshots"]), str(c["restores"]),
            )

    flights = sorted(stats.get("flights", []), key=lambda f: (f["state"] != "running", -f["age"]))
    running = Table(title=f"generations ({len(flights)} in flight)", title_justify="left", expand=True)
    for col in ("syscall", "agent", "program", "state", "core", "tokens", "age", "preempted"):
        running.add_column(col, justify="right" if col in ("tokens", "age", "preempted") else "left")
    for f in flights[:max_rows]:
        style = {"running": "green", "preempted": "yellow", "queued": "dim", "held": "magenta"}.get(f["state"], "")
        running.add_row(
            f["id"][:8], f["agent"], f["program"], Text(f["state"], style=style), f["core"] or "-", str(f["completion_tokens"]),
            _fmt_seconds(f["age"]), str(f["preemptions"]),
        )

    agents = sorted(stats.get("agents", []), key=lambda a: (-a["in_flight"], -a["waiting_time"]))
    table = Table(title=f"agents ({len(agents)})", title_justify="left", expand=True)
    for col in ("agent", "group", "state", "in flight", "syscalls", "failed", "waited", "mean wait", "tokens", "preemptions"):
        table.add_column(col, justify="left" if col in ("agent", "group", "state") else "right")
    for a in agents[:max_rows]:
        mean_wait = a["waiting_time"] / a["syscalls"] if a["syscalls"] else 0.0
        table.add_row(
            a["name"], a["group"], a["state"], str(a["in_flight"]), str(a["syscalls"]), str(a["failed"]), _fmt_seconds(a["waiting_time"]),
            _fmt_seconds(mean_wait), str(a["prompt_tokens"] + a["completion_tokens"]), str(a["preemptions"]),
        )

    snaps = stats.get("snapshots", {})
    waiting = stats.get("managed_waiting", {})
    footer = Text(
        f"snapshots held {snaps.get('snapshots_held', 0)} ({_fmt_bytes(snaps.get('bytes_in_memory', 0))} in memory, "
        f"{_fmt_bytes(snaps.get('bytes_on_disk', 0))} on disk); saved {snaps.get('saved', 0)}, restored {snaps.get('restored', 0)}, "
        f"spilled {snaps.get('spilled', 0)}   |   waiting: " + ", ".join(f"{k} {v}" for k, v in waiting.items())
    )
    return Group(header, queues, cores, running, table, footer)


def run_top(url: str | None = None, token: str | None = None, *, interval: float = 1.0, iterations: int | None = None, console: Console | None = None) -> int:
    """``aios top``: redraw the kernel's state every ``interval`` seconds until Ctrl-C (or ``iterations`` frames)."""
    url, token = resolve_target(url, token)
    console = console or Console()
    frames = 0
    with httpx.Client(timeout=10.0) as client, Live(console=console, refresh_per_second=4, screen=False, transient=False) as live:
        try:
            while iterations is None or frames < iterations:
                try:
                    live.update(render_top(fetch(url, token, "/v1/kernel/stats", client=client), url=url))
                except AIOSError as exc:
                    # keep watching: the server may be restarting
                    live.update(Panel(Text(exc.message, style="red"), title=f"AIOS kernel {url}"))
                frames += 1
                if iterations is None or frames < iterations:
                    time.sleep(interval)
        except KeyboardInterrupt:
            pass
    return 0


# --------------------------------------------------------------------------- ps


def render_ps(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"AIOS agents ({len(rows)})", title_justify="left")
    for col in ("agent", "group", "framework", "state", "programs", "in flight", "syscalls", "failed", "tokens", "waited"):
        table.add_column(col, justify="right" if col in ("in flight", "syscalls", "failed", "tokens", "waited") else "left", overflow="fold")
    for r in sorted(rows, key=lambda r: (r["state"] != "running", r["name"])):
        programs = ", ".join(f"{p['program']} ({p['state']})" for p in r.get("programs", []))
        table.add_row(
            r["name"], r["group"], r.get("framework", ""), r["state"], programs, str(r["in_flight"]), str(r["syscalls"]), str(r["failed"]),
            str(r["prompt_tokens"] + r["completion_tokens"]), _fmt_seconds(r["waiting_time"]),
        )
    return table


def ps(url: str | None = None, token: str | None = None, *, as_json: bool = False, console: Console | None = None) -> int:
    """``aios ps``: the kernel's agents, their programs and what each is doing."""
    url, token = resolve_target(url, token)
    rows = fetch(url, token, "/v1/kernel/ps")["agents"]
    console = console or Console()
    if as_json:
        console.print_json(json.dumps(rows))
    else:
        console.print(render_ps(rows))
    return 0
