"""Fuzz the kernel's untrusted inputs: syscall parser, wire decoder, storage paths, storage syscalls, the HTTP API.

    aios bench fuzz [--examples 2000] [--api-examples 200] [--seed N] [--out FILE]

Each property is a hypothesis search (the same properties run in CI with a
bounded example count, tests/security/test_fuzz.py); this command runs them
longer. What must hold:

* the parser and the wire decoder return a syscall or raise
  ``InvalidSyscallError`` with a message, nothing else, for any input;
* a storage path is normalised into a clean relative path (no control, C1 or
  bidi character, no ``..``, components of at most 255 bytes) or refused with
  ``SandboxPathError``;
* storage syscalls with generated ops, paths, owners and data, sent by one
  agent through an embedded kernel: every answer is a result or a typed
  ``AIOSError`` with a message, a refused call changes nothing stored, another
  agent's files never change, and the kernel still answers afterwards;
* the server's OpenAPI schema, fuzzed with schemathesis and an agent token:
  no answer is a 5xx.

The table lists each property, the examples tried and the first failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aios_core.errors import AIOSError, InvalidSyscallError
from aios_core.managers.sandbox_paths import MAX_COMPONENT_BYTES, SandboxPathError, normalize_path

try:
    from hypothesis import HealthCheck, given, seed, settings
    from hypothesis import strategies as st
except ImportError as exc:  # pragma: no cover - a dev dependency
    raise SystemExit(f"aios bench fuzz needs hypothesis and schemathesis: pip install -e '.[dev]' ({exc})") from exc

log = logging.getLogger(__name__)

#: characters attackers reach for: controls, C1, bidi marks, separators, traversal, NUL, surrogates
HOSTILE_CHARS = "\x00\x1b\x7f\x85\x9b\u202e\u2066\u2069\u200f\u061c\ud800/\\.~:*?[]{}% \t\n"
hostile_text = st.text(alphabet=st.one_of(st.characters(), st.sampled_from(HOSTILE_CHARS)), max_size=30)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), hostile_text)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(hostile_text, inner, max_size=4)), max_leaves=8)
KINDS = ["llm", "memory", "storage", "tool", "nonsense"]
STORAGE_OPS = ["write", "read", "list", "delete", "versions", "rollback", "diff", "search", "purge", "nonsense"]
syscall_dicts = st.fixed_dictionaries(
    {"kind": st.sampled_from(KINDS), "agent": st.one_of(hostile_text, st.just("alice"))},
    optional={
        "op": st.sampled_from(STORAGE_OPS + ["add", "get", "clear"]),
        "program": json_values,
        "priority": st.one_of(st.integers(), json_values),
        "path": json_values,
        "owner": json_values,
        "data": json_values,
        "version": json_values,
        "request": json_values,
        "calls": json_values,
        "timeout": json_values,
        "k": json_values,
    },
)


@dataclass
class Outcome:
    name: str
    examples: int
    ok: bool
    seconds: float
    failure: str | None = None


# --------------------------------------------------------------------------- pure properties


def check_parser(value: Any) -> None:
    """The syscall parser returns a syscall or raises InvalidSyscallError with a message."""
    from aios_core.syscalls import SyscallBase, parse_syscall

    try:
        assert isinstance(parse_syscall(value), SyscallBase)
    except InvalidSyscallError as exc:
        assert exc.message


def check_wire(body: bytes) -> None:
    """The server's body decoder: a syscall (with a fresh id) or InvalidSyscallError, for any bytes."""
    from aios_core.server.wire import syscall_from_wire

    try:
        syscall_from_wire(body)
    except InvalidSyscallError as exc:
        assert exc.message


def check_path(text: str) -> None:
    """A storage path is cleaned into a safe relative path, or refused with SandboxPathError."""
    try:
        clean = normalize_path(text)
    except SandboxPathError as exc:
        assert exc.message
        return
    parts = clean.split("/")
    assert clean and not clean.startswith("/") and ".." not in parts and "" not in parts and "." not in parts
    assert all(len(p.encode("utf-8")) <= MAX_COMPONENT_BYTES for p in parts)
    assert not any(_refused_char(ch) for ch in clean), clean
    assert "\\" not in clean


