"""The OpenAI wire format, both ways: requests out, streamed deltas and errors back in.

The openai core speaks to any OpenAI-compatible server (vLLM, SGLang, Ollama,
llama-server, hosted APIs). This module holds everything about that format
that does not depend on a connection, so it can be read and tested on its own:
how an :class:`~aios_core.syscalls.LLMRequest` becomes API keywords, how the
tool-call fragments of a stream add up to :class:`~aios_core.syscalls.ToolCall`
objects, how a server's error becomes a typed AIOS error (retryable or not), and
how a chat template renders a prompt for servers that continue a partial answer
only through the plain completions endpoint.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from aios_core.errors import AIOSError, ContextLengthError, CoreError
from aios_core.syscalls import LLMRequest, Message, ToolCall

#: API finish reasons mapped onto the kernel's; anything unknown ends as "stop"
FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls", "eos": "stop"}

_CONTEXT_PATTERN = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|max_model_len|too many tokens|prompt is too long|exceeds? the model",
    re.IGNORECASE,
)


def message_to_api(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None and message.role != "tool":
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def response_format_to_api(request: LLMRequest) -> dict[str, Any] | None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    schema = dict(fmt.json_schema or {})
    # accept both OpenAI's wrapper {"name", "schema", "strict"} and a bare JSON schema
    wrapper = schema if "schema" in schema else {"name": "response", "schema": schema}
    wrapper.setdefault("name", "response")
    return {"type": "json_schema", "json_schema": wrapper}


def chat_arguments(request: LLMRequest, model: str, max_tokens: int, *, prefix: str = "") -> dict[str, Any]:
    """Keyword arguments of ``chat.completions.create`` for ``request``.

    ``prefix`` (text already generated) is sent as a final assistant message,
    which servers that support prefill continue instead of starting a new turn.
    """
    messages = [message_to_api(m) for m in request.messages]
    if prefix:
        messages.append({"role": "assistant", "content": prefix})
    args: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
    }
    if request.stop:
        args["stop"] = list(request.stop)
    if request.seed is not None:
        args["seed"] = request.seed
    if request.tools:
        args["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in request.tools
        ]
        if request.tool_choice in ("auto", "none", "required"):
            args["tool_choice"] = request.tool_choice
        else:
            args["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice}}
    fmt = response_format_to_api(request)
    if fmt is not None:
        args["response_format"] = fmt
    return args


@dataclass
class _PartialCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Adds up the tool-call fragments of a streamed response (keyed by their ``index``)."""

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, deltas: Any) -> None:
        for position, delta in enumerate(deltas or []):
            index = _get(delta, "index")
            index = position if index is None else int(index)
            call = self._calls.setdefault(index, _PartialCall())
            call_id = _get(delta, "id")
            if call_id:
                call.id = call_id
            function = _get(delta, "function")
            if function is None:
                continue
            name = _get(function, "name")
            if name:
                # most servers send the name once; a few repeat it in every fragment
                call.name = name if not call.name or call.name == name else call.name + name
            arguments = _get(function, "arguments")
            if arguments:
                call.arguments.append(arguments if isinstance(arguments, str) else json.dumps(arguments))

    def calls(self) -> list[ToolCall]:
        """The completed calls; raises CoreError when the model produced arguments that are not JSON."""
        out = []
        for index in sorted(self._calls):
            partial = self._calls[index]
            text = "".join(partial.arguments)
            try:
                arguments = json.loads(text) if text.strip() else {}
            except json.JSONDecodeError as exc:
                raise CoreError(
                    f"the model called tool {partial.name!r} with arguments that are not valid JSON ({exc.msg}): {text[:200]!r}",
                    retryable=False,
                ) from None
            if not isinstance(arguments, dict):
                raise CoreError(f"the model called tool {partial.name!r} with non-object arguments: {text[:200]!r}", retryable=False)
            try:
                call = ToolCall(name=partial.name, arguments=arguments) if partial.id is None else ToolCall(
                    id=partial.id, name=partial.name, arguments=arguments
                )
            except ValueError as exc:
                raise CoreError(f"the model produced an invalid tool call {partial.name!r}: {exc}", retryable=False) from None
            out.append(call)
        return out


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def refused_connection(exc: BaseException) -> bool:
    """Whether nothing listens at the server's address (as opposed to a dropped stream or a timeout)."""
    import httpx

    cause = exc.__cause__ or exc
    return isinstance(cause, (httpx.ConnectError, ConnectionRefusedError))


