"""Prometheus text, ``aios top`` frames and ``aios ps`` against a busy server."""

from __future__ import annotations

import io
import re
import threading

from rich.console import Console

from aios_core.cores.sim import SimCore
from aios_core.server.metrics import _labels
from aios_core.server.settings import ServerSettings
from aios_core.server.top import ps, render_top, resolve_target, run_top

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$')


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$", line), line
            continue
        assert SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def busy(server, names=("alpha", "beta"), tokens=400):
    """Start long generations for ``names`` in threads; returns the threads once they run."""
    threads = []
    for name in names:
        token = server.register(name, program=f"{name}-prog")
        body = {"model": "sim", "messages": [{"role": "user", "content": "go"}], "max_tokens": tokens, "extra": {"sim_tokens": tokens}}
        t = threading.Thread(target=server.http.post, args=("/v1/chat/completions",), kwargs={"json": body, "headers": {"Authorization": f"Bearer {token}"}, "timeout": 60})
        t.start()
        threads.append(t)
    server.wait_for(lambda: server.core_running() == len(names), what="generations to run")
    return threads


def test_metrics_need_the_admin_token_and_are_valid_prometheus_text(live_server):
    server = live_server(cores=[SimCore(t0=0.005, a=0.0, b=0.0)])
    assert server.http.get("/metrics").status_code == 401
    assert server.http.get("/metrics", headers={"Authorization": f"Bearer {server.register('x')}"}).status_code == 403
    threads = busy(server)
    first = server.http.get("/metrics", headers=server.admin_headers)
    assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
    server.wait_for(lambda: server.stats()["pools"]["sim"]["cores"][0]["generated_tokens"] > 50, what="tokens")
    values = samples(server.http.get("/metrics", headers=server.admin_headers).text)
    assert values['aios_llm_running{model="sim"}'] == 2
    assert values['aios_core_running{core="sim",model="sim"}'] == 2
    assert values['aios_core_tokens_per_second{core="sim",model="sim"}'] > 0
    assert values['aios_agent_in_flight{agent="alpha",group="default"}'] == 1
    assert 'aios_agent_waiting_seconds_total{agent="beta"}' in values
    assert values["aios_snapshots_held"] == 0
    assert values['aios_http_requests_total{route="/v1/agents",method="POST",status="201"}'] == 3
    assert values['aios_http_request_duration_seconds_count{route="/v1/agents"}'] == 3
    for t in threads:
        t.join(60)
    values = samples(server.http.get("/metrics", headers=server.admin_headers).text)
    assert values['aios_llm_completed_total{model="sim"}'] == 2
    assert values['aios_http_requests_total{route="/v1/chat/completions",method="POST",status="200"}'] == 2


def test_metrics_can_be_public_and_labels_are_escaped(live_server):
    server = live_server(settings=ServerSettings(metrics_public=True))
    server.register("a/b:c@d")
    values = samples(server.http.get("/metrics").text)
    assert values['aios_agent_in_flight{agent="a/b:c@d",group="default"}'] == 0
    assert _labels({"g": 'say "hi"\\now\nnext'}) == '{g="say \\"hi\\"\\\\now\\nnext"}'


def test_top_frames_and_ps_show_queues_cores_agents_and_programs(live_server, monkeypatch):
    server = live_server(cores=[SimCore(t0=0.01, a=0.0, b=0.0, max_batch=1)])
    threads = busy(server, names=("alpha",))
    threads += busy_queued(server)
    console = Console(file=io.StringIO(), width=200, record=True)
    console.print(render_top(server.stats(), url=server.url))
    frame = console.export_text()
    for expected in ("LLM queues", "sim", "1/1", "alpha", "gamma", "queued", "running", "snapshots held"):
        assert expected in frame, expected
    out = Console(file=io.StringIO(), width=200, record=True)
    assert ps(server.url, server.admin, console=out) == 0
    table = out.export_text()
    assert "alpha-prog (running)" in table and "gamma-prog (queued)" in table
    # run_top finds the URL and token in the environment, draws frames and returns
    monkeypatch.setenv("AIOS_URL", server.url)
    monkeypatch.setenv("AIOS_TOKEN", server.admin)
    live = Console(file=io.StringIO(), width=200, record=True)
    assert run_top(iterations=2, interval=0.01, console=live) == 0
    assert "alpha" in live.export_text()
    for t in threads:
        t.join(60)


def busy_queued(server):
    token = server.register("gamma", program="gamma-prog")
    body = {"model": "sim", "messages": [{"role": "user", "content": "wait"}], "max_tokens": 5, "extra": {"sim_tokens": 5}}
    t = threading.Thread(target=server.http.post, args=("/v1/chat/completions",), kwargs={"json": body, "headers": {"Authorization": f"Bearer {token}"}, "timeout": 60})
    t.start()
    server.wait_for(lambda: server.stats()["pools"]["sim"]["queued"] == 1, what="gamma to queue")
    return [t]


def test_resolve_target_reads_the_servers_admin_token_file(server, monkeypatch):
    monkeypatch.delenv("AIOS_TOKEN", raising=False)
    monkeypatch.setenv("AIOS_URL", server.url + "/")
    monkeypatch.setenv("AIOS_SERVER_STATE_DIR", str(server.server.server.api.state.tokens.state_dir))
    assert resolve_target(None, None) == (server.url, server.admin)
    assert resolve_target("http://elsewhere:1", "tok") == ("http://elsewhere:1", "tok")
