"""The wire codec and error rebuilding: what crosses HTTP comes back as the same values, types and exceptions."""

from __future__ import annotations

import json

import pytest

from aios_core.errors import AIOSError, ContextLengthError, CoreError, InvalidSyscallError, QueueFullError
from aios_core.managers.tools import ToolResult
from aios_core.server.errors import RateLimitedError, error_body, error_from_body
from aios_core.server.wire import decode, encode, syscall_from_wire, syscall_to_wire
from aios_core.syscalls import LLMResponse, StorageSyscall, ToolCall, Usage


def roundtrip(value):
    return decode(json.loads(json.dumps(encode(value))))


@pytest.mark.parametrize(
    "value",
    [None, 1, 2.5, "text", [1, "a", None], {"a": {"b": [1, 2]}}, b"\x00\xff binary", {"$bytes": "not really"}, {"$type": "x", "value": 1},
     {"$dict": {"nested": b"x"}}, [b"a", {"k": b"b"}]],
)
def test_plain_values_roundtrip(value):
    assert roundtrip(value) == value


def test_models_come_back_as_their_class():
    response = LLMResponse(content=None, tool_calls=[ToolCall(name="f", arguments={"x": 1})], finish_reason="tool_calls", usage=Usage(prompt_tokens=3))
    back = roundtrip(response)
    assert isinstance(back, LLMResponse) and back == response and isinstance(back.tool_calls[0], ToolCall)
    results = roundtrip([ToolResult(call_id="c", name="f", ok=True, output={"bytes": b"\x01"})])
    assert isinstance(results[0], ToolResult) and results[0].output == {"bytes": b"\x01"}


def test_decoding_never_imports_foreign_modules():
    tagged = {"$type": "os:PathLike", "value": {"a": 1}}
    assert decode(tagged) == {"a": 1}
    assert decode({"$type": "aios_core.nope:Thing", "value": {"a": 1}}) == {"a": 1}
    assert decode({"$type": "json:JSONDecoder", "value": {"a": 1}}) == {"a": 1}  # imported, but not a pydantic model


def test_syscalls_get_server_ids_and_no_client_timing():
    sc = StorageSyscall(agent="a", op="write", path="f.bin", data=b"\x00\x01")
    sc.timing.created = 1.0
    body = json.dumps(syscall_to_wire(sc)).encode()
    assert b"timing" not in body
    parsed = syscall_from_wire(body)
    assert isinstance(parsed, StorageSyscall) and parsed.data == b"\x00\x01" and parsed.id != sc.id and parsed.timing.created is None
    forged = json.loads(body)
    forged["timing"] = {"created": -1e9}
    assert syscall_from_wire(json.dumps(forged).encode()).timing.created is None
    with pytest.raises(InvalidSyscallError):
        syscall_from_wire(b"{oops")


@pytest.mark.parametrize(
    "error",
    [ContextLengthError("too long", prompt_tokens=9), CoreError("boom", retryable=True), QueueFullError("full", queued=3),
     RateLimitedError("slow down", retry_after=0.5)],
)
def test_errors_rebuild_with_their_class_message_and_details(error):
    back = error_from_body(error.http_status, json.loads(json.dumps(error_body(error))))
    assert type(back) is type(error) and back.message == error.message and back.details == error.details
    if isinstance(error, CoreError):
        assert back.retryable is True


def test_unknown_error_bodies_still_raise_an_aios_error():
    back = error_from_body(502, "<html>bad gateway</html>")
    assert type(back) is AIOSError and "502" in back.message
    assert isinstance(error_from_body(429, {"error": {"message": "x", "code": "something_new"}}), RateLimitedError)
