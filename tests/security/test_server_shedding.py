"""The server sheds abuse before it costs memory (issue 12, item 5).

Attacks: unauthenticated multi-megabyte bodies held open (the body used to be
buffered before the token was checked), a slowloris connection trickling its
request head, a body trickled after the head, one client opening connection
after connection, JSON nested deep enough to raise RecursionError (a 500), and
the API's schema readable without a token. Timing is never asserted: a small
configured timeout must close the connection, and a generous socket timeout
only decides that the old code (which never closed it) failed.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from live_kernel import live_kernel

from aios_core.config import load_config
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.server.app import create_app
from aios_core.server.settings import ServerSettings

#: how long a test waits for the server to act; the server's own limits in these tests are far shorter
PATIENCE = 20.0


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket.timeout: it never did)."""
    sock.settimeout(PATIENCE)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)


def test_the_body_is_never_read_without_a_valid_token(tmp_path):
    """ASGI level: the app answers 401 from the headers; the body channel is not touched."""
    kernel = Kernel(load_config(data_dir=tmp_path / "data", entry_point_plugins=False), cores=[SimCore()])
    app = create_app(kernel, ServerSettings())
    for authorization in (None, b"Bearer aios-not-a-token", b"Basic abc"):
        received: list[str] = []
        sent: list[dict] = []

        async def receive() -> dict:
            received.append("body")
            return {"type": "http.request", "body": b"x" * 4_000_000, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        headers = [(b"content-type", b"application/json"), (b"content-length", b"4000000")]
        if authorization is not None:
            headers.append((b"authorization", authorization))
        for path in ("/syscall", "/v1/chat/completions", "/v1/agents"):
            scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"", "headers": headers,
                     "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 1), "client": ("127.0.0.1", 2), "root_path": ""}
            asyncio.run(app(scope, receive, send))
            assert sent[0]["status"] == 401 and not received, (path, authorization)
            assert (b"connection", b"close") in sent[0]["headers"]
            assert json.loads(sent[1]["body"])["error"]["code"] == "invalid_api_key"
            sent.clear()


def test_a_declared_huge_body_without_a_token_is_refused_without_waiting_for_it(tmp_path):
    with live_kernel(tmp_path / "data") as live:
        sock = _connect(live.port)
        sock.sendall(b"POST /syscall HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3900000\r\n\r\n" + b"{" * 1000)
        answer = _read_until_closed(sock)  # the old server waited for the other 3.9 MB
        sock.close()
        assert answer.startswith(b"HTTP/1.1 401")


def test_a_slowloris_request_head_is_closed_after_the_header_timeout(tmp_path):
    with live_kernel(tmp_path / "data", settings=ServerSettings(header_timeout=0.3, grace_seconds=1.0)) as live:
        sock = _connect(live.port)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = _read_until_closed(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408")
        # a keep-alive connection trickling the next head gets the same deadline
        sock = _connect(live.port)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(PATIENCE)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert b"408" in _read_until_closed(sock)
        sock.close()
        assert live.http.get("/healthz").status_code == 200  # the server is fine


def test_a_trickled_body_is_answered_408_after_the_body_timeout(tmp_path):
    with live_kernel(tmp_path / "data", settings=ServerSettings(body_timeout=0.3, grace_seconds=1.0)) as live:
        token = live.register("alice")["Authorization"]
        sock = _connect(live.port)
        head = f"POST /syscall HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        sock.sendall(head.encode() + b'{"kind": ')
        answer = _read_until_closed(sock)
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer


def test_connections_are_capped_per_client_and_in_total(tmp_path):
    settings = ServerSettings(max_connections_per_client=2, max_connections=3, grace_seconds=1.0)
    with live_kernel(tmp_path / "data", settings=settings) as live:
        live.http.close()  # the helper's pooled connection would count
        first, second = _connect(live.port), _connect(live.port)
        for sock in (first, second):  # both are served
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(PATIENCE)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        third = _connect(live.port)
        answer = _read_until_closed(third)
        third.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer
        first.close()
        # a slot is free again once a connection closes
        again = _connect(live.port)
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_until_closed(again).startswith(b"HTTP/1.1 200")
        again.close()
        second.close()


@pytest.mark.parametrize("path", ["/syscall", "/v1/chat/completions", "/v1/agents"])
def test_json_nested_too_deep_is_a_typed_400_not_a_500(tmp_path, path):
    with live_kernel(tmp_path / "data") as live:
        headers = live.admin if path == "/v1/agents" else live.register("alice")
        for depth in (65, 5000, 200_000):
            body = '{"kind": "llm", "agent": "alice", "request": ' + "[" * depth + "]" * depth + "}"
            response = live.http.post(path, content=body, headers={**headers, "Content-Type": "application/json"})
            assert response.status_code == 400, (depth, response.text)
            assert response.json()["error"]["code"] == "json_too_deep"
        ok = {"kind": "llm", "agent": "alice", "request": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}}
        if path == "/syscall":
            assert live.http.post(path, json=ok, headers=headers).status_code == 200  # the kernel keeps serving


def test_docs_and_schema_follow_the_auth_setting(tmp_path):
    with live_kernel(tmp_path / "data") as live:
        for path in ("/openapi.json", "/docs"):
            assert live.http.get(path).status_code == 401
            assert live.http.get(path, headers=live.register("reader")).status_code == 200
        assert live.http.get("/healthz").status_code == 200
    with live_kernel(tmp_path / "data2", settings=ServerSettings(docs_public=True, grace_seconds=1.0)) as live:
        assert live.http.get("/openapi.json").status_code == 200
        assert live.http.post("/syscall", json={}).status_code == 401  # the API itself still needs a token
