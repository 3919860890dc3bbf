"""OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models``, routed through the kernel's scheduler.

Any OpenAI client becomes a scheduled agent by pointing its base URL at the
kernel: the API key is the agent's token (so the agent, and its privilege
group, come from it), ``X-AIOS-Program`` names the program (session) and
``X-AIOS-Priority`` may lower the priority. Supported: streaming (SSE, with
``stream_options.include_usage``), tools with ``tool_calls`` (streamed as
OpenAI-style deltas: id and name first, then argument fragments),
``response_format`` ``json_object`` / ``json_schema``, ``stop``, ``seed``,
``temperature``, ``top_p``, ``max_tokens`` / ``max_completion_tokens``,
``parallel_tool_calls``. Text and multi-part text content are accepted; image
or audio parts, ``n > 1`` and ``logprobs`` are refused with a 400 that says so.
Parameters the kernel's cores have no use for (penalties, ``user``,
``metadata``...) are accepted and ignored. The AIOS extension ``extra`` (an
object) passes core options through, e.g. ``{"extra": {"sim_tokens": 20}}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from aios_core.errors import AIOSError, InvalidSyscallError
from aios_core.server.deps import Admission, agent_record, header_priority, header_program, json_body, principal, server_state
from aios_core.server.errors import NotFoundError, error_body
from aios_core.server.lifecycle import ClientGone, ServerState, run_watched
from aios_core.server.streaming import stream_syscall
from aios_core.syscalls import LLMRequest, LLMResponse, LLMSyscall, Message, StreamPiece, ToolCall, validate_model

router = APIRouter()

#: model names that mean "the kernel's default model"
DEFAULT_ALIASES = frozenset({"default", "aios"})
FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}
_TEXT_PARTS = frozenset({"text", "input_text"})
#: size of the argument fragments of streamed tool calls (OpenAI streams arguments in pieces too)
ARG_FRAGMENT = 24


class ChatCompletionBody(BaseModel):
    """The fields of an OpenAI chat-completion request the kernel reads; others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    logprobs: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    #: AIOS extension: core options (LLMRequest.extra)
    extra: dict[str, Any] | None = None
    #: llama-server's extension: generate exactly max_tokens (end-of-generation tokens are never sampled)
    ignore_eos: bool | None = None


# --------------------------------------------------------------------------- request translation


def _text(content: Any, where: str) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "refusal":
                texts.append(str(part.get("refusal", "")))
            else:
                raise InvalidSyscallError(f"{where}.content[{j}]: content parts of type {kind!r} are not supported (this kernel's models take text)")
        return "".join(texts)
    raise InvalidSyscallError(f"{where}.content must be a string or a list of text parts")


def _tool_call(raw: Any, where: str) -> ToolCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), dict):
        raise InvalidSyscallError(f"{where}: a tool call is {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}")
    fn = raw["function"]
    data: dict[str, Any] = {"name": fn.get("name"), "arguments": fn.get("arguments") or "{}"}
    if raw.get("id"):
        data["id"] = raw["id"]
    return validate_model(ToolCall, data, where)  # type: ignore[no-any-return]


