"""Load test of ``aios serve``: hundreds of concurrent clients for a fixed time, loopback only, bounded.

    python -m aios.bench.studies.server_load [--clients 200] [--duration 10] [--tokens 8] [--out FILE]
    aios bench server [same options]

A kernel server on the sim core runs in a child process (``serve()``, exactly
what ``aios serve`` runs) on 127.0.0.1. Each client is its own registered
agent with its own token and loops until the deadline, sending one of three
kinds of request (by client index): an OpenAI chat completion, an OpenAI
streamed completion (read to ``[DONE]``), or an SDK syscall
(:class:`~aios_core.server.remote.RemoteKernel`, ``agent.achat``).

Checked and reported:

* **no request lost**: every request sent gets an answer (a 200, or an HTTP
  error whose body names its error code); the kernel's own counters
  (completed + failed) match the requests that reached it; nothing is left
  queued or running afterwards;
* requests/s and latency percentiles (p50/p90/p99/max) per kind;
* **memory flat**: the server's RSS after a warm-up run, after the measured
  run and after a second identical run (steady state: no growth per run);
* **HTTP overhead**: the same clients against an embedded kernel (same sim
  core, same loop as the clients, ``agent.achat``), and a one-client
  sequential comparison that isolates the per-request cost of the HTTP path.
* **a dashboard viewer** (``--viewer``): the same load with and without one
  viewer reading the dashboard's endpoints at the page's refresh rate,
  alternating runs, reported as a throughput ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

MAX_CLIENTS = 1000
MAX_DURATION = 120.0
HOST = "127.0.0.1"  # loopback only, by construction
KINDS = ("chat", "stream", "sdk")


def sim_core_options(max_batch: int) -> dict[str, Any]:
    # cheap steps and a wide batch: the core is not the bottleneck, the request path is what gets measured
    return {"kind": "sim", "t0": 0.001, "a": 0.0, "b": 0.00001, "max_batch": max_batch, "kv_capacity": 1 << 22}


# --------------------------------------------------------------------------- the server child


def serve_child(port: int, data_dir: str, admin_token: str, max_batch: int, rate_per_agent: float, burst: int) -> None:
    from aios_core.config import load_config
    from aios_core.server.app import serve
    from aios_core.server.settings import ServerSettings

    config = load_config(
        data_dir=data_dir, entry_point_plugins=False, scheduler="fifo", cores=[sim_core_options(max_batch)],
        managers={"embeddings": {"kind": "hashing", "dim": 64}},
    )
    # every load client connects from 127.0.0.1: the per-address connection cap would count them all as one client
    settings = ServerSettings(admin_token=admin_token, grace_seconds=5.0, max_concurrent_per_agent=8, rate_per_agent=rate_per_agent, burst_per_agent=burst,
                              max_connections_per_client=ServerSettings.model_fields["max_connections"].default)
    serve(config, host=HOST, port=port, settings=settings, log_level="error", announce=lambda _: None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    def __init__(self, max_batch: int, rate_per_agent: float, burst: int = 100) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.admin = "aios-" + secrets.token_urlsafe(32)
        self.data_dir = tempfile.mkdtemp(prefix="aios-load-")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aios.bench.studies.server_load", "--serve-child", str(self.port), self.data_dir, self.admin, str(max_batch), str(rate_per_agent), str(burst)],
            cwd=Path(__file__).resolve().parents[2],  # the repository root
            stdout=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # start-up wait for another process: nothing to be notified by
        raise RuntimeError("the server did not become ready")

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# --------------------------------------------------------------------------- clients


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    statuses: Counter[str] = field(default_factory=Counter)
    #: answers that were not a clean HTTP error: transport failures, truncated streams, bodies without an error code
    unclear: Counter[str] = field(default_factory=Counter)
    sent: int = 0

    @property
    def ok(self) -> int:
        return self.statuses.get("200", 0)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client over asyncio streams.

    The load generator must cost far less CPU per request than the server, or
    it measures itself: httpx spends several milliseconds of CPU per request,
    this spends tens of microseconds. It speaks only what the test needs:
    POST with a JSON body, responses with Content-Length or chunked bodies.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, bytes]:
        if self.writer is None:
            await self._connect()
        assert self.reader is not None and self.writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        try:
            status_line = await self.reader.readuntil(b"\r\n")
            status = int(status_line.split(b" ", 2)[1])
            length, chunked, close = None, False, False
            while True:
                line = await self.reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value:
                    chunked = True
                elif name == "connection" and value == "close":
                    close = True
            if chunked:
                parts = []
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    data = await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
                    parts.append(data[:-2])
                content = b"".join(parts)
            else:
                content = await self.reader.readexactly(length or 0)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status, content

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _chat_body(client: int, n: int, tokens: int, stream: bool) -> dict[str, Any]:
    return {
        "model": "sim", "messages": [{"role": "user", "content": f"client {client} request {n}"}],
        "max_tokens": tokens * 2, "stream": stream, "extra": {"sim_tokens": tokens},
    }


def _classify_error(tally: Tally, status: int, content: bytes) -> None:
    try:
        code = json.loads(content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        tally.unclear[f"HTTP {status} without an error body"] += 1
        code = "?"
    tally.statuses[f"{status} {code}"] += 1


async def _one_request(conn: RawConnection, remote: Any, kind: str, client: int, n: int, token: str, tokens: int, tally: Tally) -> None:
    tally.sent += 1
    start = time.perf_counter()
    try:
        if kind in ("chat", "stream"):
            body = json.dumps(_chat_body(client, n, tokens, kind == "stream")).encode()
            status, content = await conn.post("/v1/chat/completions", body, token)
            if status != 200:
                _classify_error(tally, status, content)
                return
            if kind == "chat":
                if json.loads(content)["usage"]["completion_tokens"] != tokens:
                    tally.unclear["wrong completion"] += 1
                    return
            elif not content.rstrip().endswith(b"data: [DONE]"):
                tally.unclear["stream without [DONE]: " + content[-60:].decode("utf-8", "replace")] += 1
                return
        else:
            from aios_core.errors import AIOSError

            try:
                reply = await remote.achat(f"client {client} request {n}", max_tokens=tokens * 2, extra={"sim_tokens": tokens})
            except AIOSError as exc:
                tally.statuses[f"{exc.http_status} {exc.code}"] += 1
                return
            if reply.usage.completion_tokens != tokens:
                tally.unclear["wrong completion"] += 1
                return
    except Exception as exc:  # noqa: BLE001 - counted: these are the failures the test looks for
        tally.unclear[type(exc).__name__] += 1
        return
    tally.statuses["200"] += 1
    tally.latencies[kind].append(time.perf_counter() - start)


async def _client_loop(conn: RawConnection, remote: Any, index: int, token: str, deadline: float, tokens: int, tally: Tally) -> None:
    kind = KINDS[index % len(KINDS)]
    n = 0
    try:
        while time.perf_counter() < deadline:
            await _one_request(conn, remote, kind, index, n, token, tokens, tally)
            n += 1
    finally:
        conn.close()


async def http_run(url: str, tokens_by_client: list[str], names: list[str], duration: float, tokens: int) -> tuple[Tally, float]:
    """Every client loops until the deadline on its own keep-alive connection (SDK clients through RemoteKernel)."""
    from aios_core.server.remote import RemoteKernel

    host, port = url.removeprefix("http://").split(":")
    tally = Tally()
    remotes = [RemoteKernel(url, tok, max_connections=2) if KINDS[i % len(KINDS)] == "sdk" else None for i, tok in enumerate(tokens_by_client)]
    agents = [r.agent(names[i]) if r is not None else None for i, r in enumerate(remotes)]
    # each RemoteKernel opens its client for this loop before the clock starts (as a long-running agent process has)
    await asyncio.gather(*(r.ahealth() for r in remotes if r is not None))
    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(
        *(_client_loop(RawConnection(host, int(port)), agents[i], i, tok, deadline, tokens, tally) for i, tok in enumerate(tokens_by_client))
    )
    elapsed = time.perf_counter() - start
    for r in remotes:
        if r is not None:
            await r.aclose()
    return tally, elapsed


async def embedded_run(clients: int, duration: float, tokens: int, max_batch: int) -> tuple[Tally, float]:
    """The same clients on an embedded kernel (same loop, no HTTP): the baseline for the HTTP path's overhead."""
    from aios_core.config import load_config
    from aios_core.kernel import Kernel

    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="aios-load-embedded-") as data_dir:
        config = load_config(data_dir=data_dir, entry_point_plugins=False, scheduler="fifo", cores=[sim_core_options(max_batch)],
                             managers={"embeddings": {"kind": "hashing", "dim": 64}})
        async with Kernel(config) as kernel:
            agents = [kernel.agent(f"embedded-{i}") for i in range(clients)]

            async def loop(i: int, deadline: float) -> None:
                n = 0
                while time.perf_counter() < deadline:
                    tally.sent += 1
                    t = time.perf_counter()
                    await agents[i].achat(f"client {i} request {n}", max_tokens=tokens * 2, extra={"sim_tokens": tokens})
                    tally.statuses["200"] += 1
                    tally.latencies["chat"].append(time.perf_counter() - t)
                    n += 1

            start = time.perf_counter()
            await asyncio.gather(*(loop(i, start + duration) for i in range(clients)))
            elapsed = time.perf_counter() - start
    return tally, elapsed


