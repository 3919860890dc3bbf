"""What the dashboard shows, as plain JSON built from the kernel's own records.

Every function here reads what the kernel already keeps (``kernel.stats()``,
the LLM pools' flights, the :class:`~aios_core.timeline.Timeline` of recent
syscall phases, the audit log, the plugin host's report, the configuration):
nothing is sampled in the background, so a kernel nobody watches pays only
the timeline's appends. The routes in :mod:`aios_core.server.dashboard` serve
these to the browser and to any script holding the admin token.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

from aios_core.kernel import Kernel
from aios_core.llm_pool import LLMPool
from aios_core.server.lifecycle import ServerState
from aios_core.server.metrics import TokenRates
from aios_core.timeline import COLUMNS, Phase

log = logging.getLogger(__name__)

#: audit records scanned at most when filtering on resource or irreversibility (filters the log itself cannot apply)
AUDIT_SCAN = 20_000
#: keys of the configuration whose values are never shown (API keys of remote cores, tokens)
_SECRET_KEY = re.compile(r"(key|token|secret|password|credential)", re.IGNORECASE)
MASK = "********"


def _text(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


def loop_now(kernel: Kernel) -> float:
    """The kernel loop's clock (the clock of every timing record), or 0 before the kernel runs."""
    loop = kernel.loop
    return loop.time() if loop is not None else 0.0


# --------------------------------------------------------------------------- timeline


def open_segments(kernel: Kernel, now: float, agent: str | None = None) -> list[list[Any]]:
    """The phase every LLM call in flight is in now (their segments have not ended, so the timeline has no record yet)."""
    rows: list[list[Any]] = []
    for pool in kernel.pools.values():
        for flight in pool.flights():
            if flight.done.done() or (agent is not None and flight.agent.name != agent):
                continue
            job = flight.job
            if flight.core is not None:
                phase, start, core, tokens = Phase.GENERATING, flight.run_started, flight.core.name, job.slice_tokens
            else:
                phase, start, core, tokens = (Phase.PREEMPTED if job.preemptions else Phase.QUEUED), job.enqueued_at, "", 0
            rows.append([flight.agent.name, job.program, flight.id, phase.value, round(start - now, 4), None, core, tokens, ""])
    return rows


def timeline_view(kernel: Kernel, *, window: float, agent: str | None = None, limit: int = 4000) -> dict[str, Any]:
    """Segments of the last ``window`` seconds (newest first, at most ``limit``) plus the phases in progress.

    Times are seconds relative to now (negative); ``end`` is null for a phase
    still going on. Rows are arrays in the order of ``columns`` (compact for
    hundreds of agents).
    """
    now = loop_now(kernel)
    timeline = kernel.timeline
    rows = [seg.row(now) for seg in timeline.recent(now - window, agent=agent, limit=limit)]
    return {
        "now": time.time(),
        "window": window,
        "columns": list(COLUMNS),
        "rows": rows,
        "open": open_segments(kernel, now, agent),
        "truncated": len(rows) >= limit,
        "recorded": timeline.recorded,
        "capacity": timeline.capacity,
    }


# --------------------------------------------------------------------------- engine


def queue_levels(pool: LLMPool) -> list[dict[str, Any]]:
    """Calls waiting in ``pool`` per level of its scheduler (PLAS levels, priorities, or one queue).

    Counted from the pool's own flights with the policy's public ranking
    (``level(program)``), so any policy with levels is shown the same way.
    """
    scheduler = pool.scheduler
    waiting = [f for f in pool.flights() if f.core is None and not f.done.done()]
    levels = getattr(scheduler, "levels", None)
    level_of = getattr(scheduler, "level", None)
    buckets: dict[str, dict[str, int]] = {}
    if callable(level_of) and isinstance(levels, int) and levels > 0:
        for i in range(levels):
            buckets[f"L{i}"] = {"queued": 0, "preempted": 0}
        key = lambda f: f"L{min(max(int(level_of(f.job.program)), 0), levels - 1)}"  # noqa: E731
    elif scheduler.name == "priority":
        key = lambda f: f"priority {f.job.priority}"  # noqa: E731
    else:
        buckets["queue"] = {"queued": 0, "preempted": 0}
        key = lambda f: "queue"  # noqa: E731
    for flight in waiting:
        bucket = buckets.setdefault(key(flight), {"queued": 0, "preempted": 0})
        bucket["preempted" if flight.job.preemptions else "queued"] += 1
    ordered = sorted(buckets.items(), key=lambda kv: -int(kv[0].split()[1]) if kv[0].startswith("priority ") else 0)
    return [{"level": name, **counts} for name, counts in ordered]


def _kv(stats: dict[str, Any]) -> dict[str, Any] | None:
    """KV use from whatever the core reports (llama.cpp cells, or a used/capacity pair)."""
    for used, total in (("kv_cells_used", "kv_cells_total"), ("kv_used", "kv_capacity")):
        if used in stats and total in stats and stats[total]:
            return {"used": stats[used], "total": stats[total], "share": round(stats[used] / stats[total], 4)}
    return None


