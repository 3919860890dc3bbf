"""Prometheus text exposition (format 0.0.4) of the kernel and the HTTP layer.

Written by hand: the format is a few lines of text, and the values all come
from ``kernel.stats()`` plus the server's own counters, read at scrape time.
Tokens per second is measured between successive reads (``/metrics`` or
``/v1/kernel/stats``) over a sliding window, and the monotonic counter
``aios_core_generated_tokens_total`` is exported too for ``rate()``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

#: request latency buckets (seconds) of aios_http_request_duration_seconds
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += seconds
        self.n += 1


class HttpMetrics:
    """Request counters by route template, method and status; latency histograms by route."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, _Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(route)
        if hist is None:
            hist = self.latency[route] = _Histogram()
        hist.observe(seconds)

    def total(self) -> int:
        return sum(self.requests.values())

    def as_dict(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for (_, _, status), n in self.requests.items():
            by_status[str(status)] = by_status.get(str(status), 0) + n
        return {
            "requests": self.total(),
            "by_status": by_status,
            "by_route": {route: {"count": h.n, "mean_seconds": round(h.total / h.n, 6) if h.n else 0.0} for route, h in self.latency.items()},
        }


class TokenRates:
    """Tokens/s per core over the last ``window`` seconds, from cumulative counters sampled on each read."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def update(self, core: str, generated_tokens: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        samples = self._samples.setdefault(core, deque())
        samples.append((now, generated_tokens))
        # keep one sample older than the window as the baseline
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()
        t0, n0 = samples[0]
        if now - t0 <= 0:
            return 0.0
        return max(0.0, (generated_tokens - n0) / (now - t0))


def enrich_stats(stats: dict[str, Any], rates: TokenRates) -> dict[str, Any]:
    """Add ``tokens_per_s`` to every core of ``kernel.stats()`` output (in place) and return it."""
    now = time.monotonic()
    for pool in stats.get("pools", {}).values():
        for core in pool.get("cores", []):
            core["tokens_per_s"] = round(rates.update(core["name"], int(core.get("generated_tokens", 0)), now), 3)
    return stats


# --------------------------------------------------------------------------- exposition


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: Any) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def family(self, name: str, kind: str, help_text: str) -> None:
        if name not in self._declared:
            self._declared.add(name)
            self.lines.append(f"# HELP {name} {help_text}")
            self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: Any, labels: dict[str, Any] | None = None) -> None:
        self.lines.append(f"{name}{_labels(labels or {})} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _gauges(w: _Writer, name: str, help_text: str, rows: Iterable[tuple[dict[str, Any], Any]], kind: str = "gauge") -> None:
    w.family(name, kind, help_text)
    for labels, value in rows:
        w.sample(name, value, labels)


def render(stats: dict[str, Any], http: HttpMetrics, *, server: dict[str, Any], agent_limit: int) -> str:
    """The Prometheus text of enriched kernel stats plus the HTTP counters."""
    w = _Writer()
    pools = stats.get("pools", {})
    _gauges(w, "aios_up", "1 while the kernel runs", [({"state": stats.get("state", "")}, 1 if stats.get("state") == "running" else 0)])
    _gauges(w, "aios_llm_queue_length", "LLM syscalls waiting for a core, per model", [({"model": m}, p["queued"]) for m, p in pools.items()])
    _gauges(w, "aios_llm_running", "LLM generations running, per model", [({"model": m}, p["running"]) for m, p in pools.items()])
    _gauges(w, "aios_llm_completed_total", "LLM syscalls completed, per model", [({"model": m}, p["completed"]) for m, p in pools.items()], "counter")
    _gauges(w, "aios_llm_failed_total", "LLM syscalls failed or cancelled, per model", [({"model": m}, p["failed"]) for m, p in pools.items()], "counter")
    cores = [(m, c) for m, p in pools.items() for c in p.get("cores", [])]
    _gauges(w, "aios_core_running", "generations running on a core (its current batch size)", [({"core": c["name"], "model": m}, c["running"]) for m, c in cores])
    _gauges(w, "aios_core_max_batch", "batch capacity of a core", [({"core": c["name"], "model": m}, c["max_batch"]) for m, c in cores])
    _gauges(w, "aios_core_mean_batch", "mean batch size over a core's steps", [({"core": c["name"], "model": m}, c["mean_batch"]) for m, c in cores])
    _gauges(w, "aios_core_tokens_per_second", "generated tokens per second over the last seconds", [({"core": c["name"], "model": m}, c.get("tokens_per_s", 0.0)) for m, c in cores])
    _gauges(w, "aios_core_generated_tokens_total", "tokens generated by a core", [({"core": c["name"], "model": m}, c["generated_tokens"]) for m, c in cores], "counter")
    _gauges(w, "aios_core_prompt_tokens_total", "prompt tokens processed by a core", [({"core": c["name"], "model": m}, c["prompt_tokens"]) for m, c in cores], "counter")
    _gauges(w, "aios_core_cached_tokens_total", "prompt tokens served from a cached prefix", [({"core": c["name"], "model": m}, c["cached_tokens"]) for m, c in cores], "counter")
    _gauges(w, "aios_core_snapshots_total", "generations preempted into a snapshot", [({"core": c["name"], "model": m}, c["snapshots"]) for m, c in cores], "counter")
    _gauges(w, "aios_core_restores_total", "generations resumed from a snapshot", [({"core": c["name"], "model": m}, c["restores"]) for m, c in cores], "counter")
    _gauges(w, "aios_managed_waiting", "memory/storage/tool syscalls waiting for a worker", [({"kind": k}, v) for k, v in stats.get("managed_waiting", {}).items()])
    snaps = stats.get("snapshots", {})
    _gauges(w, "aios_snapshots_held", "preempted generations whose snapshot the kernel holds", [({}, snaps.get("snapshots_held", 0))])
    _gauges(w, "aios_snapshot_bytes", "bytes of held snapshots, in memory and spilled to disk",
            [({"where": "memory"}, snaps.get("bytes_in_memory", 0)), ({"where": "disk"}, snaps.get("bytes_on_disk", 0))])
    _gauges(w, "aios_snapshots_saved_total", "snapshots saved by the context manager", [({}, snaps.get("saved", 0))], "counter")
    _gauges(w, "aios_snapshots_restored_total", "snapshots restored by the context manager", [({}, snaps.get("restored", 0))], "counter")
    _gauges(w, "aios_snapshots_spilled_total", "snapshots spilled to disk to respect the memory budget", [({}, snaps.get("spilled", 0))], "counter")

    agents = sorted(stats.get("agents", []), key=lambda a: (a.get("in_flight", 0), a.get("syscalls", 0)), reverse=True)
    _gauges(w, "aios_agents", "agents registered in the kernel", [({}, len(agents))])
    shown = agents[:agent_limit]
    _gauges(w, "aios_agent_in_flight", "syscalls an agent has in flight", [({"agent": a["name"], "group": a["group"]}, a["in_flight"]) for a in shown])
    _gauges(w, "aios_agent_waiting_seconds_total", "time an agent's syscalls spent waiting (queues, preemption)", [({"agent": a["name"]}, a["waiting_time"]) for a in shown], "counter")
    _gauges(w, "aios_agent_service_seconds_total", "time an agent's syscalls spent running", [({"agent": a["name"]}, a["service_time"]) for a in shown], "counter")
    _gauges(w, "aios_agent_syscalls_total", "syscalls an agent issued", [({"agent": a["name"]}, a["syscalls"]) for a in shown], "counter")
    _gauges(w, "aios_agent_failed_total", "syscalls of an agent that failed", [({"agent": a["name"]}, a["failed"]) for a in shown], "counter")
    _gauges(w, "aios_agent_completion_tokens_total", "tokens generated for an agent", [({"agent": a["name"]}, a["completion_tokens"]) for a in shown], "counter")
    _gauges(w, "aios_agent_preemptions_total", "times an agent's generations were preempted", [({"agent": a["name"]}, a["preemptions"]) for a in shown], "counter")

    w.family("aios_http_requests_total", "counter", "HTTP requests by route template, method and status")
    for (route, method, status), n in sorted(http.requests.items()):
        w.sample("aios_http_requests_total", n, {"route": route, "method": method, "status": status})
    w.family("aios_http_request_duration_seconds", "histogram", "HTTP request latency by route template (streams: until the last byte)")
    for route, hist in sorted(http.latency.items()):
        cumulative = 0
        for bound, count in zip(BUCKETS, hist.counts):
            cumulative += count
            w.sample("aios_http_request_duration_seconds_bucket", cumulative, {"route": route, "le": bound})
        w.sample("aios_http_request_duration_seconds_bucket", hist.n, {"route": route, "le": "+Inf"})
        w.sample("aios_http_request_duration_seconds_sum", hist.total, {"route": route})
        w.sample("aios_http_request_duration_seconds_count", hist.n, {"route": route})
    _gauges(w, "aios_http_in_flight", "HTTP requests in progress", [({}, server.get("in_flight", 0))])
    _gauges(w, "aios_http_rate_limited_total", "requests refused by per-agent rate limits", [({}, server.get("rate_limited", 0))], "counter")
    _gauges(w, "aios_server_draining", "1 while the server drains for shutdown", [({}, 1 if server.get("draining") else 0)])
    return w.text()