async def sequential_overhead(url: str, token: str, name: str, n: int, tokens: int, max_batch: int) -> dict[str, float]:
    """One client, one request at a time: median latency embedded vs. over HTTP (OpenAI endpoint and SDK)."""
    from aios_core.config import load_config
    from aios_core.kernel import Kernel
    from aios_core.server.remote import RemoteKernel

    out: dict[str, list[float]] = {"embedded": [], "http_openai": [], "http_sdk": []}
    with tempfile.TemporaryDirectory(prefix="aios-load-seq-") as data_dir:
        config = load_config(data_dir=data_dir, entry_point_plugins=False, scheduler="fifo", cores=[sim_core_options(max_batch)],
                             managers={"embeddings": {"kind": "hashing", "dim": 64}})
        async with Kernel(config) as kernel, httpx.AsyncClient(base_url=url, timeout=30.0) as http:
            local = kernel.agent("seq")
            remote_kernel = RemoteKernel(url, token)
            remote = remote_kernel.agent(name)
            headers = {"Authorization": f"Bearer {token}"}
            for i in range(n):  # alternate the paths so that machine noise hits them alike
                t = time.perf_counter()
                await local.achat(f"seq {i}", max_tokens=tokens * 2, extra={"sim_tokens": tokens})
                out["embedded"].append(time.perf_counter() - t)
                t = time.perf_counter()
                response = await http.post("/v1/chat/completions", json=_chat_body(0, i, tokens, False), headers=headers)
                response.raise_for_status()
                out["http_openai"].append(time.perf_counter() - t)
                t = time.perf_counter()
                await remote.achat(f"seq {i}", max_tokens=tokens * 2, extra={"sim_tokens": tokens})
                out["http_sdk"].append(time.perf_counter() - t)
            await remote_kernel.aclose()
    return {k: statistics.median(v) * 1000 for k, v in out.items()}


