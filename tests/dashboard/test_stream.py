"""The dashboard's live views over server-sent events, without a browser.

Auth as for the JSON endpoints, the same payloads, changes pushed unasked,
quiet views not re-sent, and a stream that ends (with its tasks) when its
client leaves and when the server shuts down.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
from dashkit import ADMIN, next_event, sse_events

from aios_core.config import load_config
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.server import dashboard
from aios_core.server.app import BackgroundServer
from aios_core.server.dashboard_stream import StreamEnd, fingerprint, registry_of
from aios_core.server.settings import ServerSettings

STREAMS = {
    "/v1/dashboard/stream/agents": "/v1/dashboard/agents",
    "/v1/dashboard/stream/agents/stream-agent": "/v1/dashboard/agents/stream-agent",
    "/v1/dashboard/stream/timeline": "/v1/dashboard/timeline",
    "/v1/dashboard/stream/engine": "/v1/dashboard/engine",
    "/v1/dashboard/stream/audit": "/v1/dashboard/audit",
    "/v1/dashboard/stream/plugins": "/v1/dashboard/plugins",
}


@pytest.fixture
def fast(monkeypatch):
    """Views read every 50 ms and a heartbeat after 200 ms quiet, so a test sees several intervals at once."""
    monkeypatch.setattr(dashboard, "UI_POLL_SECONDS", 0.05)
    monkeypatch.setattr(dashboard, "HEARTBEAT_SECONDS", 0.2)


def test_every_stream_needs_the_admin_token_like_its_json_endpoint(dash):
    """Catches a stream endpoint without ``require_admin`` (an agent token would watch every agent)."""
    agent_token = dash.register("stream-agent")
    for stream, endpoint in STREAMS.items():
        for headers in ({}, {"Authorization": "Bearer aios-wrong"}, {"Authorization": f"Bearer {agent_token}"}):
            refused = httpx.get(dash.url + stream, headers=headers, timeout=10)
            assert refused.status_code in (401, 403), (stream, headers)
            assert refused.status_code == httpx.get(dash.url + endpoint, headers=headers, timeout=10).status_code, stream
            assert refused.json()["error"]["code"]
        with dash.http.stream("GET", stream) as response:
            assert response.status_code == 200, stream
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
    dash.wait_streams(0)


def test_bad_stream_requests_get_their_status_before_any_event(dash):
    assert dash.http.get("/v1/dashboard/stream/agents/nobody-by-this-name").status_code == 404
    bad = dash.http.get("/v1/dashboard/stream/timeline", params={"window": -1})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_syscall"
    assert dash.http.get("/v1/dashboard/stream/audit", params={"decision": "maybe"}).status_code == 400


def test_the_first_event_carries_the_json_endpoints_payload(dash):
    """Scripts and the page read the same documented payloads, with the same parameters."""
    dash.register("stream-agent")
    dash.register("tooler")
    dash.register("locked", group="locked")
    dash.audit_events()
    for path, event, params in (
        ("agents", "agents", {}),
        ("plugins", "plugins", {}),
        ("audit", "audit", {"decision": "deny", "agent": "locked"}),
        ("audit", "audit", {"irreversible": "true", "limit": 5}),
    ):
        with dash.http.stream("GET", f"/v1/dashboard/stream/{path}", params=params) as response:
            pushed = next_event(sse_events(response), event)
        assert pushed == dash.http.get(f"/v1/dashboard/{path}", params=params).json(), (path, params)
    with dash.http.stream("GET", "/v1/dashboard/stream/agents/stream-agent") as response:
        pushed = next_event(sse_events(response), "agent")
    answered = dash.http.get("/v1/dashboard/agents/stream-agent").json()
    assert pushed["agent"] == answered["agent"] and pushed.keys() == answered.keys()
    with dash.http.stream("GET", "/v1/dashboard/stream/timeline", params={"window": 30, "limit": 7}) as response:
        pushed = next_event(sse_events(response), "timeline")
    assert (pushed["window"], pushed["columns"]) == (30, dash.http.get("/v1/dashboard/timeline").json()["columns"])
    dash.wait_streams(0)


def test_engine_events_come_along_when_asked(dash):
    with dash.http.stream("GET", "/v1/dashboard/stream/agents", params={"engine": "true"}) as response:
        events = sse_events(response)
        first, second = next(events), next(events)
    assert [first[0], second[0]] == ["engine", "agents"]
    assert first[1].keys() == dash.http.get("/v1/dashboard/engine").json().keys()
    dash.wait_streams(0)


def test_a_new_agent_is_pushed_without_the_client_asking(dash, fast):
    with dash.http.stream("GET", "/v1/dashboard/stream/agents") as response:
        events = sse_events(response)
        before = {row["name"] for row in next_event(events, "agents")["agents"]}
        assert "late-comer" not in before
        dash.register("late-comer")
        after = {row["name"] for row in next_event(events, "agents")["agents"]}
    assert after == before | {"late-comer"}
    dash.wait_streams(0)


def test_a_quiet_view_is_not_sent_again_only_heartbeats(dash, fast):
    """Catches a stream that pushes every interval (the clock fields alone change between two reads of an idle kernel)."""
    for path in ("plugins", "engine"):
        with dash.http.stream("GET", f"/v1/dashboard/stream/{path}") as response:
            events = sse_events(response)
            assert next(events)[0] == path
            # at a 50 ms interval and a 200 ms heartbeat, each heartbeat follows four reads of the unchanged view
            assert [next(events) for _ in range(3)] == [(":", "keep-alive")] * 3, path
    dash.wait_streams(0)


def test_a_failed_read_is_an_error_event_and_the_stream_goes_on(dash, fast):
    """An agent ended while its page is open: the stream says so with the JSON endpoints' error body, once, and lives on."""
    dash.register("short-lived")
    with dash.http.stream("GET", "/v1/dashboard/stream/agents/short-lived") as response:
        events = sse_events(response)
        assert next_event(events, "agent")["agent"]["name"] == "short-lived"
        assert dash.http.delete("/v1/agents/short-lived").status_code == 200
        error = next_event(events, "error")
        assert error["view"] == "agent" and error["error"] == dash.http.get("/v1/dashboard/agents/short-lived").json()["error"]
        assert error["error"]["code"] == "unknown_agent"
        # the same failure is not repeated every interval; the stream stays open
        assert [next(events) for _ in range(2)] == [(":", "keep-alive")] * 2
    dash.wait_streams(0)


