"""An OpenAI-compatible ``/chat/completions`` endpoint on the loopback, for checking frameworks *without* AIOS.

After ``aios.unpatch`` a framework must talk to its own endpoint again. Tests
point the framework's base URL here and check that the request arrived here
(and that the kernel saw nothing): no network, no API key. Streaming (SSE)
and non-streaming answers; every request body is kept.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class StubOpenAI:
    """``with StubOpenAI("the answer") as stub: ... stub.base_url ... stub.requests``."""

    def __init__(self, reply: str = "answer from the stub endpoint") -> None:
        self.reply = reply
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # /models
                self._json({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "stub"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                stub.requests.append({"path": self.path, **body})
                if not self.path.rstrip("/").endswith("chat/completions"):
                    self.send_error(404)
                    return
                base = {"id": "chatcmpl-stub", "created": int(time.time()), "model": body.get("model", "gpt-4o-mini")}
                usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
                if not body.get("stream"):
                    message = {"role": "assistant", "content": stub.reply}
                    choice = {"index": 0, "finish_reason": "stop", "message": message}
                    self._json({**base, "object": "chat.completion", "usage": usage, "choices": [choice]})
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                chunk = {**base, "object": "chat.completion.chunk"}
                events = [
                    {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
                    {**chunk, "choices": [{"index": 0, "delta": {"content": stub.reply}, "finish_reason": None}]},
                    {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                ]
                if (body.get("stream_options") or {}).get("include_usage"):
                    events.append({**chunk, "choices": [], "usage": usage})
                for event in events:
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _json(self, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, name="stub-openai", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