# --------------------------------------------------------------------------- a dashboard viewer

#: what one open dashboard reads per refresh, at most: every view's endpoint at once (the page reads only the one on
#: screen plus the engine counters), so the measured cost is an upper bound for one viewer
VIEWER_PATHS = ("/v1/dashboard/engine", "/v1/dashboard/agents", "/v1/dashboard/timeline?window=120", "/v1/dashboard/audit?limit=200")


class Viewer:
    """One dashboard left open: reads :data:`VIEWER_PATHS` every refresh interval of the page, in its own thread."""

    def __init__(self, url: str, admin: str) -> None:
        import threading

        from aios_core.server.dashboard import UI_POLL_SECONDS

        self.url, self.admin, self.interval = url, admin, UI_POLL_SECONDS
        self.reads = 0
        self.errors: Counter[str] = Counter()
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-viewer", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.admin}"}, timeout=30.0) as http:
            while not self._stop.is_set():
                for path in VIEWER_PATHS:
                    try:
                        response = http.get(path)
                        self.bytes += len(response.content)
                        if response.status_code != 200:
                            self.errors[f"{path} HTTP {response.status_code}"] += 1
                    except httpx.HTTPError as exc:
                        self.errors[f"{path} {type(exc).__name__}"] += 1
                    self.reads += 1
                self._stop.wait(self.interval)  # the page's refresh timer, not a poll of the kernel's state

    def __enter__(self) -> "Viewer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def viewer_comparison(url: str, admin: str, tokens: list[str], names: list[str], duration: float, tokens_per_request: int, rounds: int) -> dict[str, Any]:
    """The same load without and with one dashboard viewer, alternating ``rounds`` times; the throughput ratio with/without."""
    from aios_core.server.dashboard import UI_POLL_SECONDS

    runs: list[dict[str, Any]] = []
    for i in range(rounds):
        for watched in ((False, True) if i % 2 == 0 else (True, False)):
            if watched:
                with Viewer(url, admin) as viewer:
                    tally, elapsed = asyncio.run(http_run(url, tokens, names, duration, tokens_per_request))
                extra = {"viewer_reads": viewer.reads, "viewer_errors": dict(viewer.errors), "viewer_kib": round(viewer.bytes / 1024, 1)}
            else:
                tally, elapsed = asyncio.run(http_run(url, tokens, names, duration, tokens_per_request))
                extra = {}
            summary = summarize(tally, elapsed)
            runs.append({"viewer": watched, "requests_per_s": summary["requests_per_s"], "lost": summary["lost"], "unclear": summary["unclear"], **extra})
    # the server's own latency per viewer route (includes waiting behind the load, so an upper bound of the viewer's work)
    by_route = httpx.get(url + "/v1/kernel/stats", headers={"Authorization": f"Bearer {admin}"}, timeout=30.0).json()["server"]["http"]["by_route"]
    routes = {route: round(v["mean_seconds"] * 1000, 2) for route, v in by_route.items() if route.startswith("/v1/dashboard")}
    without = statistics.mean(r["requests_per_s"] for r in runs if not r["viewer"])
    with_viewer = statistics.mean(r["requests_per_s"] for r in runs if r["viewer"])
    return {
        "rounds": rounds,
        "poll_interval_s": UI_POLL_SECONDS,
        "paths_per_refresh": list(VIEWER_PATHS),
        "runs": runs,
        "requests_per_s_without": round(without, 1),
        "requests_per_s_with": round(with_viewer, 1),
        "throughput_ratio": round(with_viewer / without, 4) if without else None,
        "pair_ratios": [round(runs[i + 1]["requests_per_s"] / runs[i]["requests_per_s"], 4) if runs[i + 1]["viewer"] else
                        round(runs[i]["requests_per_s"] / runs[i + 1]["requests_per_s"], 4) for i in range(0, len(runs), 2)],
        "viewer_route_mean_ms": routes,
        "viewer_loop_share_bound": round(sum(routes.values()) / 1000 / UI_POLL_SECONDS, 4),
    }


