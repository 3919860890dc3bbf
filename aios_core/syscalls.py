"""Syscalls: the only way an agent reaches an LLM, memory, storage or a tool.

A syscall is validated completely (pydantic, ``extra="forbid"``) before it is
queued, so a malformed request fails at the caller with an
:class:`~aios_core.errors.InvalidSyscallError` and never reaches a scheduler or a
core. Each syscall carries its agent, its program (the agent session whose
history the scheduler may use), a priority and a :class:`Timing` record that the
kernel fills in as the syscall moves through queues and cores.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from aios_core.errors import InvalidSyscallError

#: agent / program names: printable, no whitespace, short enough for logs and URLs
NAME_PATTERN = r"^[A-Za-z0-9_.:@/+-]{1,128}$"
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"

AgentName = Annotated[str, Field(pattern=NAME_PATTERN)]


class _IdSource:
    """32 hex digits, unique across processes: a random 64-bit prefix per process and a counter.

    ``uuid4()`` reads ``os.urandom`` for every id, about 10 microseconds on a VM:
    a tenth of the kernel's whole per-syscall budget. A child process after
    ``fork`` draws a new prefix.
    """

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = f"{int.from_bytes(os.urandom(8), 'big'):016x}"
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_ids = _IdSource()


def new_id() -> str:
    """A fresh syscall id (32 hex digits)."""
    return _ids()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=False)


# --------------------------------------------------------------------------- LLM payloads


class ToolCall(_Model):
    """A call of a tool by name with JSON arguments (OpenAI's function-call shape, flattened)."""

    id: str = Field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])
    name: Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("arguments", mode="before")
    @classmethod
    def _parse_json_arguments(cls, value: Any) -> Any:
        # OpenAI clients send arguments as a JSON string; accept both shapes.
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"tool call arguments are not valid JSON: {exc.msg}") from exc
        return value


class Message(_Model):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _check_shape(self) -> "Message":
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs the tool_call_id of the call it answers")
        if self.content is None and not self.tool_calls:
            raise ValueError(f"a '{self.role}' message needs content (or tool_calls for an assistant)")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self


class ToolSpec(_Model):
    """A tool offered to the model: name, description and JSON schema of its arguments."""

    name: Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @field_validator("parameters")
    @classmethod
    def _check_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"parameters is not a valid JSON schema: {exc.message}") from exc
        if schema.get("type", "object") != "object":
            raise ValueError("tool parameters must be a JSON schema of type 'object'")
        return schema


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _need_schema(self) -> "ResponseFormat":
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError("response_format type 'json_schema' needs json_schema")
        return self


class LLMRequest(_Model):
    """What an agent asks of a model. Cores render ``messages`` with the model's own chat template."""

    messages: Annotated[list[Message], Field(min_length=1)]
    tools: list[ToolSpec] = Field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] | str = "auto"
    response_format: ResponseFormat | None = None
    max_tokens: int = Field(default=256, ge=1, le=131072)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    #: core or model name; None means the kernel's default core
    model: str | None = None
    #: core-specific options (e.g. the sim core's ``sim_tokens``); cores ignore keys they do not know
    extra: dict[str, Any] = Field(default_factory=dict)

    def application(self) -> str | None:
        """Which application the calling agent is, as a digest of its leading system messages and the tools it offers.

        Agents of one application send the same instructions and tools, and their programs run to alike
        sizes: PLAS learns a size distribution per application. None when the request has neither.
        """
        system = [m.content or "" for m in itertools.takewhile(lambda m: m.role == "system", self.messages)]
        if not system and not self.tools:
            return None
        h = hashlib.blake2b(digest_size=12)
        for part in (*system, "\x00tools", *(t.name for t in self.tools)):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        return h.hexdigest()

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return value

    @model_validator(mode="after")
    def _tool_choice_names_a_tool(self) -> "LLMRequest":
        if self.tool_choice not in ("auto", "none", "required"):
            if self.tool_choice not in {t.name for t in self.tools}:
                raise ValueError(f"tool_choice {self.tool_choice!r} is not one of the offered tools")
        return self


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: prompt tokens served from a cached prefix instead of being recomputed
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


class LLMResponse(_Model):
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: FinishReason = "stop"
    usage: Usage = Field(default_factory=Usage)
    core: str = ""
    syscall_id: str = ""


# --------------------------------------------------------------------------- timing