def engine_view(kernel: Kernel, rates: TokenRates) -> dict[str, Any]:
    """Per pool: scheduler, queue per level; per core: batch, tokens/s, KV, prefix hits, snapshots (cumulative counters too).

    The browser draws batch size and tokens/s over time from successive reads:
    ``batch_size_sum``/``steps`` and ``generated_tokens`` are cumulative, so the
    mean batch and the rate between two reads are exact, however far apart.
    """
    mono = time.monotonic()
    pools = {}
    for model, pool in kernel.pools.items():
        cores = []
        for core in pool.cores:
            raw = core.stats()
            stats = raw.as_dict()
            stats["batch_size_sum"] = raw.batch_size_sum
            stats["tokens_per_s"] = round(rates.update(core.name, int(raw.generated_tokens), mono), 3)
            stats["kv"] = _kv(stats)
            stats["kind"] = core.kind
            cores.append(stats)
        pools[model] = {
            "scheduler": pool.scheduler.name,
            "queued": pool.queued,
            "running": pool.running,
            "completed": pool.completed,
            "failed": pool.failed,
            "levels": queue_levels(pool),
            "cores": cores,
        }
    kstats = kernel.stats()
    return {
        "now": time.time(),
        "monotonic": mono,
        "state": _text(kstats.get("state")),
        "pools": pools,
        "snapshots": kstats.get("snapshots", {}),
        "managed_waiting": kstats.get("managed_waiting", {}),
    }


# --------------------------------------------------------------------------- audit


def audit_path(kernel: Kernel) -> Path:
    """The audit log the kernel writes (its open log, else where the configuration puts it)."""
    audit = getattr(kernel.managers, "audit", None)
    path = getattr(audit, "path", None)
    if path is not None:
        return Path(path)
    from aios_core.managers import audit_file, managers_config

    return audit_file(managers_config(kernel.config.managers), kernel.config.data_dir)


async def audit_view(
    kernel: Kernel,
    *,
    agent: str | None = None,
    decision: str | None = None,
    action: str | None = None,
    resource: str | None = None,
    irreversible: bool = False,
    limit: int = 200,
) -> dict[str, Any]:
    """Audit records, newest first, filtered; read in a worker thread (SQLite, read-only) off the kernel loop."""
    from aios_core.managers.audit import read_audit

    path = audit_path(kernel)
    post_filter = bool(resource) or irreversible
    scan = AUDIT_SCAN if post_filter else limit
    records = await asyncio.to_thread(read_audit, path, agent=agent, limit=scan, decision=decision, action=action)  # type: ignore[arg-type]
    rows = []
    for record in reversed(records):
        if irreversible and not record.irreversible:
            continue
        if resource and resource not in record.resource:
            continue
        rows.append(record.as_dict())
        if len(rows) >= limit:
            break
    return {
        "path": str(path),
        "records": rows,
        "scanned": len(records),
        "scan_limit": scan if post_filter else None,
        "exists": path.exists(),
    }


def _audit_verifier() -> Any:
    """The audit module's tamper check, if this version of the log has one."""
    from aios_core.managers import audit as audit_module

    for name in ("verify_audit", "verify_chain", "verify_log", "verify"):
        fn = getattr(audit_module, name, None)
        if callable(fn):
            return fn
    return None


async def audit_verify(kernel: Kernel) -> dict[str, Any]:
    """Run the log's tamper check (in a worker thread) and report its result as JSON."""
    from pydantic_core import to_jsonable_python

    verify = _audit_verifier()
    path = audit_path(kernel)
    if verify is None:
        return {"available": False, "path": str(path), "message": "this audit log has no tamper check (records are not chained)"}
    if not path.exists():
        return {"available": True, "path": str(path), "ok": True, "message": "no audit log yet"}
    try:
        result = await asyncio.to_thread(verify, path)
    except Exception as exc:  # noqa: BLE001 - a broken or unreadable log is the answer, not a server error
        return {"available": True, "path": str(path), "ok": False, "message": f"{type(exc).__name__}: {exc}"}
    payload = to_jsonable_python(result, fallback=repr)
    ok = payload.get("ok") if isinstance(payload, dict) else bool(payload) if isinstance(payload, bool) else None
    if ok is None and isinstance(payload, dict):
        ok = payload.get("valid", payload.get("intact"))
    return {"available": True, "path": str(path), "ok": ok, "result": payload}


# --------------------------------------------------------------------------- plugins and configuration


def mask_secrets(value: Any, key: str = "") -> Any:
    """``value`` with every entry whose key names a secret replaced by a mask (nested dicts and lists too)."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if key and _SECRET_KEY.search(key) and value not in (None, "", False):
        return MASK
    return value


def plugins_view(state: ServerState) -> dict[str, Any]:
    """Loaded plugins and where they come from, what failed, and the effective kernel and server configuration."""
    kernel = state.kernel
    report = kernel.plugins.report()
    return {
        "plugins": report.get("plugins", []),
        "errors": report.get("errors", []),
        "schedulers": {model: pool.scheduler.name for model, pool in kernel.pools.items()},
        "cores": {name: {"kind": core.kind, "model": core.model} for name, core in kernel.cores.items()},
        "config": mask_secrets(kernel.config.model_dump(mode="json")),
        "server_settings": mask_secrets(state.settings.model_dump(mode="json")),
    }


# --------------------------------------------------------------------------- one agent


async def agent_view(state: ServerState, name: str, row: dict[str, Any], *, window: float = 600.0) -> dict[str, Any]:
    """One agent: its accounting row, its recent timeline and its newest audit records."""
    kernel = state.kernel
    timeline = timeline_view(kernel, window=window, agent=name, limit=1000)
    try:
        audit = (await audit_view(kernel, agent=name, limit=25))["records"]
    except Exception as exc:  # noqa: BLE001 - the agent's page still shows its accounting
        log.warning("reading the audit log for agent %s failed: %s", name, exc)
        audit = []
    return {"agent": row, "timeline": timeline, "audit": audit}