# --------------------------------------------------------------------------- reporting


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"n": len(values), "p50_ms": round(at(0.50), 2), "p90_ms": round(at(0.90), 2), "p99_ms": round(at(0.99), 2), "max_ms": round(ordered[-1] * 1000, 2)}


def summarize(tally: Tally, elapsed: float) -> dict[str, Any]:
    all_latencies = [x for values in tally.latencies.values() for x in values]
    return {
        "sent": tally.sent,
        "answered": tally.answered,
        "lost": tally.sent - tally.answered - sum(tally.unclear.values()),
        "ok": tally.ok,
        "statuses": dict(tally.statuses),
        "unclear": dict(tally.unclear),
        "requests_per_s": round(tally.ok / elapsed, 1),
        "latency": percentiles(all_latencies),
        "by_kind": {k: percentiles(v) for k, v in tally.latencies.items() if v},
    }


async def register_all(url: str, admin: str, names: list[str]) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        sem = asyncio.Semaphore(32)

        async def one(name: str) -> str:
            async with sem:
                response = await http.post("/v1/agents", json={"name": name}, headers={"Authorization": f"Bearer {admin}"})
                response.raise_for_status()
                return response.json()["token"]  # type: ignore[no-any-return]

        return list(await asyncio.gather(*(one(n) for n in names)))


