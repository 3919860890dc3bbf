#!/usr/bin/env python3
"""Check that the four agent frameworks (AutoGen, MetaGPT, Open-Interpreter, LangChain/LangGraph)
import together in this interpreter, and drive each one offline.

Usage: python scripts/check_frameworks.py [--imports-only]

Prints the installed versions, imports every entry point the adapters use, and (unless
--imports-only) runs one LLM round-trip per framework against a fake OpenAI-compatible server on
127.0.0.1 (no network, no API key), plus a real Open-Interpreter `computer.run("python", ...)`.
Exits non-zero on the first failure.

The process is made hermetic before any framework is imported:
  * HOME points at a temporary directory: MetaGPT reads ~/.metagpt/config2.yaml (a user's file
    there would override ours) and Open-Interpreter writes ~/.cache/open-interpreter/telemetry_user_id
    when it is imported;
  * METAGPT_PROJECT_ROOT points at a temporary directory holding config/config2.yaml: MetaGPT 0.8 builds
    its global Config when `metagpt.config2` is imported and fails without an `llm` section; it also
    writes its workspace/ under that root;
  * LITELLM_LOCAL_MODEL_COST_MAP=True: otherwise importing litellm (Open-Interpreter's LLM layer)
    tries to download its model cost map from GitHub (3 attempts, then falls back to the bundled copy);
  * TIKTOKEN_CACHE_DIR points at the tiktoken files litellm bundles (cl100k/o200k/p50k): tiktoken
    otherwise downloads them on first use (MetaGPT counts tokens after every call);
  * Open-Interpreter's telemetry (posthog) and conversation history files are turned off on the
    instance (`disable_telemetry`, `conversation_history`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata as md
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPLY = "pong from the fake server"

DISTRIBUTIONS = [
    "autogen-agentchat", "autogen-core", "autogen-ext", "openai", "metagpt", "open-interpreter",
    "litellm", "langchain-core", "langchain-openai", "langgraph", "tiktoken", "protobuf", "pydantic",
    "pydantic-settings", "httpx", "anthropic", "rich", "numpy", "setuptools", "torch",
]

IMPORTS = [
    "import autogen_agentchat",
    "import autogen_core",
    "from autogen_agentchat.agents import AssistantAgent",
    "from autogen_ext.models.openai import OpenAIChatCompletionClient",
    "import metagpt",
    "from metagpt.roles import Role",
    "from metagpt.actions import Action",
    "from metagpt.provider.base_llm import BaseLLM",
    "from metagpt.provider.openai_api import OpenAILLM",
    "from metagpt.schema import Message",
    "from metagpt.team import Team",
    "from metagpt.config2 import Config",
    "from metagpt.context import Context",
    "from interpreter import interpreter",
    "from interpreter import OpenInterpreter",
    "import litellm",
    "import langchain_core",
    "from langchain_core.language_models.chat_models import BaseChatModel",
    "from langchain_openai import ChatOpenAI",
    "from langgraph.graph import StateGraph, START, END",
]


# --------------------------------------------------------------------------------------------
# A minimal OpenAI-compatible /chat/completions endpoint (streaming and not) on the loopback.
# --------------------------------------------------------------------------------------------
class _FakeOpenAI(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    requests_seen: list[dict] = []

    def log_message(self, *args):  # keep the output readable
        pass

    def do_GET(self):  # e.g. /v1/models
        self._json({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "fake"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        type(self).requests_seen.append({"path": self.path, "stream": bool(body.get("stream"))})
        if not self.path.rstrip("/").endswith("chat/completions"):
            self.send_error(404)
            return
        model = body.get("model", "gpt-4o-mini")
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
        usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
        if not body.get("stream"):
            self._json({**base, "object": "chat.completion", "usage": usage, "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": REPLY}}]})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
            {**chunk, "choices": [{"index": 0, "delta": {"content": REPLY}, "finish_reason": None}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        for event in events:
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _json(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def start_fake_server() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


# --------------------------------------------------------------------------------------------
def prepare_environment(base_url: str) -> Path:
    scratch = Path(tempfile.mkdtemp(prefix="aios-fwcheck-"))
    home = scratch / "home"
    home.mkdir()
    os.environ["HOME"] = str(home)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["DISABLE_TELEMETRY"] = "true"
    os.environ.setdefault("LANGSMITH_TRACING", "false")
    for key in ("OPENAI_BASE_URL", "OPENAI_API_BASE"):
        os.environ.pop(key, None)
    os.environ["OPENAI_API_KEY"] = "sk-fake-key"
    spec = importlib.util.find_spec("litellm")  # locates the package without importing it
    if spec and spec.submodule_search_locations:
        bundled = Path(list(spec.submodule_search_locations)[0]) / "litellm_core_utils" / "tokenizers"
        if bundled.is_dir():
            os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(bundled))
    mg_root = scratch / "metagpt"
    (mg_root / "config").mkdir(parents=True)
    (mg_root / "config" / "config2.yaml").write_text(
        "llm:\n"
        "  api_type: openai\n"
        "  api_key: sk-fake-key\n"
        "  model: gpt-4o-mini\n"
        f"  base_url: {base_url}\n"
    )
    os.environ["METAGPT_PROJECT_ROOT"] = str(mg_root)
    return scratch


def report_versions() -> None:
    print(f"python {sys.version.split()[0]} at {sys.executable}")
    for dist in DISTRIBUTIONS:
        try:
            version = md.version(dist)
        except md.PackageNotFoundError:
            version = "-" if dist == "torch" else "NOT INSTALLED"
        print(f"  {dist:<20} {version}")


def check_imports() -> list[str]:
    failures = []
    for stmt in IMPORTS:
        started = time.perf_counter()
        try:
            exec(stmt, {})
            print(f"  ok    {stmt}  ({time.perf_counter() - started:.1f}s)")
        except Exception as exc:  # noqa: BLE001 - report every failure
            failures.append(stmt)
            print(f"  FAIL  {stmt}: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=-4)
    return failures


# --------------------------------------------------------------------------------------------
async def smoke_autogen(base_url: str) -> str:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core.models import UserMessage
    from autogen_ext.models.openai import OpenAIChatCompletionClient

    client = OpenAIChatCompletionClient(model="gpt-4o-mini", base_url=base_url, api_key="sk-fake-key")
    result = await client.create([UserMessage(content="ping", source="user")])
    assert REPLY in result.content, result
    agent = AssistantAgent("assistant", model_client=client)
    task = await agent.run(task="ping")
    assert REPLY in task.messages[-1].content, task.messages
    await client.close()
    return f"create() and AssistantAgent.run() -> {result.content!r}"


def smoke_langchain(base_url: str) -> str:
    from typing import TypedDict

    from langchain_openai import ChatOpenAI
    from langgraph.graph import END, START, StateGraph

    llm = ChatOpenAI(model="gpt-4o-mini", base_url=base_url, api_key="sk-fake-key")

    class State(TypedDict):
        question: str
        answer: str

    def ask(state: State) -> dict:
        return {"answer": llm.invoke(state["question"]).content}

    graph = StateGraph(State)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    out = graph.compile().invoke({"question": "ping"})
    assert REPLY in out["answer"], out
    return f"LangGraph(ChatOpenAI) -> {out['answer']!r}"


async def smoke_metagpt(base_url: str) -> str:
    from metagpt.actions import Action
    from metagpt.config2 import Config
    from metagpt.roles import Role
    from metagpt.schema import Message

    class Echo(Action):
        name: str = "Echo"

        async def run(self, text: str) -> str:
            return await self._aask(f"Repeat: {text}")

    class Echoer(Role):
        name: str = "Echoer"
        profile: str = "echo tester"

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.set_actions([Echo])

        async def _act(self) -> Message:
            todo = self.rc.todo
            text = await todo.run(self.rc.memory.get()[-1].content)
            return Message(content=text, role=self.profile, cause_by=type(todo))

    # The global config came from $METAGPT_PROJECT_ROOT/config/config2.yaml; a per-role Config
    # object is the way to point one role at another endpoint without any file.
    cfg = Config.from_llm_config({"api_type": "openai", "api_key": "sk-fake-key", "model": "gpt-4o-mini",
                                  "base_url": base_url})
    role = Echoer(config=cfg)
    msg = await role.run("ping")
    assert REPLY in msg.content, msg
    return f"Role(custom Action).run() -> {msg.content!r}"


def smoke_open_interpreter(base_url: str) -> str:
    from interpreter import OpenInterpreter

    oi = OpenInterpreter(disable_telemetry=True, auto_run=False, offline=True, conversation_history=False)
    oi.llm.model = "openai/gpt-4o-mini"
    oi.llm.api_base = base_url
    oi.llm.api_key = "sk-fake-key"
    oi.llm.context_window = 8000
    oi.llm.max_tokens = 256
    oi.llm.supports_functions = False
    messages = oi.chat("ping", display=False, stream=False)
    text = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "assistant")
    assert REPLY in text, messages
    try:
        out = oi.computer.run("python", "print(6 * 7)")
    finally:
        oi.computer.terminate()
    printed = " ".join(str(o.get("content", "")) for o in out if o.get("type") == "console")
    assert "42" in printed, out
    return f"chat() -> {text!r}; computer.run('python') -> {printed.strip()!r}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imports-only", action="store_true", help="skip the offline LLM round-trips")
    args = parser.parse_args()

    server, base_url = start_fake_server()
    scratch = prepare_environment(base_url)
    report_versions()
    print("imports:")
    started = time.perf_counter()
    failures = check_imports()
    print(f"  all imports took {time.perf_counter() - started:.1f}s")
    if failures:
        print(f"FAILED: {len(failures)} import(s) failed")
        return 1
    if args.imports_only:
        server.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
        print("OK: all frameworks import together")
        return 0

    print(f"offline smoke tests against {base_url}:")
    smokes = [
        ("autogen", lambda: asyncio.run(smoke_autogen(base_url))),
        ("langchain+langgraph", lambda: smoke_langchain(base_url)),
        ("metagpt", lambda: asyncio.run(smoke_metagpt(base_url))),
        ("open-interpreter", lambda: smoke_open_interpreter(base_url)),
    ]
    failed = []
    for name, run in smokes:
        started = time.perf_counter()
        try:
            print(f"  ok    {name}: {run()}  ({time.perf_counter() - started:.1f}s)")
        except Exception as exc:  # noqa: BLE001
            failed.append(name)
            print(f"  FAIL  {name}: {type(exc).__name__}: {exc}")
            traceback.print_exc()
    server.shutdown()
    written = sorted(str(p.relative_to(scratch)) for p in (scratch / "home").rglob("*"))
    print(f"  files the frameworks wrote under $HOME: {written or 'none'}")
    shutil.rmtree(scratch, ignore_errors=True)
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print("OK: all frameworks import and run together")
    return 0


if __name__ == "__main__":
    sys.exit(main())
