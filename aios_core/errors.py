"""Typed errors raised to callers of the kernel.

Every error a caller can see derives from :class:`AIOSError` and carries a
message that says what to do about it. The kernel itself never dies because of
one of these: they are raised to the one waiter they concern.
"""

from __future__ import annotations

from typing import Any


class AIOSError(Exception):
    """Base class of every error the kernel raises to a caller."""

    #: stable machine-readable code, also used as the HTTP error type by the server
    code: str = "aios_error"
    #: HTTP status the server maps this error to
    http_status: int = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.code, "message": self.message, **({"details": self.details} if self.details else {})}


class InvalidSyscallError(AIOSError, ValueError):
    """A syscall failed validation before it reached any queue."""

    code = "invalid_syscall"
    http_status = 400


class UnknownAgentError(AIOSError, LookupError):
    """A syscall named an agent the kernel does not know."""

    code = "unknown_agent"
    http_status = 404


class UnknownComponentError(AIOSError, LookupError):
    """A core, scheduler, tool, adapter or backend name that no plugin registered."""

    code = "unknown_component"
    http_status = 404


class KernelNotRunningError(AIOSError, RuntimeError):
    """The kernel was stopped (or never started) when the syscall arrived."""

    code = "kernel_not_running"
    http_status = 503


class QueueFullError(AIOSError):
    """Back-pressure: the resource queue is at its configured bound."""

    code = "queue_full"
    http_status = 429


class SyscallCancelledError(AIOSError):
    """The syscall was cancelled (by its caller, its timeout, or kernel shutdown)."""

    code = "cancelled"
    http_status = 499


class SyscallTimeoutError(SyscallCancelledError, TimeoutError):
    """The syscall did not finish within its ``timeout``."""

    code = "timeout"
    http_status = 504


class CoreError(AIOSError):
    """An LLM core failed while serving a request (crash, dropped connection, engine error)."""

    code = "core_error"
    http_status = 502

    def __init__(self, message: str, *, retryable: bool = False, **details: Any) -> None:
        super().__init__(message, **details)
        self.retryable = retryable


class ContextLengthError(AIOSError, ValueError):
    """The prompt (plus requested output) does not fit the model's context window."""

    code = "context_length_exceeded"
    http_status = 400


class AccessDeniedError(AIOSError, PermissionError):
    """The agent's privilege group does not allow this action, or a required confirmation was refused."""

    code = "access_denied"
    http_status = 403


class ToolError(AIOSError):
    """A tool call failed: bad arguments, the tool raised, timed out or exceeded its limits."""

    code = "tool_error"
    http_status = 422


class StorageError(AIOSError):
    """A storage operation failed (bad path, missing version, disk full, ...)."""

    code = "storage_error"
    http_status = 422


class MemoryManagerError(AIOSError):
    """A memory operation failed (over the agent's limit, unknown key, ...)."""

    code = "memory_error"
    http_status = 422


class MemoryItemNotFoundError(MemoryManagerError, LookupError):
    """The memory item does not exist: never written, or deleted (possibly while it was being read).

    Same code and HTTP status as :class:`MemoryManagerError` on the wire, with
    ``details["reason"] == "not_found"`` as before; in Python it can be caught alone.
    """

    def __init__(self, message: str, **details: Any) -> None:
        details.setdefault("reason", "not_found")
        super().__init__(message, **details)


class ConfigError(AIOSError, ValueError):
    """The configuration file or environment is invalid; the message names the offending key."""

    code = "config_error"
    http_status = 500