def kernel_counters(url: str, admin: str) -> dict[str, Any]:
    stats = httpx.get(url + "/v1/kernel/stats", headers={"Authorization": f"Bearer {admin}"}, timeout=30.0).json()
    pool = stats["pools"]["sim"]
    return {
        "completed": pool["completed"], "failed": pool["failed"], "queued": pool["queued"], "running": pool["running"],
        "snapshots_held": stats["snapshots"]["snapshots_held"], "agents_in_flight": sum(a["in_flight"] for a in stats["agents"]),
        "mean_batch": pool["cores"][0]["mean_batch"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aios.bench.studies.server_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200, help=f"concurrent clients, each its own agent (max {MAX_CLIENTS})")
    parser.add_argument("--duration", type=float, default=10.0, help=f"seconds of measured load (max {MAX_DURATION:g})")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--tokens", type=int, default=8, help="tokens generated per request")
    parser.add_argument("--max-batch", type=int, default=256, help="batch size of the sim core")
    parser.add_argument("--sequential", type=int, default=200, help="requests of the one-client overhead comparison (0: skip; skipped under a rate limit below 20/s)")
    parser.add_argument("--out", help="write the results as JSON to this file")
    parser.add_argument("--rate-per-agent", type=float, default=50.0, help="the server's per-agent rate limit (low values provoke 429s)")
    parser.add_argument("--burst-per-agent", type=int, default=100, help="the server's per-agent burst")
    parser.add_argument("--viewer", action="store_true", help="also compare the load with and without one dashboard viewer (alternating runs)")
    parser.add_argument("--viewer-rounds", type=int, default=2, help="pairs of runs without/with the viewer (order alternates per pair)")
    parser.add_argument("--serve-child", nargs=6, metavar=("PORT", "DATA_DIR", "ADMIN", "MAX_BATCH", "RATE", "BURST"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_child:
        port, data_dir, admin, max_batch, rate, burst = args.serve_child
        serve_child(int(port), data_dir, admin, int(max_batch), float(rate), int(burst))
        return 0
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--clients must be 1..{MAX_CLIENTS} and --duration 0..{MAX_DURATION:g} (the load test is bounded)")

    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=150)
    server = ServerProcess(args.max_batch, args.rate_per_agent, args.burst_per_agent)
    results: dict[str, Any] = {
        "clients": args.clients, "duration_s": args.duration, "tokens_per_request": args.tokens, "cpus": os.cpu_count(),
        "load_average_before": os.getloadavg(),
    }
    try:
        server.wait_ready()
        names = [f"load-{i}" for i in range(args.clients)]
        tokens = asyncio.run(register_all(server.url, server.admin, names))
        console.print(f"server pid {server.proc.pid} at {server.url}: {args.clients} agents registered; warming up {args.warmup:g} s")
        asyncio.run(http_run(server.url, tokens, names, args.warmup, args.tokens))
        rss_warm = server.rss_mb()
        before = kernel_counters(server.url, server.admin)
        console.print(f"measured run: {args.clients} clients for {args.duration:g} s")
        tally, elapsed = asyncio.run(http_run(server.url, tokens, names, args.duration, args.tokens))
        after = kernel_counters(server.url, server.admin)
        rss_run1 = server.rss_mb()
        console.print("second identical run (memory steady state)")
        tally2, elapsed2 = asyncio.run(http_run(server.url, tokens, names, args.duration, args.tokens))
        rss_run2 = server.rss_mb()
        after2 = kernel_counters(server.url, server.admin)
        http_summary = summarize(tally, elapsed)
        http_summary["kernel_completed"] = after["completed"] - before["completed"]
        http_summary["kernel_failed"] = after["failed"] - before["failed"]
        http_summary["kernel_after"] = after2
        results["http"] = http_summary
        results["http_second_run"] = summarize(tally2, elapsed2)
        results["memory_mb"] = {"after_warmup": round(rss_warm, 1), "after_run": round(rss_run1, 1), "after_second_run": round(rss_run2, 1)}
        console.print(f"embedded kernel, same clients for {args.duration:g} s")
        etally, eelapsed = asyncio.run(embedded_run(args.clients, args.duration, args.tokens, args.max_batch))
        results["embedded"] = summarize(etally, eelapsed)
        if args.viewer:
            console.print(f"dashboard viewer: {args.viewer_rounds} x (without, with) a viewer, {args.duration:g} s each")
            results["viewer"] = viewer_comparison(server.url, server.admin, tokens, names, args.duration, args.tokens, args.viewer_rounds)
        results["sequential_median_ms"] = None
        if args.sequential and (args.rate_per_agent == 0 or args.rate_per_agent >= 20):
            console.print(f"one client, {args.sequential} sequential requests per path")
            results["sequential_median_ms"] = {
                k: round(v, 3)
                for k, v in asyncio.run(sequential_overhead(server.url, tokens[0], names[0], args.sequential, args.tokens, args.max_batch)).items()
            }
    finally:
        results["server_exit_status"] = server.stop()

    h, e, s = results["http"], results["embedded"], results["sequential_median_ms"]
    table = Table(title=f"aios serve under load: {args.clients} clients x {args.duration:g} s, sim core, {args.tokens} tokens/request")
    for col in ("setup", "requests/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "sent", "ok", "HTTP errors", "unclear/lost"):
        table.add_column(col, justify="left" if col == "setup" else "right")
    for label, summary in (("HTTP (all kinds)", h), ("HTTP, second run", results["http_second_run"]), ("embedded kernel", e)):
        lat = summary["latency"]
        errors = summary["answered"] - summary["ok"]
        table.add_row(label, f"{summary['requests_per_s']:.0f}", *(f"{lat.get(k, 0):.1f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
                      str(summary["sent"]), str(summary["ok"]), str(errors), f"{sum(summary['unclear'].values())}/{summary['lost']}")
    for kind, lat in h["by_kind"].items():
        table.add_row(f"  HTTP {kind}", f"{lat['n'] / args.duration:.0f}", *(f"{lat.get(k, 0):.1f}" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")), "", "", "", "")
    console.print(table)
    mem = results["memory_mb"]
    console.print(
        f"HTTP statuses: {h['statuses']}; the kernel completed {h['kernel_completed']} and failed {h['kernel_failed']} "
        f"of the {h['sent']} requests sent; after the runs: {h['kernel_after']}"
    )
    console.print(f"server RSS: {mem['after_warmup']} MB after warm-up, {mem['after_run']} MB after the run, {mem['after_second_run']} MB after a second run")
    if s is not None:
        console.print(
            f"one client, sequential (median): embedded {s['embedded']:.2f} ms, HTTP OpenAI {s['http_openai']:.2f} ms "
            f"(+{s['http_openai'] - s['embedded']:.2f} ms), HTTP SDK {s['http_sdk']:.2f} ms (+{s['http_sdk'] - s['embedded']:.2f} ms)"
        )
    console.print(f"throughput under load: HTTP {h['requests_per_s']:.0f}/s vs embedded {e['requests_per_s']:.0f}/s")
    if "viewer" in results:
        v = results["viewer"]
        console.print(
            f"one dashboard viewer: {v['requests_per_s_with']:.0f} req/s with vs {v['requests_per_s_without']:.0f} without "
            f"(ratio {v['throughput_ratio']}, per pair {v['pair_ratios']}); server time per refresh {sum(v['viewer_route_mean_ms'].values()):.1f} ms "
            f"= at most {100 * v['viewer_loop_share_bound']:.1f} % of the loop; runs: " + ", ".join(f"{'with' if r['viewer'] else 'without'} {r['requests_per_s']:.0f}" for r in v["runs"])
        )
    ok = (
        h["lost"] == 0 and not h["unclear"] and results["http_second_run"]["lost"] == 0 and not results["http_second_run"]["unclear"]
        and h["kernel_completed"] == h["ok"]  # every 200 is one completed generation, none completed unanswered
        and h["kernel_after"]["queued"] == 0 and h["kernel_after"]["running"] == 0 and h["kernel_after"]["agents_in_flight"] == 0
    )
    growth = mem["after_second_run"] - mem["after_run"]
    flat = growth <= max(5.0, 0.05 * mem["after_run"])
    results["memory_mb"]["growth_second_run"] = round(growth, 1)
    results["load_average_after"] = os.getloadavg()
    ok = ok and flat
    if not flat:
        console.print(f"[red]memory grew by {growth:.1f} MB during a second identical run[/red]")
    if "viewer" in results:
        ok = ok and all(r["lost"] == 0 and not r["unclear"] and not r.get("viewer_errors") for r in results["viewer"]["runs"])
    results["passed"] = ok
    console.print(f"machine load average before/after: {results['load_average_before']} / {results['load_average_after']} on {os.cpu_count()} CPUs")
    console.print("[green]PASS[/green]: no request lost, every error a clear HTTP error, memory flat" if ok else "[red]FAIL[/red]: see above")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
