"""The first code that runs in a sandbox subprocess: apply the limits, then do the one job.

Run as ``python -m aios_core.managers.sandbox_child`` with one JSON line on
stdin. The limits are set here with ``setrlimit`` (not in a ``preexec_fn``,
which is unsafe in the threaded kernel) before any untrusted code runs, and
they survive ``exec`` for shell commands. Jobs:

- ``script``: run a Python file as ``__main__`` (the Python execution tool);
- ``call``: import ``module:qualname``, call it with JSON keyword arguments and
  write a JSON result file (sandboxed plugin tools);
- ``exec``: replace this process with a command (the shell tool).

Under bubblewrap with a root kernel, the payload's ``drop_to`` names the uid
(``nobody``) to switch to first: the sandbox starts as a namespace root that
maps to the host's root, which Linux exempts from ``RLIMIT_NPROC``; after the
switch the process holds no capability and the process limit holds.

A Python ``MemoryError`` under the address-space limit exits with
:data:`MEMORY_EXIT` so the parent can say "memory limit" instead of "crashed".
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import runpy
import sys
import traceback

MEMORY_EXIT = 125


def apply_limits(limits: dict[str, int | None]) -> None:
    def cap(which: int, value: int | None) -> None:
        if value is None:
            return
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))

    memory = limits.get("memory_bytes")
    cap(resource.RLIMIT_AS, memory)
    cap(resource.RLIMIT_CPU, limits.get("cpu_seconds"))
    cap(resource.RLIMIT_FSIZE, limits.get("file_bytes"))
    cap(resource.RLIMIT_CORE, 0)
    cap(resource.RLIMIT_NOFILE, limits.get("open_files"))
    cap(resource.RLIMIT_NPROC, limits.get("processes"))


def drop_privileges(uid: int | None) -> None:
    """Become ``uid`` (group too, no supplementary groups); setuid away from root clears every capability."""
    if uid is None:
        return
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        os._exit(126)


def _out_of_memory() -> None:
    try:
        os.write(2, b"\nMemoryError: the sandbox memory limit was exceeded\n")
    finally:
        os._exit(MEMORY_EXIT)


def _run_script(path: str) -> None:
    sys.argv = [path]
    sys.path.insert(0, os.getcwd())
    try:
        runpy.run_path(path, run_name="__main__")
    except MemoryError:
        _out_of_memory()
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - report like the interpreter would, minus our own frames
        etype, value, tb = sys.exc_info()
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next
        traceback.print_exception(etype, value, tb)
        sys.stderr.flush()
        os._exit(1)


def _call(target: str, kwargs: dict, result_path: str) -> None:
    module_name, _, qualname = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        output = obj(**kwargs)
        result = {"ok": True, "output": output}
    except MemoryError:
        _out_of_memory()
    except BaseException as exc:  # noqa: BLE001 - everything is reported to the parent
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "error_type": type(exc).__name__}
    try:
        text = json.dumps(result)
    except (TypeError, ValueError) as exc:
        text = json.dumps({"ok": False, "error": f"the tool returned a value that is not JSON: {exc}", "error_type": "TypeError"})
    with open(result_path, "w", encoding="utf-8") as fh:
        fh.write(text)


def main() -> None:
    payload = json.loads(sys.stdin.readline())
    drop_privileges(payload.get("drop_to"))
    apply_limits(payload.get("limits", {}))
    control = payload.get("control", "")
    mode = payload["mode"]
    if mode == "exec":
        argv = payload["argv"]
        os.execvp(argv[0], argv)
    elif mode == "script":
        _run_script(os.path.join(control, payload["script"]))
    elif mode == "call":
        _call(payload["target"], payload.get("kwargs", {}), os.path.join(control, payload["result"]))
    else:
        sys.exit(f"unknown sandbox mode {mode!r}")


if __name__ == "__main__":
    main()