def _refused_char(ch: str) -> bool:
    """The characters no stored path may hold (an oracle written apart from the implementation)."""
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF or code in (0x061C, 0x200E, 0x200F) or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069


wire_bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    syscall_dicts.map(lambda v: json.dumps(v).encode()),
    syscall_dicts.map(lambda v: json.dumps({**v, "data": {"$bytes": "AAA="}, "request": {"$type": "os:system", "value": {}}}).encode()),
)
path_texts = st.one_of(hostile_text, st.lists(st.sampled_from(["a", "..", ".", "", "~", "x" * 256, "é" * 130, "\u202e", "b\x85"]), max_size=5).map("/".join))

PROPERTIES: dict[str, tuple[str, Any, Callable[[Any], None]]] = {
    "parser": ("parse_syscall over generated JSON values and syscall-shaped dicts", st.one_of(json_values, syscall_dicts), check_parser),
    "wire": ("syscall_from_wire over bytes, JSON and tagged JSON", wire_bodies, check_wire),
    "paths": ("normalize_path over hostile text and path shapes", path_texts, check_path),
}


def run_property(name: str, examples: int, *, seed_value: int | None = None) -> Outcome:
    """Search ``examples`` inputs for a counterexample of property ``name``."""
    _, strategy, check = PROPERTIES[name]
    return _search(name, examples, strategy, check, seed_value)


def _search(name: str, examples: int, strategy: Any, check: Callable[[Any], None], seed_value: int | None) -> Outcome:
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck), print_blob=False)
    @given(strategy)
    def prop(value: Any) -> None:
        check(value)

    if seed_value is not None:
        prop = seed(seed_value)(prop)
    start = time.perf_counter()
    try:
        prop()
    except Exception as exc:  # noqa: BLE001 - a counterexample (or a crash) is the result being reported
        return Outcome(name, examples, False, time.perf_counter() - start, f"{type(exc).__name__}: {str(exc)[:500]}")
    return Outcome(name, examples, True, time.perf_counter() - start)


# --------------------------------------------------------------------------- storage through a kernel

storage_calls = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(STORAGE_OPS[:-2])},
        optional={
            "path": st.one_of(path_texts, st.sampled_from(["notes.txt", "diary.txt", "a/b.txt", ".aios/memory/x"])),
            "owner": st.sampled_from(["victim", "fuzzer", "victim/x", "fuzzer/sub", "nobody"]),
            "data": st.one_of(hostile_text, st.binary(max_size=40)),
            "version": st.integers(min_value=1, max_value=4),
            "other_version": st.integers(min_value=1, max_value=4),
            "query": hostile_text,
        },
    ),
    min_size=1,
    max_size=6,
)


def fuzz_storage(examples: int, data_dir: Path, *, seed_value: int | None = None) -> Outcome:
    """Storage syscalls by agent 'fuzzer' through an embedded kernel; see the module docstring for what must hold."""
    from aios_core.config import load_config
    from aios_core.cores.sim import SimCore
    from aios_core.kernel import Kernel

    config = load_config(
        data_dir=data_dir,
        entry_point_plugins=True,
        managers={"embeddings": {"kind": "hashing", "dim": 32}, "storage": {"synchronous": "OFF"}},
    )
    with Kernel(config, cores=[SimCore(t0=0.0001, a=0.0, b=0.0)]) as kernel:
        kernel.register_agent("victim")
        kernel.register_agent("fuzzer")
        kernel.call({"kind": "storage", "agent": "victim", "op": "write", "path": "diary.txt", "data": "the victim's"})

        def listing(agent: str) -> list[tuple[str, int]]:
            return [(f.path, f.version) for f in kernel.call({"kind": "storage", "agent": agent, "op": "list"})]

        def run(calls: list[dict[str, Any]]) -> None:
            victim_before = listing("victim")
            for call in calls:
                before = listing("fuzzer")
                try:
                    kernel.call({"kind": "storage", "agent": "fuzzer", **call})
                except AIOSError as exc:
                    assert exc.message, f"{type(exc).__name__} without a message for {call!r}"
                    assert listing("fuzzer") == before, f"a refused call changed the store: {call!r}"
                assert listing("victim") == victim_before, f"another agent's files changed: {call!r}"
            assert kernel.call({"kind": "storage", "agent": "victim", "op": "read", "path": "diary.txt"}).data == "the victim's"

        return _search("storage", examples, storage_calls, run, seed_value)


