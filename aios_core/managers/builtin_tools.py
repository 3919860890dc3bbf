"""The built-in tool set: calculator, files through storage, Python execution, shell, web fetch.

Each is a plain :class:`~aios_core.tool.Tool`, registered by ``plugins/tools.py``
through the same hook a third-party plugin uses. File tools go through the
storage manager with the calling agent's identity, so every read and write is
access-checked, sandboxed to the agent's paths and versioned. Code execution
runs in a confined subprocess (see :mod:`sandbox` and :mod:`isolation`), never
in the kernel; it sees only its own working folder, and only the files it
names in ``outputs`` come back, each a plain regular file (no symbolic link
out, no hard link, no FIFO, device or socket). Code execution, the shell and
web fetch are ``irreversible``, so access control asks for confirmation. Shell
and web fetch are also off unless the configuration switches them on.
"""

from __future__ import annotations

import ast
import errno
import math
import operator
import os
import stat
from typing import Any

from aios_core.errors import AccessDeniedError, StorageError, ToolError
from aios_core.managers.isolation import is_plain_file
from aios_core.managers.sandbox import SandboxLimits, Workspace, run_python, run_shell
from aios_core.managers.sandbox_paths import resolve_in
from aios_core.managers.tools import NETWORK_TAG, SHELL_TAG, ToolContext
from aios_core.tool import Tool

