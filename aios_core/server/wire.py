"""Syscalls and their results over JSON, without losing bytes or result types.

The remote SDK must hand back what an embedded kernel returns: an
``LLMResponse``, a list of ``ToolResult``, a ``FileContent`` whose ``data`` is
``bytes``... Plain JSON loses both bytes and types, so values are tagged:

* ``bytes`` -> ``{"$bytes": "<base64>"}``
* a pydantic model -> ``{"$type": "module:Class", "value": {...}}``
* a dict that itself uses one of these keys -> ``{"$dict": {...}}`` (escaped)

Decoding only rebuilds model classes from ``aios_core`` or from modules the
process has already imported, so a response can never make a client import code.
"""

from __future__ import annotations

import base64
import importlib
import sys
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from aios_core.syscalls import AnySyscall, SyscallBase, Timing, new_id, parse_syscall

_TAGS = ("$bytes", "$type", "$dict")


def encode(value: Any) -> Any:
    """A JSON-ready form of ``value`` that :func:`decode` turns back into an equal value."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, BaseModel):
        cls = type(value)
        return {"$type": f"{cls.__module__}:{cls.__qualname__}", "value": encode(value.model_dump(mode="python"))}
    if isinstance(value, dict):
        out = {str(k): encode(v) for k, v in value.items()}
        return {"$dict": out} if any(tag in out for tag in _TAGS) else out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode(v) for v in value]
    return to_jsonable_python(value, fallback=repr)


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and "$bytes" in value:
        return base64.b64decode(value["$bytes"])
    if len(value) == 1 and "$dict" in value and isinstance(value["$dict"], dict):
        return {k: decode(v) for k, v in value["$dict"].items()}
    if "$type" in value and set(value) <= {"$type", "value"}:
        inner = decode(value.get("value"))
        cls = _model_class(str(value["$type"]))
        if cls is None or not isinstance(inner, dict):
            return inner
        try:
            return cls.model_validate(inner)
        except Exception:  # noqa: BLE001 - a version skew between client and server: keep the data
            return inner
    return {k: decode(v) for k, v in value.items()}


def _model_class(tag: str) -> type[BaseModel] | None:
    module_name, _, qualname = tag.partition(":")
    if not module_name or not qualname:
        return None
    module = sys.modules.get(module_name)
    if module is None:
        if not (module_name == "aios_core" or module_name.startswith("aios_core.")):
            return None
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) and issubclass(obj, BaseModel) else None


# --------------------------------------------------------------------------- syscalls


def syscall_to_wire(syscall: Any) -> Any:
    """What the client sends: the syscall without its timing (the kernel keeps time)."""
    if isinstance(syscall, SyscallBase):
        return encode(syscall.model_dump(mode="python", exclude={"timing"}))
    if isinstance(syscall, dict):
        return encode({k: v for k, v in syscall.items() if k != "timing"})
    return syscall


def syscall_from_wire(body: bytes) -> AnySyscall:
    """Validate a request body as a syscall. Ids and timing always come from the server.

    A fresh id keeps one agent from addressing another agent's in-flight syscall
    (flights and snapshots are keyed by id); timing from a client would skew the
    waiting-time accounting the scheduler and ``aios top`` rely on.
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        from aios_core.errors import InvalidSyscallError

        raise InvalidSyscallError(f"invalid syscall: the body is not UTF-8 JSON ({exc.reason} at byte {exc.start})") from None
    if b'"$' in body:
        import json

        from aios_core.errors import InvalidSyscallError

        try:
            data = decode(json.loads(body))
        except ValueError as exc:
            raise InvalidSyscallError(f"invalid syscall: the body is not valid JSON ({exc})") from None
        if isinstance(data, dict):
            data.pop("timing", None)
        sc = parse_syscall(data)
    else:
        sc = parse_syscall(body)
    sc.id = new_id()
    sc.timing = Timing()
    return sc


def syscall_receipt(sc: AnySyscall) -> dict[str, Any]:
    """The id and timing the kernel gave a syscall, so the client can fill in its own copy."""
    return {"id": sc.id, "timing": sc.timing.model_dump()}