def test_the_fingerprint_ignores_only_the_clock():
    read = {"now": 1.0, "monotonic": 5.0, "pools": {"sim": {"queued": 0}}, "timeline": {"now": 1.0, "rows": [[-1.0]]}}
    later = {"now": 2.0, "monotonic": 6.0, "pools": {"sim": {"queued": 0}}, "timeline": {"now": 2.0, "rows": [[-1.0]]}}
    assert fingerprint(read) == fingerprint(later)
    assert fingerprint(read) != fingerprint({**later, "pools": {"sim": {"queued": 1}}})
    assert fingerprint(read) != fingerprint({**later, "timeline": {"now": 2.0, "rows": [[-2.0]]}})


def test_a_client_that_leaves_frees_the_stream_and_its_tasks(dash, fast):
    """Catches a stream that notices its client only on a failed write: uvicorn drops writes to a gone client silently,
    so such a stream would read its view every interval for ever."""
    with dash.http.stream("GET", "/v1/dashboard/stream/agents") as response:
        events = sse_events(response)  # kept: a dropped iterator closes the response, which is the client leaving
        next_event(events, "agents")
        dash.wait_streams(1)
        (stream,) = dash.streams.streams
        assert stream.ended is None
    dash.wait_streams(0)
    done, _ = dash.run(asyncio.wait([stream.task], timeout=30))
    assert stream.task in done and not stream.task.cancelled()
    assert stream.listener is not None and stream.listener.done()
    assert stream.ended is StreamEnd.CLIENT_LEFT


def test_close_all_ends_every_stream_with_a_closing_event(dash):
    with dash.http.stream("GET", "/v1/dashboard/stream/plugins") as response:
        events = sse_events(response)
        next_event(events, "plugins")
        dash.wait_streams(1)
        assert dash.run(_on_loop(lambda: dash.streams.close_all("maintenance"))) == 1
        assert next_event(events, "closing") == {"reason": "maintenance"}
        assert list(events) == []  # and then the response ends
    dash.wait_streams(0)


async def _on_loop(fn):
    return fn()


def test_server_shutdown_ends_the_stream_and_leaves_no_task(tmp_path, fast):
    """Catches shutdown that leaves open streams to their next read (or to the grace period, then cancelled)."""
    config = load_config(data_dir=tmp_path, entry_point_plugins=False, managers={"embeddings": {"kind": "hashing", "dim": 64}})
    kernel = Kernel(config, cores=[SimCore(t0=0.001, a=0.0, b=0.0, max_batch=1)])
    server = BackgroundServer(kernel, settings=ServerSettings(admin_token=ADMIN, grace_seconds=5.0, rate_per_agent=0)).start()
    registry = registry_of(server.server.api.state)
    stopper = threading.Thread(target=server.stop, name="stop-server")
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as http:
            with http.stream("GET", "/v1/dashboard/stream/agents", params={"engine": "true"}) as response:
                events = sse_events(response)
                next_event(events, "agents")
                asyncio.run_coroutine_threadsafe(registry.wait_until(1), kernel.loop).result(30)
                (stream,) = registry.streams
                stopper.start()
                rest = list(events)
    finally:
        if not stopper.is_alive() and stopper.ident is None:
            server.stop()
        stopper.join(60)
    assert rest[-1] == ("closing", {"reason": "the server is shutting down"})
    assert not stopper.is_alive()
    assert stream.ended is StreamEnd.CLOSED  # ended by the server's shutdown at once, not at the stream's next read
    assert stream.task.done() and not stream.task.cancelled()
    assert stream.listener is not None and stream.listener.done() and len(registry) == 0
