"""Tokens, scoping and bad input: missing/wrong/revoked tokens, acting as another agent, huge bodies, bad JSON, rate limits."""

from __future__ import annotations

import copy
import json
import os
import stat
import threading

import httpx
import openai
import pytest

from aios_core.cores.sim import SimCore
from aios_core.errors import ConfigError
from aios_core.server.errors import RateLimitedError
from aios_core.server.limits import RateLimiter
from aios_core.server.settings import ServerSettings

LLM = {"kind": "llm", "request": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def syscall(agent: str, **request):
    return {**copy.deepcopy(LLM), "agent": agent, "request": {**copy.deepcopy(LLM["request"]), **request}}


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/syscall"), ("POST", "/syscall/stream"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
     ("GET", "/v1/kernel/stats"), ("GET", "/v1/kernel/ps"), ("POST", "/v1/agents"), ("GET", "/metrics"), ("GET", "/v1/whoami")],
)
def test_every_endpoint_refuses_missing_and_wrong_tokens(shared_server, method, path):
    server = shared_server
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}, bearer("aios-forged"), bearer(server.admin + "x")):
        response = server.http.request(method, path, json=syscall("a"), headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["error"]["code"] == "invalid_api_key"


def test_health_and_readiness_need_no_token(shared_server):
    server = shared_server
    assert server.http.get("/healthz").json() == {"status": "ok"}
    assert server.http.get("/readyz").json() == {"status": "ready"}


def test_agent_tokens_are_scoped_to_their_agent(server):
    alice, bob = server.register("alice"), server.register("bob")
    ok = server.http.post("/syscall", json=syscall("alice"), headers=bearer(alice))
    assert ok.status_code == 200 and ok.json()["result"]["$type"].endswith(":LLMResponse")
    denied = server.http.post("/syscall", json=syscall("bob"), headers=bearer(alice))
    assert denied.status_code == 403 and "cannot act as agent 'bob'" in denied.json()["error"]["message"]
    for path in ("/v1/kernel/stats", "/v1/kernel/ps", "/v1/agents", "/metrics"):
        assert server.http.get(path, headers=bearer(bob)).status_code == 403
    assert server.http.post("/v1/agents", json={"name": "mallory"}, headers=bearer(bob)).status_code == 403
    assert server.http.post("/syscall", json=syscall("alice"), headers=bearer(server.admin)).status_code == 403
    assert server.http.get("/v1/whoami", headers=bearer(bob)).json()["agent"] == "bob"
    # bob's failed attempt did not count against alice, nor reach the kernel as hers
    agents = {a["name"]: a for a in server.stats()["agents"]}
    assert agents["alice"]["syscalls"] == 1 and agents["bob"]["syscalls"] == 0


def test_a_token_carries_its_agents_privilege_group(live_server):
    groups = {"default": {}, "sandboxed": {"cores": ["no-such-core"], "tools": ["file_*"]}}
    server = live_server(managers={"embeddings": {"kind": "hashing", "dim": 64}, "access": {"groups": groups}})
    free, boxed = server.register("free"), server.register("boxed", group="sandboxed")
    assert server.http.get("/v1/whoami", headers=bearer(boxed)).json()["group"] == "sandboxed"
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=boxed, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match="may not use core"):
        client.chat.completions.create(model="sim", messages=[{"role": "user", "content": "hi"}])
    tool = {"kind": "tool", "calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}
    denied = server.http.post("/syscall", json={**tool, "agent": "boxed"}, headers=bearer(boxed)).json()["result"]
    assert denied[0]["value"]["ok"] is False and denied[0]["value"]["error_type"] == "access_denied"
    allowed = server.http.post("/syscall", json={**tool, "agent": "free"}, headers=bearer(free)).json()["result"]
    assert allowed[0]["value"]["ok"] is True
    assert server.http.post("/syscall", json=syscall("free"), headers=bearer(free)).status_code == 200


def test_revoked_tokens_stop_working_and_the_agent_ends(server):
    token = server.register("temp")
    assert server.http.post("/syscall", json=syscall("temp"), headers=bearer(token)).status_code == 200
    deleted = server.http.delete("/v1/agents/temp", headers=server.admin_headers)
    assert deleted.status_code == 200 and deleted.json()["revoked_tokens"] == 1
    assert server.http.post("/syscall", json=syscall("temp"), headers=bearer(token)).status_code == 401
    assert server.http.delete("/v1/agents/temp", headers=server.admin_headers).status_code == 404


def test_registering_again_issues_tokens_up_to_a_bound_revoking_the_oldest(live_server):
    server = live_server(settings=ServerSettings(max_credentials_per_agent=2))
    first, second, third = (server.register("again") for _ in range(3))
    assert server.http.post("/syscall", json=syscall("again"), headers=bearer(first)).status_code == 401
    for token in (second, third):
        assert server.http.post("/syscall", json=syscall("again"), headers=bearer(token)).status_code == 200


def test_registration_is_validated(server):
    def post(body):
        return server.http.post("/v1/agents", json=body, headers=server.admin_headers)

    assert post({"name": "bad name!"}).status_code == 400
    assert post({"name": "x", "group": "no-such-group"}).json()["error"]["message"].startswith("no access group 'no-such-group'")
    assert post({"name": "x", "priority": 1000}).status_code == 400
    assert post({"name": "x", "surprise": 1}).status_code == 400


def test_tokens_are_stored_hashed_privately_and_survive_a_restart(live_server, tmp_path):
    data = tmp_path / "persist"
    first = live_server(data_dir=data)
    token = first.register("keeper", program="keeper-prog", priority=2)
    state = data / "server"
    stored = (state / "tokens.json").read_text()
    assert token not in stored and json.loads(stored)["tokens"]
    for name in ("tokens.json", "admin.token"):
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600
    assert (state / "admin.token").read_text().strip() == first.admin
    first.stop()
    second = live_server(data_dir=data)
    assert second.admin != first.admin  # a fresh admin token per start
    who = httpx.get(second.url + "/v1/whoami", headers=bearer(token)).json()
    assert who == {"admin": False, "agent": "keeper", "group": "default", "program": "keeper-prog", "priority": 2, "framework": "http"}
    assert httpx.post(second.url + "/syscall", json=syscall("keeper"), headers=bearer(token)).status_code == 200


def test_an_unreadable_token_store_stops_the_start_with_a_clear_error(live_server, tmp_path):
    state = tmp_path / "broken" / "server"
    state.mkdir(parents=True)
    (state / "tokens.json").write_text("{garbage")
    with pytest.raises(ConfigError, match="token store .* is unreadable"):
        live_server(data_dir=tmp_path / "broken")


def test_huge_bodies_are_refused_with_413_declared_or_chunked(live_server):
    server = live_server(settings=ServerSettings(max_body_bytes=4096))
    token = server.register("big")
    huge = syscall("big")
    huge["request"]["messages"][0]["content"] = "x" * 10_000
    declared = server.http.post("/syscall", json=huge, headers=bearer(token))
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

    def chunks():
        for _ in range(10):
            yield b" " * 1000  # no Content-Length: chunked transfer encoding

    chunked = server.http.post("/v1/chat/completions", content=chunks(), headers=bearer(token))
    assert chunked.status_code == 413
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=token, max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="sim", messages=huge["request"]["messages"])
    assert info.value.status_code == 413
    # the server is fine afterwards
    assert server.http.post("/syscall", json=syscall("big"), headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("path", ["/syscall", "/syscall/stream", "/v1/chat/completions"])
@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[]", b'"a string"', b'{"kind": "llm"}', b"\xff\xfe\x00", json.dumps({"kind": "llm", "agent": "bad", "request": {"messages": "no"}}).encode()],
)
def test_malformed_bodies_get_400_with_a_reason(shared_server, path, body):
    server = shared_server
    token = server.register("bad")
    response = server.http.post(path, content=body, headers={**bearer(token), "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_syscall" and error["message"]


def test_stream_endpoint_refuses_non_llm_syscalls(shared_server):
    server = shared_server
    token = server.register("s")
    response = server.http.post("/syscall/stream", json={"kind": "memory", "agent": "s", "op": "list"}, headers=bearer(token))
    assert response.status_code == 400 and "only LLM syscalls stream" in response.json()["error"]["message"]


def test_unknown_routes_and_methods_answer_in_the_error_shape(shared_server):
    server = shared_server
    missing = server.http.get("/v2/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = server.http.get("/syscall")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_rate_limit_is_per_agent_with_retry_after(live_server):
    server = live_server(settings=ServerSettings(rate_per_agent=0.2, burst_per_agent=3))
    greedy, polite = server.register("greedy"), server.register("polite")
    with httpx.Client(base_url=server.url) as http:
        codes = [http.post("/syscall", json=syscall("greedy"), headers=bearer(greedy)).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        limited = http.post("/syscall", json=syscall("greedy"), headers=bearer(greedy))
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1 and "retry-after-ms" in limited.headers
        assert limited.json()["error"]["code"] == "rate_limited"
        # another agent is not affected
        assert http.post("/syscall", json=syscall("polite"), headers=bearer(polite)).status_code == 200
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=server.url + "/v1", api_key=greedy, max_retries=0).chat.completions.create(
            model="sim", messages=[{"role": "user", "content": "x"}]
        )
    assert server.stats()["server"]["rate_limited_by_agent"] == {"greedy": 4}


def test_token_bucket_refills_at_its_rate():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, max_concurrent=0, clock=lambda: now[0])
    limiter.acquire("a")
    limiter.acquire("a")
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire("a")
    assert info.value.details["retry_after"] == pytest.approx(0.5)
    now[0] = 0.5
    limiter.acquire("a")  # one token back after 1/rate seconds
    with pytest.raises(RateLimitedError):
        limiter.acquire("a")
    now[0] = 100.0
    limiter.acquire("a")
    limiter.acquire("a")  # refills up to the burst, not beyond
    with pytest.raises(RateLimitedError):
        limiter.acquire("a")


def test_concurrent_request_cap_per_agent(live_server):
    server = live_server(cores=[SimCore(t0=0.01, a=0.0, b=0.0)], settings=ServerSettings(max_concurrent_per_agent=1))
    token = server.register("solo")
    started = threading.Event()
    result: dict[str, int] = {}

    def long_stream() -> None:
        body = syscall("solo", max_tokens=200, extra={"sim_tokens": 60})
        with server.http.stream("POST", "/syscall/stream", json=body, headers=bearer(token), timeout=30) as response:
            for _ in response.iter_lines():
                started.set()
            result["status"] = response.status_code

    thread = threading.Thread(target=long_stream)
    thread.start()
    assert started.wait(10)
    second = server.http.post("/syscall", json=syscall("solo"), headers=bearer(token))
    assert second.status_code == 429 and "requests in progress" in second.json()["error"]["message"]
    thread.join(30)
    assert result["status"] == 200
    # the slot is released when the stream ends
    assert server.http.post("/syscall", json=syscall("solo"), headers=bearer(token)).status_code == 200