class Timing(_Model):
    """Where a syscall's time went. Times come from the kernel loop's clock (``loop.time()``).

    ``service`` accumulates the time spent running on a resource (across
    preemptions), so ``waiting`` = turnaround - service counts every wait,
    including waits after a preemption.
    """

    created: float | None = None
    queued: float | None = None
    started: float | None = None
    finished: float | None = None
    service: float = 0.0
    preemptions: int = 0

    @property
    def turnaround(self) -> float | None:
        if self.created is None or self.finished is None:
            return None
        return self.finished - self.created

    @property
    def waiting(self) -> float | None:
        t = self.turnaround
        return None if t is None else max(0.0, t - self.service)

    @property
    def first_wait(self) -> float | None:
        if self.queued is None or self.started is None:
            return None
        return self.started - self.queued


# --------------------------------------------------------------------------- syscalls


class SyscallBase(_Model):
    id: str = Field(default_factory=new_id)
    agent: AgentName
    #: the program (agent session) this call belongs to; defaults to the agent name
    program: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    priority: int = Field(default=0, ge=-100, le=100)
    #: seconds the caller is willing to wait in total; None waits forever
    timeout: float | None = Field(default=None, gt=0)
    timing: Timing = Field(default_factory=Timing)

    @model_validator(mode="after")
    def _default_program(self) -> "SyscallBase":
        if self.program is None:
            self.program = self.agent
        return self


class LLMSyscall(SyscallBase):
    kind: Literal["llm"] = "llm"
    request: LLMRequest
    #: tokens the caller expects this call (or its whole program) still to generate; used by SRPT
    hint_tokens: int | None = Field(default=None, ge=0)


class MemorySyscall(SyscallBase):
    kind: Literal["memory"] = "memory"
    op: Literal["add", "get", "search", "delete", "list", "clear"]
    key: str | None = None
    value: Any = None
    query: str | None = None
    k: int = Field(default=5, ge=1, le=1000)
    #: the agent whose memory is addressed (another agent's needs an access grant)
    owner: AgentName | None = None


class StorageSyscall(SyscallBase):
    kind: Literal["storage"] = "storage"
    op: Literal["write", "read", "list", "delete", "versions", "rollback", "diff", "search"]
    path: str | None = None
    data: str | bytes | None = None
    version: int | None = Field(default=None, ge=1)
    other_version: int | None = Field(default=None, ge=1)
    timestamp: float | None = None
    query: str | None = None
    k: int = Field(default=5, ge=1, le=1000)
    owner: AgentName | None = None


class ClientTool(ToolSpec):
    """A tool that runs in the caller's process, declared with the call that uses it.

    Framework tools are functions of the agent's process; a kernel in another
    process cannot run them. For a call of a declared client tool the kernel
    does everything but run it: it validates the arguments against the declared
    schema, asks the access manager (confirmation for ``irreversible``), writes
    the audit record, and answers whether the caller may go ahead.
    """

    side_effect: Literal["none", "read", "write", "irreversible"] = "write"


class ToolSyscall(SyscallBase):
    kind: Literal["tool"] = "tool"
    #: independent calls from one LLM turn; the tool manager runs them in parallel
    calls: Annotated[list[ToolCall], Field(min_length=1, max_length=64)]
    #: tools of the caller's process that some of ``calls`` name (see :class:`ClientTool`)
    client_tools: Annotated[list[ClientTool], Field(max_length=64)] = Field(default_factory=list)


Syscall = Annotated[Union[LLMSyscall, MemorySyscall, StorageSyscall, ToolSyscall], Field(discriminator="kind")]
AnySyscall = Union[LLMSyscall, MemorySyscall, StorageSyscall, ToolSyscall]

_adapter: TypeAdapter[AnySyscall] = TypeAdapter(Syscall)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_syscall(data: Any) -> AnySyscall:
    """Validate a syscall from a dict / JSON text / model; raise InvalidSyscallError with the offending fields."""
    if isinstance(data, SyscallBase):
        data = data.model_dump()
    try:
        if isinstance(data, (str, bytes)):
            return _adapter.validate_json(data)
        return _adapter.validate_python(data)
    except ValidationError as exc:
        raise InvalidSyscallError(f"invalid syscall: {_describe(exc)}", errors=exc.errors(include_url=False, include_context=False)) from None


def validate_model(model: type[_Model] | type[BaseModel], data: Any, what: str) -> Any:
    """Validate ``data`` as ``model`` and turn a ValidationError into InvalidSyscallError naming ``what``."""
    try:
        if isinstance(data, model):
            return data
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidSyscallError(f"invalid {what}: {_describe(exc)}", errors=exc.errors(include_url=False, include_context=False)) from None


class StreamPiece:
    """What a streaming caller receives: text deltas, then one last piece carrying the full response."""

    __slots__ = ("delta", "response")

    def __init__(self, delta: str = "", response: LLMResponse | None = None) -> None:
        self.delta = delta
        self.response = response

    def __repr__(self) -> str:
        return f"StreamPiece(delta={self.delta!r}, final={self.response is not None})"