def classify_error(exc: BaseException, *, core: str, base_url: str, model: str) -> AIOSError:
    """Turn a client or transport exception into the typed error the kernel expects.

    Retryable: the server could not be reached, dropped the connection, timed
    out, was overloaded (429) or failed (5xx). Not retryable: the request was
    refused (4xx), whose message says what to change.
    """
    import httpx
    import openai

    if isinstance(exc, AIOSError):
        return exc
    if isinstance(exc, openai.APITimeoutError) or isinstance(exc, httpx.TimeoutException):
        return CoreError(f"core {core}: {base_url} did not answer in time ({type(exc).__name__}); raise the core's timeout if the server is just slow", retryable=True)
    if isinstance(exc, openai.APIConnectionError) or isinstance(exc, (httpx.TransportError, OSError)):
        cause = exc.__cause__ or exc
        return CoreError(f"core {core}: lost or could not open the connection to {base_url}: {cause}", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _server_message(exc)
        if status == 400 or status == 413 or status == 422:
            if _CONTEXT_PATTERN.search(detail):
                return ContextLengthError(
                    f"core {core}: the prompt plus max_tokens does not fit the context of {model} at {base_url}: {detail}; "
                    "shorten the prompt or lower max_tokens",
                )
            return CoreError(f"core {core}: {base_url} refused the request ({status}): {detail}", retryable=False, status=status)
        if status in (401, 403):
            return CoreError(f"core {core}: {base_url} refused the credentials ({status}): {detail}; check api_key (or OPENAI_API_KEY)", retryable=False, status=status)
        if status == 404:
            return CoreError(f"core {core}: {base_url} has no model {model!r} or no such endpoint ({detail}); check model and base_url", retryable=False, status=status)
        if status == 429 or status >= 500:
            return CoreError(f"core {core}: {base_url} is overloaded or failing ({status}): {detail}", retryable=True, status=status)
        return CoreError(f"core {core}: {base_url} answered {status}: {detail}", retryable=False, status=status)
    if isinstance(exc, openai.APIError):
        return CoreError(f"core {core}: {base_url} sent an error in the stream: {exc}", retryable=True)
    return CoreError(f"core {core}: unexpected failure talking to {base_url}: {exc!r}", retryable=True)


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        if body.get("detail"):
            return str(body["detail"])
    return str(getattr(exc, "message", None) or exc)


def retry_after(exc: BaseException) -> float | None:
    """Seconds a 429/503 answer asks us to wait (its Retry-After header), if it says."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class PromptRenderer:
    """Renders messages with a Jinja chat template, for continuing a partial answer through ``/v1/completions``.

    The servers' templates (Hugging Face ``chat_template`` strings) expect
    ``messages``, ``add_generation_prompt`` and ``bos_token``; the BOS token is
    left empty because completion endpoints add it when they tokenize.
    """

    def __init__(self, template: str) -> None:
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = raise_exception
        env.filters.setdefault("tojson", lambda v, **kw: json.dumps(v, **kw))
        try:
            self._template = env.from_string(template)
        except TemplateError as exc:
            raise ValueError(f"chat_template is not a valid Jinja template: {exc}") from None

    def render(self, request: LLMRequest) -> str:
        from jinja2 import TemplateError

        messages = [{"role": m.role, "content": m.content or ""} for m in request.messages]
        try:
            return self._template.render(messages=messages, add_generation_prompt=True, bos_token="", eos_token="")
        except TemplateError as exc:
            raise CoreError(f"rendering the chat template failed: {exc}", retryable=False) from None