def to_message(raw: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise InvalidSyscallError(f"{where} must be an object with 'role' and 'content'")
    role = raw.get("role")
    if role == "developer":
        role = "system"
    if role == "function":
        raise InvalidSyscallError(f"{where}: legacy 'function' messages are not supported; use tools and 'tool' messages")
    content = _text(raw.get("content"), where)
    calls = [_tool_call(c, f"{where}.tool_calls[{k}]") for k, c in enumerate(raw.get("tool_calls") or [])]
    if content is None and (role == "tool" or (role == "assistant" and not calls)):
        content = ""
    data: dict[str, Any] = {"role": role, "content": content}
    if calls:
        data["tool_calls"] = calls
    if raw.get("tool_call_id") is not None:
        data["tool_call_id"] = raw["tool_call_id"]
    if isinstance(raw.get("name"), str):
        data["name"] = raw["name"]
    return validate_model(Message, data, where)  # type: ignore[no-any-return]


def _tool_spec(raw: Any, index: int) -> dict[str, Any]:
    where = f"tools[{index}]"
    if not isinstance(raw, dict) or raw.get("type", "function") != "function" or not isinstance(raw.get("function"), dict):
        raise InvalidSyscallError(f"{where}: only {{'type': 'function', 'function': {{'name', 'description', 'parameters'}}}} tools are supported")
    fn = raw["function"]
    spec: dict[str, Any] = {"name": fn.get("name"), "description": fn.get("description") or ""}
    if fn.get("parameters") is not None:
        spec["parameters"] = fn["parameters"]
    return spec


def _tool_choice(raw: Any) -> str:
    if raw is None:
        return "auto"
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict):
        fn = raw.get("function") if isinstance(raw.get("function"), dict) else raw
        if isinstance(fn.get("name"), str):
            return fn["name"]
    raise InvalidSyscallError("tool_choice must be 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}")


def _response_format(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None or raw.get("type") in (None, "text"):
        return None
    if raw["type"] == "json_object":
        return {"type": "json_object"}
    if raw["type"] == "json_schema":
        return {"type": "json_schema", "json_schema": raw.get("json_schema")}
    raise InvalidSyscallError(f"response_format type {raw['type']!r} is not supported; use text, json_object or json_schema")


def to_llm_request(body: ChatCompletionBody, *, default_max_tokens: int) -> LLMRequest:
    """Translate an OpenAI chat-completion body into the kernel's LLMRequest (400 with the offending field)."""
    if body.n not in (None, 1):
        raise InvalidSyscallError("n > 1 is not supported: send one request per completion")
    if body.logprobs:
        raise InvalidSyscallError("logprobs are not supported by the kernel's cores")
    if body.functions is not None or body.function_call is not None:
        raise InvalidSyscallError("legacy 'functions' / 'function_call' are not supported; use 'tools' / 'tool_choice'")
    extra = dict(body.extra or {})
    if body.ignore_eos is not None:  # llama-server's name for it: one request body serves both servers
        extra["ignore_eos"] = body.ignore_eos
    if body.parallel_tool_calls is not None:
        extra["parallel_tool_calls"] = body.parallel_tool_calls
    data: dict[str, Any] = {
        "messages": [to_message(m, i) for i, m in enumerate(body.messages)],
        "tools": [_tool_spec(t, i) for i, t in enumerate(body.tools or [])],
        "tool_choice": _tool_choice(body.tool_choice),
        "response_format": _response_format(body.response_format),
        "max_tokens": body.max_completion_tokens or body.max_tokens or default_max_tokens,
        "stop": body.stop,
        "seed": body.seed,
        "model": None if body.model in DEFAULT_ALIASES else body.model,
        "extra": extra,
    }
    if body.temperature is not None:
        data["temperature"] = body.temperature
    if body.top_p is not None:
        data["top_p"] = body.top_p
    return validate_model(LLMRequest, data, "chat completion request")  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- response translation


def _tool_calls_json(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}} for c in calls]


def usage_json(response: LLMResponse) -> dict[str, Any]:
    u = response.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def completion_json(response: LLMResponse, *, completion_id: str, model: str, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": response.content, "refusal": None}
    if response.tool_calls:
        message["tool_calls"] = _tool_calls_json(response.tool_calls)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": f"aios-{response.core}" if response.core else None,
        "choices": [{"index": 0, "message": message, "finish_reason": FINISH.get(response.finish_reason, "stop"), "logprobs": None}],
        "usage": usage_json(response),
    }


