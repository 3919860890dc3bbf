"""Clients that leave mid-request, and graceful shutdown (finish in-flight requests, or fail them cleanly)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import openai
import pytest

from aios_core.cores.sim import SimCore
from aios_core.server.remote import connect
from aios_core.server.settings import ServerSettings

#: a sim core whose tokens take 10 ms each: long generations stay observable
SLOW = {"t0": 0.01, "a": 0.0, "b": 0.0}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def long_chat(tokens: int = 3000, *, stream: bool) -> dict:
    return {"model": "sim", "messages": [{"role": "user", "content": "go"}], "stream": stream, "max_tokens": tokens, "extra": {"sim_tokens": tokens}}


def pool(server) -> dict:
    return server.stats()["pools"]["sim"]


def assert_freed(server, *, failed: int) -> None:
    """The generation was cancelled: nothing runs or waits on the core, the agent has nothing in flight."""
    server.wait_for(lambda: server.core_running() == 0, what="the core to free its batch slot")
    stats = pool(server)
    assert stats["running"] == 0 and stats["queued"] == 0 and stats["failed"] == failed
    assert stats["cores"][0]["generated_tokens"] < 1000  # stopped long before its 3000 tokens
    assert all(a["in_flight"] == 0 for a in server.stats()["agents"])


def test_openai_stream_closed_by_the_client_cancels_its_generation(live_server):
    server = live_server(cores=[SimCore(**SLOW)], settings=ServerSettings(max_concurrent_per_agent=1))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=server.register("quitter"), max_retries=0)
    stream = client.chat.completions.create(model="sim", messages=[{"role": "user", "content": "go"}], stream=True, max_tokens=3000,
                                            extra_body={"extra": {"sim_tokens": 3000}})
    got = [chunk for _, chunk in zip(range(5), stream)]
    assert len(got) == 5 and server.core_running() == 1
    stream.close()
    assert_freed(server, failed=1)
    # the agent's one request slot was given back too
    assert client.chat.completions.create(model="sim", messages=[{"role": "user", "content": "again"}], max_tokens=4).choices[0].message.content


def test_sdk_stream_abandoned_mid_way_cancels_its_generation(live_server):
    server = live_server(cores=[SimCore(**SLOW)])
    agent = connect(server.url, server.register("quitter")).agent()
    pieces = agent.stream("go", max_tokens=3000, extra={"sim_tokens": 3000})
    assert next(pieces).delta and next(pieces).delta
    pieces.close()
    assert_freed(server, failed=1)


def test_non_streaming_client_that_times_out_cancels_its_generation(live_server):
    server = live_server(cores=[SimCore(**SLOW)])
    token = server.register("impatient")
    with pytest.raises(httpx.ReadTimeout):
        server.http.post("/v1/chat/completions", json=long_chat(stream=False), headers=bearer(token), timeout=httpx.Timeout(5, read=0.5))
    assert_freed(server, failed=1)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.url + "/syscall", headers=bearer(token), timeout=httpx.Timeout(5, read=0.5),
            json={"kind": "llm", "agent": "impatient", "request": {"messages": [{"role": "user", "content": "go"}], "max_tokens": 3000, "extra": {"sim_tokens": 3000}}},
        )
    assert_freed(server, failed=2)


def test_a_queued_request_whose_client_leaves_is_withdrawn_from_the_queue(live_server):
    server = live_server(cores=[SimCore(max_batch=1, **SLOW)])
    token = server.register("q")
    holder = threading.Thread(target=lambda: server.http.post("/v1/chat/completions", json=long_chat(200, stream=False), headers=bearer(token), timeout=60))
    holder.start()
    server.wait_for(lambda: server.core_running() == 1, what="the first generation to run")
    with pytest.raises(httpx.ReadTimeout):  # waits in the queue behind the first, then gives up
        server.http.post("/v1/chat/completions", json=long_chat(stream=True), headers=bearer(token), timeout=httpx.Timeout(5, read=0.4))
    server.wait_for(lambda: pool(server)["queued"] == 0, what="the abandoned request to leave the queue")
    holder.join(30)
    stats = pool(server)
    assert stats["completed"] == 1 and stats["failed"] == 1 and stats["cores"][0]["generated_tokens"] == 200


def test_shutdown_lets_in_flight_requests_finish_and_refuses_new_ones(live_server):
    server = live_server(cores=[SimCore(**SLOW)], settings=ServerSettings(grace_seconds=20))
    token = server.register("steady")
    outcome: dict = {}

    def request() -> None:
        response = server.http.post("/v1/chat/completions", json=long_chat(100, stream=False), headers=bearer(token), timeout=30)
        outcome["status"], outcome["body"] = response.status_code, response.json()

    thread = threading.Thread(target=request)
    thread.start()
    server.wait_for(lambda: server.core_running() == 1, what="the request to run")
    server.server.server.should_exit = True  # what SIGTERM does
    server.wait_for(lambda: server.server.state.draining, what="draining")
    refused = server.http.post("/v1/chat/completions", json=long_chat(5, stream=False), headers=bearer(token))
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_shutting_down"
    assert server.http.get("/readyz").status_code == 503
    assert server.http.get("/healthz").status_code == 200
    thread.join(30)
    assert outcome["status"] == 200 and outcome["body"]["usage"]["completion_tokens"] == 100
    server.stop()


def test_requests_over_the_grace_period_fail_cleanly_with_503(live_server):
    core = SimCore(**SLOW)
    server = live_server(cores=[core], settings=ServerSettings(grace_seconds=0.5))
    token = server.register("slowpoke")
    outcome: dict = {}

    def plain() -> None:
        response = server.http.post("/v1/chat/completions", json=long_chat(stream=False), headers=bearer(token), timeout=30)
        outcome["plain"] = (response.status_code, response.json())

    def streamed() -> None:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0)
        try:
            for _ in client.chat.completions.create(**{k: v for k, v in long_chat(stream=True).items() if k != "extra"}, extra_body={"extra": {"sim_tokens": 3000}}):
                pass
            outcome["stream"] = "completed"
        except openai.APIError as exc:
            outcome["stream"] = exc.message

    threads = [threading.Thread(target=plain), threading.Thread(target=streamed)]
    for t in threads:
        t.start()
    server.wait_for(lambda: server.core_running() == 2, what="both requests to run")
    server.stop()
    for t in threads:
        t.join(10)
    # counted, not timed: either 3000-token generation run to its end would alone put 3000 tokens on the core
    assert core.stats().generated_tokens < 3000  # catches: shutdown drains in-flight generations past the grace period
    status, body = outcome["plain"]
    assert status == 503 and body["error"]["code"] == "server_shutting_down"
    assert "shutting down" in outcome["stream"]


SERVE = textwrap.dedent(
    """
    import sys
    from aios_core.config import load_config
    from aios_core.server.app import serve
    from aios_core.server.settings import ServerSettings

    config = load_config(data_dir=sys.argv[1], entry_point_plugins=False, cores=[{"kind": "sim", "t0": 0.01, "a": 0.0, "b": 0.0}],
                         managers={"embeddings": {"kind": "hashing", "dim": 64}})
    serve(config, host="127.0.0.1", port=int(sys.argv[2]), settings=ServerSettings(grace_seconds=15), log_level="warning")
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_process_drains_on_sigterm(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path), str(port)], stderr=subprocess.PIPE, text=True, env={**os.environ})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.05)
        admin = (tmp_path / "server" / "admin.token").read_text().strip()
        token = httpx.post(url + "/v1/agents", json={"name": "last"}, headers=bearer(admin)).json()["token"]
        outcome: dict = {}

        def request() -> None:
            response = httpx.post(url + "/v1/chat/completions", json=long_chat(100, stream=False), headers=bearer(token), timeout=60)
            outcome["status"], outcome["tokens"] = response.status_code, response.json()["usage"]["completion_tokens"]

        thread = threading.Thread(target=request)
        thread.start()
        while not httpx.get(url + "/v1/kernel/stats", headers=bearer(admin)).json()["pools"]["sim"]["running"]:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert outcome == {"status": 200, "tokens": 100}
        # uvicorn re-raises the signal once its shutdown (and the kernel's) is complete: the conventional exit status
        assert proc.wait(30) in (0, -signal.SIGTERM)
        log = proc.stderr.read()
        assert log.count(admin) == 1  # the banner showed the admin token once
        assert "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stats_document_is_json_serialisable_while_busy(live_server):
    server = live_server(cores=[SimCore(**SLOW)])
    token = server.register("busy")
    thread = threading.Thread(target=lambda: server.http.post("/v1/chat/completions", json=long_chat(50, stream=False), headers=bearer(token), timeout=30))
    thread.start()
    server.wait_for(lambda: server.core_running() == 1, what="the request to run")
    stats = server.stats()
    assert stats["flights"][0]["agent"] == "busy" and stats["flights"][0]["state"] == "running"
    json.dumps(stats)
    thread.join(30)
