"""Errors of the HTTP layer, and the one JSON shape every error takes on the wire.

The body is OpenAI's error shape (``{"error": {"message", "type", "code", ...}}``)
on every endpoint, so the official ``openai`` client raises its usual typed
exceptions and the remote SDK can rebuild the kernel's own exception class from
``code`` (see :func:`error_from_body`).
"""

from __future__ import annotations

from typing import Any

from aios_core.errors import AccessDeniedError, AIOSError, CoreError, InvalidSyscallError, KernelNotRunningError


class AuthenticationError(AIOSError):
    """No token, or a token the kernel did not issue (or has revoked)."""

    code = "invalid_api_key"
    http_status = 401


class RateLimitedError(AIOSError):
    """The agent exceeded its request rate or its concurrent-request limit."""

    code = "rate_limited"
    http_status = 429


class RequestTooLargeError(AIOSError):
    """The request body exceeds the server's size limit."""

    code = "request_too_large"
    http_status = 413


class RequestTimeoutError(AIOSError):
    """The client did not send its request (head or body) within the server's read timeout."""

    code = "request_timeout"
    http_status = 408


class JSONTooDeepError(InvalidSyscallError):
    """The request body nests JSON deeper than the server accepts (parsing it could exhaust the stack)."""

    code = "json_too_deep"
    http_status = 400


class ServerOverloadedError(AIOSError):
    """Too many connections: from this client, or in total."""

    code = "too_many_connections"
    http_status = 503


class ServerShuttingDownError(KernelNotRunningError):
    """The server is draining: new requests are refused and overdue ones are failed cleanly."""

    code = "server_shutting_down"
    http_status = 503


class NotFoundError(AIOSError, LookupError):
    """No such endpoint or resource."""

    code = "not_found"
    http_status = 404


def error_body(exc: AIOSError) -> dict[str, Any]:
    """The JSON body of an error response (OpenAI's shape plus AIOS ``details``)."""
    inner: dict[str, Any] = {"message": exc.message, "type": exc.code, "code": exc.code, "param": None}
    if exc.details:
        inner["details"] = _jsonable(exc.details)
    if getattr(exc, "retryable", None) is not None:
        inner["retryable"] = bool(exc.retryable)  # type: ignore[attr-defined]
    return {"error": inner}


def _jsonable(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value, fallback=repr)


def _error_classes() -> dict[str, type[AIOSError]]:
    found: dict[str, type[AIOSError]] = {}
    stack: list[type[AIOSError]] = [AIOSError]
    while stack:
        cls = stack.pop()
        # the first (most general) class of a code wins; subclasses sharing it stay reachable by inheritance
        found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return found


def error_from_body(status: int, body: Any) -> AIOSError:
    """Rebuild the typed error a remote kernel raised, from its HTTP status and JSON body."""
    inner = body.get("error") if isinstance(body, dict) else None
    if not isinstance(inner, dict):
        text = str(body)[:500] if body else "no body"
        cls = _status_class(status)
        return _make(cls, f"the kernel answered HTTP {status}: {text}", {}, None)
    code = str(inner.get("code") or inner.get("type") or "")
    cls = _error_classes().get(code) or _status_class(status)
    message = str(inner.get("message") or f"the kernel answered HTTP {status}")
    details = inner.get("details") if isinstance(inner.get("details"), dict) else {}
    return _make(cls, message, details, inner.get("retryable"))


def _status_class(status: int) -> type[AIOSError]:
    return {
        401: AuthenticationError, 403: AccessDeniedError, 408: RequestTimeoutError, 413: RequestTooLargeError, 429: RateLimitedError,
        503: KernelNotRunningError,
    }.get(
        status, AIOSError
    )


def _make(cls: type[AIOSError], message: str, details: dict[str, Any], retryable: Any) -> AIOSError:
    # built without calling the subclass constructor: some take extra required arguments (CoreError(retryable=))
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.message = message
    exc.details = dict(details)
    if retryable is not None or issubclass(cls, CoreError):
        exc.retryable = bool(retryable)  # type: ignore[attr-defined]
    for key, value in details.items():
        if key.isidentifier() and not hasattr(exc, key):
            try:
                setattr(exc, key, value)
            except AttributeError:
                pass
    return exc