class ChunkWriter:
    """Builds the SSE events of one streamed completion."""

    def __init__(self, *, completion_id: str, model: str, created: int, include_usage: bool) -> None:
        self.base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": None}
        self.include_usage = include_usage

    def _event(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if self.include_usage:
            chunk["usage"] = None
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def opening(self) -> bytes:
        return self._event({"role": "assistant", "content": ""})

    def text(self, delta: str) -> bytes:
        return self._event({"content": delta})

    def closing(self, response: LLMResponse) -> list[bytes]:
        events = []
        for i, call in enumerate(response.tool_calls):
            events.append(self._event({"tool_calls": [{"index": i, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}]}))
            args = json.dumps(call.arguments)
            for k in range(0, len(args), ARG_FRAGMENT):
                events.append(self._event({"tool_calls": [{"index": i, "function": {"arguments": args[k : k + ARG_FRAGMENT]}}]}))
        events.append(self._event({}, FINISH.get(response.finish_reason, "stop")))
        if self.include_usage:
            events.append(b"data: " + json.dumps({**self.base, "choices": [], "usage": usage_json(response)}).encode() + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return events


def sse_error(exc: AIOSError) -> bytes:
    return b"data: " + json.dumps(error_body(exc)).encode() + b"\n\n"


# --------------------------------------------------------------------------- endpoints


def _model_entries(state: ServerState) -> list[dict[str, Any]]:
    kernel = state.kernel
    created = int(state.started)
    entries: dict[str, dict[str, Any]] = {}
    for model, pool in kernel.pools.items():
        entries[model] = {"id": model, "object": "model", "created": created, "owned_by": "aios", "cores": [c.name for c in pool.cores]}
    for name, core in kernel.cores.items():
        entries.setdefault(name, {"id": name, "object": "model", "created": created, "owned_by": "aios", "core_of": core.model, "kind": core.kind})
    return list(entries.values())


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """Models (one per pool) and cores the kernel serves; any of these ids is a valid ``model``."""
    principal(request)
    return {"object": "list", "data": _model_entries(server_state(request))}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    principal(request)
    for entry in _model_entries(server_state(request)):
        if entry["id"] == model_id:
            return entry
    raise NotFoundError(f"the kernel serves no model {model_id!r}; GET /v1/models lists what it serves", model=model_id)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    state = server_state(request)
    agent = principal(request).require_agent()
    admission = Admission(state, agent)
    streaming = False
    try:
        body = validate_model(ChatCompletionBody, await json_body(request), "chat completion request")
        record = agent_record(state, agent)
        llm_request = to_llm_request(body, default_max_tokens=state.settings.default_max_tokens)
        fields = {"agent": agent, "program": header_program(request, record), "priority": header_priority(request, record), "request": llm_request}
        sc: LLMSyscall = validate_model(LLMSyscall, fields, "chat completion request")
        state.note_program(agent, sc.program or agent)
        completion_id = "chatcmpl-" + sc.id
        created = int(time.time())
        if not body.stream:
            try:
                response = await run_watched(state, request.receive, sc.id, "llm", state.kernel.acall(sc))
            except ClientGone:
                return Response(status_code=499)
            payload = completion_json(response, completion_id=completion_id, model=body.model, created=created)
            return Response(json.dumps(payload), media_type="application/json")
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        writer = ChunkWriter(completion_id=completion_id, model=body.model, created=created, include_usage=include_usage)
        streaming = True  # from here on the stream owns the admission
        return await stream_syscall(state, request, sc, admission, lambda first, pieces: _completion_events(first, pieces, writer))
    finally:
        if not streaming:
            admission.release()


async def _completion_events(first: StreamPiece, pieces: AsyncIterator[StreamPiece], writer: ChunkWriter) -> AsyncIterator[bytes]:
    try:
        yield writer.opening()
        piece: StreamPiece | None = first
        while piece is not None:
            if piece.delta:
                yield writer.text(piece.delta)
            if piece.response is not None:
                for event in writer.closing(piece.response):
                    yield event
                return
            piece = await anext(pieces, None)  # type: ignore[arg-type]
        yield sse_error(AIOSError("the kernel ended the stream without a final response"))
    except AIOSError as exc:
        yield sse_error(exc)
