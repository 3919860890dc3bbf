"""The dashboard's JSON endpoints and pages without a browser: auth, what is served, and what the kernel records."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from dashkit import ADMIN

from aios_core.config import load_config
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.server import dashboard
from aios_core.server.dashboard_data import MASK, mask_secrets, queue_levels
from aios_core.timeline import Phase, Timeline

DATA_ENDPOINTS = [
    "/v1/dashboard/timeline",
    "/v1/dashboard/engine",
    "/v1/dashboard/audit",
    "/v1/dashboard/audit/verify",
    "/v1/dashboard/plugins",
    "/v1/dashboard/agents/api-agent",
    "/v1/dashboard/agents",
    "/v1/kernel/ps",
]


def _calls(dash, names: list[str], calls: int = 2, tokens: int = 24) -> None:
    async def main() -> None:
        async def one(name: str) -> None:
            agent = dash.kernel.agent(name)
            for n in range(calls):
                await agent.achat(f"{name} {n}", max_tokens=tokens * 2, extra={"sim_tokens": tokens})

        await asyncio.gather(*(one(n) for n in names))

    dash.run(main())


def test_every_data_endpoint_needs_the_admin_token(dash):
    agent_token = dash.register("api-agent")
    for path in DATA_ENDPOINTS:
        assert httpx.get(dash.url + path).status_code == 401, path
        assert httpx.get(dash.url + path, headers={"Authorization": "Bearer aios-wrong"}).status_code == 401, path
        assert httpx.get(dash.url + path, headers={"Authorization": f"Bearer {agent_token}"}).status_code in (401, 403), path
        assert dash.http.get(path).status_code == 200, path


def test_the_pages_are_served_without_a_token_and_hold_no_data(dash):
    dash.register("page-reader-agent")
    for name in ["", *dashboard._FILES]:
        response = httpx.get(f"{dash.url}/ui/{name}")
        assert response.status_code == 200, name
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert "page-reader-agent" not in response.text and ADMIN not in response.text
    assert httpx.get(dash.url + "/ui", follow_redirects=False).headers["location"] == "/ui/"
    assert httpx.get(dash.url + "/ui/app.js").headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("path", ["/ui/%2e%2e/dashboard.py", "/ui/..%2fdashboard.py", "/ui/views/%2e%2e/%2e%2e/app.py", "/ui/nothing.js"])
def test_only_the_shipped_files_are_served(dash, path):
    response = dash.http.get(path)
    assert response.status_code == 404
    assert "import" not in response.text


def test_every_module_the_page_imports_is_shipped():
    files = dashboard._FILES
    assert {"index.html", "app.js", "api.js", "dashboard.css"} <= set(files)
    for name, path in files.items():
        if not name.endswith(".js"):
            continue
        for target in re.findall(r'from\s+"(\.[^"]+)"', path.read_text("utf-8")):
            resolved = (Path(name).parent / target).as_posix()
            resolved = str(Path(resolved)).replace("\\", "/")
            parts: list[str] = []
            for part in resolved.split("/"):
                if part == "..":
                    parts.pop()
                elif part not in (".", ""):
                    parts.append(part)
            assert "/".join(parts) in files, f"{name} imports {target}, which is not shipped"


def test_the_page_states_the_servers_push_interval():
    api = (dashboard.STATIC_DIR / "api.js").read_text("utf-8")
    assert int(re.search(r"LIVE_MS = (\d+)", api).group(1)) == int(dashboard.UI_POLL_SECONDS * 1000)


def test_the_timeline_records_each_phase_and_preemption_under_rr(dash):
    names = [f"phase-{i}" for i in range(5)]
    _calls(dash, names, calls=2, tokens=24)
    data = dash.http.get("/v1/dashboard/timeline", params={"window": 600}).json()
    col = {c: i for i, c in enumerate(data["columns"])}
    rows = [r for r in data["rows"] if r[col["agent"]] in names]
    by_call: dict[str, list[list]] = {}
    for r in sorted(rows, key=lambda r: (r[col["start"]], r[col["end"]])):
        by_call.setdefault(r[col["syscall"]], []).append(r)
    assert len(by_call) == 10
    preempted_runs = 0
    for call, segs in by_call.items():
        runs = [s for s in segs if s[col["phase"]] == Phase.GENERATING]
        # every token of the answer was generated in one of its runs, wherever it was cut
        assert sum(s[col["tokens"]] for s in runs) == 24, (call, segs)
        assert runs[-1][col["outcome"]] in ("stop", "length")
        for run, after in zip(segs, segs[1:]):
            if run[col["phase"]] == Phase.GENERATING and run[col["outcome"]] == "preempted":
                preempted_runs += 1
                # a preempted run is followed by a wait marked as such, which starts where the run ended
                assert after[col["phase"]] == Phase.PREEMPTED, segs
                assert after[col["start"]] == pytest.approx(run[col["end"]], abs=1e-3)
    # 5 agents, 2 slots, a 4-token quantum: round robin must have cut runs short
    assert preempted_runs > 0
    agent_rows = dash.http.get("/v1/dashboard/timeline", params={"agent": "phase-0", "window": 600}).json()["rows"]
    assert agent_rows and {r[col["agent"]] for r in agent_rows} == {"phase-0"}


def test_the_engine_view_reports_what_the_charts_need(dash):
    _calls(dash, ["engine-reader"], calls=1)
    data = dash.http.get("/v1/dashboard/engine").json()
    pool = data["pools"]["sim"]
    assert pool["scheduler"] == "rr" and pool["levels"] == [{"level": "queue", "queued": 0, "preempted": 0}]
    core = pool["cores"][0]
    for key in ("running", "max_batch", "steps", "batch_size_sum", "generated_tokens", "tokens_per_s", "prefix_hit_rate", "snapshots", "restores"):
        assert key in core, key
    assert core["batch_size_sum"] >= core["steps"] > 0


def test_audit_filters_narrow_and_order_newest_first(dash):
    dash.register("tooler")
    dash.register("locked", group="locked")
    dash.audit_events()
    everything = dash.http.get("/v1/dashboard/audit").json()["records"]
    ids = [r["id"] for r in everything]
    assert ids == sorted(ids, reverse=True)
    irreversible = dash.http.get("/v1/dashboard/audit", params={"irreversible": "true"}).json()["records"]
    assert irreversible and all(r["irreversible"] for r in irreversible) and len(irreversible) < len(everything)
    by_resource = dash.http.get("/v1/dashboard/audit", params={"resource": "onerror"}).json()["records"]
    assert by_resource and all("onerror" in r["resource"] for r in by_resource)
    denied = dash.http.get("/v1/dashboard/audit", params={"decision": "deny", "agent": "locked"}).json()["records"]
    assert denied and {(r["agent"], r["decision"]) for r in denied} == {("locked", "deny")}
    assert dash.http.get("/v1/dashboard/audit", params={"decision": "maybe"}).status_code == 400
    assert dash.http.get("/v1/dashboard/audit", params={"limit": 10**6}).status_code == 400
    verify = dash.http.get("/v1/dashboard/audit/verify").json()
    assert verify["available"] is False or verify["ok"] is True


def test_bad_timeline_requests_get_a_typed_error(dash):
    for params in ({"window": -1}, {"window": 10**6}, {"limit": 0}):
        response = dash.http.get("/v1/dashboard/timeline", params=params)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_syscall"
    response = dash.http.get("/v1/dashboard/agents/nobody-by-this-name")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_agent"


def test_configuration_secrets_are_masked():
    config = {"cores": [{"kind": "openai", "api_key": "sk-secret", "base_url": "http://x"}], "admin_token": "aios-x", "token_limit": None}
    masked = mask_secrets(config)
    assert masked["cores"][0]["api_key"] == MASK and masked["admin_token"] == MASK
    assert masked["cores"][0]["base_url"] == "http://x" and masked["token_limit"] is None


# --------------------------------------------------------------------------- the ring buffer and the queue levels


class _Flight:
    def __init__(self, name: str, preemptions: int = 0) -> None:
        from types import SimpleNamespace

        self.agent = SimpleNamespace(name=name)
        self.job = SimpleNamespace(program=name, enqueued_at=1.0, preemptions=preemptions, slice_tokens=7)
        self.id = f"id-{name}"
        self.run_started = 2.0


def test_the_timeline_keeps_only_its_capacity_and_reads_back_to_a_time():
    timeline = Timeline(capacity=3)
    for i in range(5):
        timeline.waited(_Flight(f"a{i}"), float(10 + i))  # type: ignore[arg-type]
    assert len(timeline) == 3 and timeline.recorded == 5
    assert [s.agent for s in timeline.recent(0.0)] == ["a4", "a3", "a2"]
    assert [s.agent for s in timeline.recent(13.0)] == ["a4", "a3"]
    assert [s.agent for s in timeline.recent(0.0, agent="a3")] == ["a3"]
    assert len(list(timeline.recent(0.0, limit=1))) == 1
    with pytest.raises(ValueError):
        Timeline(capacity=0)


def test_the_timeline_tells_a_wait_after_preemption_from_a_first_wait():
    timeline = Timeline()
    timeline.waited(_Flight("first"), 3.0)  # type: ignore[arg-type]
    timeline.waited(_Flight("again", preemptions=1), 3.0)  # type: ignore[arg-type]
    timeline.ran(_Flight("again", preemptions=1), "core-a", 5.0, "preempted")  # type: ignore[arg-type]
    first, again, run = reversed(list(timeline.recent(0.0)))
    assert first.phase is Phase.QUEUED and again.phase is Phase.PREEMPTED
    assert (run.phase, run.start, run.end, run.core, run.tokens, run.outcome) == (Phase.GENERATING, 2.0, 5.0, "core-a", 7, "preempted")


async def test_managed_calls_and_plas_levels_are_recorded(tmp_path):
    config = load_config(data_dir=tmp_path, entry_point_plugins=False, managers={"embeddings": {"kind": "hashing", "dim": 64}})
    kernel = Kernel(config, cores=[SimCore(t0=0.001, a=0.0, b=0.0, max_batch=1)], scheduler="plas")
    async with kernel:
        agent = kernel.agent("calc")
        await agent.acall_tools([{"name": "calculator", "arguments": {"expression": "2+2"}}])
        tool = [s for s in kernel.timeline.recent(0.0) if s.agent == "calc"]
        assert [s.phase for s in tool][0] is Phase.TOOL and tool[0].outcome == "ok"
        # a long program climbs PLAS's levels; while one call runs, the others wait at their program's level
        long = kernel.agent("long")
        await long.achat("warm up", max_tokens=600, extra={"sim_tokens": 300})
        tasks = [asyncio.ensure_future(a.achat("x", max_tokens=40, extra={"sim_tokens": 20})) for a in (kernel.agent("short"), long, kernel.agent("other"))]
        pool = kernel.pools["sim"]
        while pool.queued < 2:
            await asyncio.sleep(0)
        levels = queue_levels(pool)
        assert [lv["level"] for lv in levels] == ["L0", "L1", "L2", "L3"]
        assert sum(lv["queued"] + lv["preempted"] for lv in levels) == pool.queued
        await asyncio.gather(*tasks)