# --------------------------------------------------------------------------- the HTTP API (schemathesis)


def fuzz_api(examples: int, data_dir: Path, *, seed_value: int | None = None) -> Outcome:
    """Every operation of the server's OpenAPI schema, fuzzed with an agent token: never a 5xx."""
    import schemathesis

    from aios_core.config import load_config
    from aios_core.cores.sim import SimCore
    from aios_core.kernel import Kernel
    from aios_core.server.app import BackgroundServer
    from aios_core.server.settings import ServerSettings

    config = load_config(data_dir=data_dir, entry_point_plugins=True, managers={"embeddings": {"kind": "hashing", "dim": 32}})
    kernel = Kernel(config, cores=[SimCore(t0=0.0001, a=0.0, b=0.0)])
    settings_ = ServerSettings(grace_seconds=1.0, rate_per_agent=0, max_concurrent_per_agent=0)
    with BackgroundServer(kernel, settings=settings_) as server:
        import httpx

        admin = {"Authorization": f"Bearer {server.admin_token}"}
        token = httpx.post(f"{server.url}/v1/agents", json={"name": "fuzzer"}, headers=admin).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=auth)
        operations = [result.ok() for result in schema.get_all_operations()]
        per_operation = max(1, examples // max(1, len(operations)))
        start = time.perf_counter()
        tried = 0
        for operation in operations:

            def check(case: Any, label: str = operation.label) -> None:
                response = case.call(base_url=server.url, headers=auth, timeout=30)
                assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"

            outcome = _search(f"api {operation.label}", per_operation, operation.as_strategy(), check, seed_value)
            tried += per_operation
            if not outcome.ok:
                return Outcome("api", tried, False, time.perf_counter() - start, outcome.failure)
        return Outcome("api", tried, True, time.perf_counter() - start)


# --------------------------------------------------------------------------- command


def main(argv: list[str] | None = None) -> int:
    """Fuzz the syscall parser, wire decoder, storage paths, storage syscalls and the HTTP API (hypothesis, schemathesis)."""
    parser = argparse.ArgumentParser(prog="aios bench fuzz", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000, help="examples per pure property (default 2000)")
    parser.add_argument("--storage-examples", type=int, default=300, help="generated storage sessions (default 300)")
    parser.add_argument("--api-examples", type=int, default=200, help="API requests in all (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="reproduce a run")
    parser.add_argument("--out", type=Path, default=None, help="write the outcomes as JSON here")
    args = parser.parse_args(argv)
    outcomes = [run_property(name, args.examples, seed_value=args.seed) for name in PROPERTIES]
    with tempfile.TemporaryDirectory(prefix="aios-fuzz-") as tmp:
        outcomes.append(fuzz_storage(args.storage_examples, Path(tmp) / "storage", seed_value=args.seed))
        outcomes.append(fuzz_api(args.api_examples, Path(tmp) / "api", seed_value=args.seed))
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="aios bench fuzz")
    for column in ("property", "examples", "holds", "seconds", "first failure"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        table.add_row(o.name, str(o.examples), "yes" if o.ok else "[red]NO[/red]", f"{o.seconds:.1f}", escape(o.failure or ""))
    Console().print(table)
    if args.out is not None:
        args.out.write_text(json.dumps({"seed": args.seed, "outcomes": [asdict(o) for o in outcomes]}, indent=2))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["PROPERTIES", "Outcome", "check_parser", "check_path", "check_wire", "fuzz_api", "fuzz_storage", "main", "run_property"]