# --------------------------------------------------------------------------- calculator

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {
    name: getattr(math, name)
    for name in ("sqrt", "exp", "log", "log10", "log2", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh",
                 "floor", "ceil", "fabs", "hypot", "degrees", "radians", "gcd", "comb", "perm")
}
_FUNCTIONS.update({"abs": abs, "round": round, "min": min, "max": max, "factorial": math.factorial})
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}
MAX_EXPRESSION = 1000
MAX_INT_BITS = 4096


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(f"result has more than {MAX_INT_BITS} bits; use the python tool for big integers")
    return value


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > 1000 and abs(left) > 1:
            raise ToolError("exponent too large for the calculator (|exponent| > 1000)")
        return _check_size(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords:
        args = [_evaluate(a) for a in node.args]
        if node.func.id == "factorial" and args and isinstance(args[0], int) and args[0] > 1000:
            raise ToolError("factorial argument too large for the calculator (> 1000)")
        # comb/perm of huge arguments run for minutes in a thread nobody can stop
        if node.func.id in ("comb", "perm") and any(isinstance(a, int) and abs(a) > 10_000 for a in args):
            raise ToolError(f"{node.func.id} arguments too large for the calculator (> 10000); use the python tool")
        return _check_size(_FUNCTIONS[node.func.id](*args))
    raise ToolError(
        f"unsupported expression element {ast.dump(node)[:60]}; use numbers, + - * / // % **, parentheses, "
        f"constants ({', '.join(_CONSTANTS)}) and functions ({', '.join(sorted(_FUNCTIONS))})"
    )


def calculator(expression: str) -> int | float:
    """Evaluate arithmetic safely (an AST whitelist, never ``eval``)."""
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {exc.msg}") from None
    try:
        return _evaluate(tree)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as exc:
        raise ToolError(f"cannot evaluate {expression!r}: {exc}") from None


# --------------------------------------------------------------------------- files


def _storage(ctx: ToolContext):  # noqa: ANN202
    if ctx.storage is None:
        raise ToolError("this kernel has no storage manager; file tools are unavailable")
    return ctx.storage


async def file_read(path: str, version: int | None = None, owner: str | None = None, *, _ctx: ToolContext) -> dict[str, Any]:
    content = await _storage(_ctx).read(_ctx.agent, path, owner=owner, version=version)
    data = content.data if content.is_text else f"<{len(content.data)} bytes of binary data>"
    return {"path": content.path, "version": content.version, "content": data}


async def file_write(path: str, content: str, *, _ctx: ToolContext) -> dict[str, Any]:
    info = await _storage(_ctx).write(_ctx.agent, path, content)
    return {"path": info.path, "version": info.version, "size": info.size, "unchanged": info.unchanged}


async def file_list(prefix: str = "", owner: str | None = None, *, _ctx: ToolContext) -> list[dict[str, Any]]:
    files = await _storage(_ctx).list(_ctx.agent, prefix, owner=owner)
    return [{"path": f.path, "version": f.version, "size": f.size} for f in files]


async def file_search(query: str, k: int = 5, prefix: str = "", *, _ctx: ToolContext) -> list[dict[str, Any]]:
    hits = await _storage(_ctx).search(_ctx.agent, query, k=k, prefix=prefix)
    return [{"path": h.path, "score": h.score, "snippet": h.snippet} for h in hits]


# --------------------------------------------------------------------------- code execution


def _limits(ctx: ToolContext, timeout: float | None) -> SandboxLimits:
    base = ctx.limits
    if timeout is None:
        return base
    return base.model_copy(update={"timeout": max(0.1, min(float(timeout), base.timeout))})


async def _stage_inputs(ctx: ToolContext, ws: Workspace, inputs: list[str]) -> None:
    for path in inputs:
        content = await _storage(ctx).read(ctx.agent, path)
        target = resolve_in(ws.work, content.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if content.is_text:
            target.write_text(content.data, encoding="utf-8")  # type: ignore[arg-type]
        else:
            target.write_bytes(content.data)  # type: ignore[arg-type]


def _read_output(real: os.PathLike[str], limit: int) -> bytes:
    """The bytes of one output file, refusing anything but a plain regular file of at most ``limit`` bytes.

    Opened without following a final symbolic link and without blocking (a FIFO
    would hang the kernel), then checked on the open descriptor, so the check
    and the read see the same file: a hard link (``st_nlink > 1``) could name a
    file the code must not hand over, and a device, FIFO or socket is not a file.
    """
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StorageError("the code did not create this file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError("refused: the output is a symbolic link") from None
        raise StorageError(f"cannot open the output: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not is_plain_file(st):
            kind = "a hard link (it has other names)" if st.st_nlink > 1 and stat.S_ISREG(st.st_mode) else "not a regular file"
            raise StorageError(f"refused: the output is {kind}; save plain files only")
        if st.st_size > limit:
            raise StorageError(f"refused: the output has {st.st_size} bytes, more than the {limit} a file may have")
        return fh.read(limit + 1)


async def _collect_outputs(ctx: ToolContext, ws: Workspace, outputs: list[str]) -> dict[str, Any]:
    """Store the files the code produced; a missing file, a link or a special file is reported per file."""
    collected: dict[str, Any] = {}
    limit = ctx.limits.max_file_mb * 1024 * 1024
    for path in outputs:
        try:
            real = resolve_in(ws.work, path)
            if real.is_dir():
                collected[path] = {"error": "the code did not create this file (it is a folder)"}
                continue
            blob = _read_output(real, limit)
            try:
                data: str | bytes = blob.decode("utf-8")
            except UnicodeDecodeError:
                data = blob
            info = await _storage(ctx).write(ctx.agent, path, data)
            collected[path] = {"version": info.version, "size": info.size}
        except (AccessDeniedError, StorageError) as exc:
            collected[path] = {"error": exc.message}
    return collected


async def python(
    code: str, inputs: list[str] | None = None, outputs: list[str] | None = None, timeout: float | None = None, *, _ctx: ToolContext
) -> dict[str, Any]:
    """Run Python in a fresh confined workspace; ``inputs`` are copied from storage, ``outputs`` stored back."""
    limits = _limits(_ctx, timeout)
    with Workspace(_ctx.sandbox_dir, prefix=f"py-{_ctx.call_id[:24]}-") as ws:
        await _stage_inputs(_ctx, ws, inputs or [])
        result = await run_python(code, workspace=ws, limits=limits, confinement=_ctx.confinement)
        report = result.as_dict()
        if not result.ok and (result.timed_out or result.memory_exceeded or result.signal):
            report["error"] = f"the code {result.describe_failure(limits)}"
        if outputs:
            report["outputs"] = await _collect_outputs(_ctx, ws, outputs) if result.ok else {}
    return report


async def shell(command: str, timeout: float | None = None, *, _ctx: ToolContext) -> dict[str, Any]:
    """Run a shell command in a fresh, limited workspace (off unless tools.shell_enabled)."""
    limits = _limits(_ctx, timeout)
    with Workspace(_ctx.sandbox_dir, prefix=f"sh-{_ctx.call_id[:24]}-") as ws:
        result = await run_shell(command, workspace=ws, limits=limits, confinement=_ctx.confinement)
    report = result.as_dict()
    if not result.ok and (result.timed_out or result.memory_exceeded or result.signal):
        report["error"] = f"the command {result.describe_failure(limits)}"
    return report


# --------------------------------------------------------------------------- web


async def web_fetch(url: str, max_bytes: int = 200_000, *, _ctx: ToolContext) -> dict[str, Any]:
    """GET an http(s) URL and return its text, capped (off unless tools.web_enabled)."""
    import httpx

    if not url.lower().startswith(("http://", "https://")):
        raise ToolError(f"web_fetch fetches http(s) URLs only, not {url[:40]!r}")
    timeout = max(1.0, _ctx.limits.timeout)
    async with httpx.AsyncClient(follow_redirects=True, timeout=timeout) as client:
        try:
            async with client.stream("GET", url, headers={"User-Agent": "aios-web-fetch/0.1"}) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= max_bytes:
                        break
        except httpx.HTTPError as exc:
            raise ToolError(f"fetching {url} failed: {exc}") from None
    text = bytes(body[:max_bytes]).decode(response.encoding or "utf-8", "replace")
    return {
        "url": str(response.url),
        "status": response.status_code,
        "content_type": response.headers.get("content-type", ""),
        "truncated": len(body) >= max_bytes,
        "text": text,
    }


# --------------------------------------------------------------------------- the set


def _obj(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


_PATHS = {"type": "array", "items": {"type": "string"}, "maxItems": 64}


def builtin_tools() -> list[Tool]:
    return [
        Tool(
            "calculator",
            "Evaluate an arithmetic expression, e.g. '2*(3+4)**2' or 'sqrt(2)*pi'.",
            _obj({"expression": {"type": "string", "minLength": 1, "maxLength": MAX_EXPRESSION}}, ["expression"]),
            calculator,
            side_effect="none",
            timeout=5.0,
            max_concurrency=16,
        ),
        Tool(
            "file_read",
            "Read a file from your storage (optionally an older version, or another agent's file if you are allowed).",
            _obj({"path": {"type": "string"}, "version": {"type": "integer", "minimum": 1}, "owner": {"type": "string"}}, ["path"]),
            file_read,
            side_effect="read",
            timeout=30.0,
            max_concurrency=16,
            wants_context=True,
        ),
        Tool(
            "file_write",
            "Write a text file to your storage. Earlier versions are kept and can be restored.",
            _obj({"path": {"type": "string"}, "content": {"type": "string"}}, ["path", "content"]),
            file_write,
            side_effect="write",
            timeout=30.0,
            max_concurrency=8,
            wants_context=True,
        ),
        Tool(
            "file_list",
            "List the files in your storage, optionally under a folder prefix.",
            _obj({"prefix": {"type": "string"}, "owner": {"type": "string"}}, []),
            file_list,
            side_effect="read",
            timeout=30.0,
            max_concurrency=16,
            wants_context=True,
        ),
        Tool(
            "file_search",
            "Find the files in your storage whose content is most similar to a query.",
            _obj({"query": {"type": "string", "minLength": 1}, "k": {"type": "integer", "minimum": 1, "maximum": 50}, "prefix": {"type": "string"}}, ["query"]),
            file_search,
            side_effect="read",
            timeout=30.0,
            max_concurrency=8,
            wants_context=True,
        ),
        Tool(
            "python",
            "Run Python 3 code in a fresh sandboxed process and return stdout/stderr. "
            "Files listed in 'inputs' are copied from your storage into the working directory; "
            "files listed in 'outputs' are saved back to your storage after the run.",
            _obj(
                {
                    "code": {"type": "string", "minLength": 1, "maxLength": 200_000},
                    "inputs": _PATHS,
                    "outputs": _PATHS,
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
                },
                ["code"],
            ),
            python,
            side_effect="irreversible",
            timeout=60.0,
            max_concurrency=2,
            wants_context=True,
            tags=("code",),
        ),
        Tool(
            "shell",
            "Run a shell command in a fresh sandboxed working directory and return its output.",
            _obj({"command": {"type": "string", "minLength": 1, "maxLength": 20_000}, "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 600}}, ["command"]),
            shell,
            side_effect="irreversible",
            timeout=60.0,
            max_concurrency=2,
            enabled_by_default=False,
            wants_context=True,
            tags=(SHELL_TAG,),
        ),
        Tool(
            "web_fetch",
            "Fetch a web page (http or https) and return its text.",
            _obj({"url": {"type": "string", "minLength": 8, "maxLength": 4096}, "max_bytes": {"type": "integer", "minimum": 1, "maximum": 5_000_000}}, ["url"]),
            web_fetch,
            side_effect="irreversible",
            timeout=30.0,
            max_concurrency=4,
            enabled_by_default=False,
            wants_context=True,
            tags=(NETWORK_TAG,),
        ),
    ]
