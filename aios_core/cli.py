"""The ``aios`` command.

    aios run                 several agents share the embedded model through the kernel (the main job)
    aios serve               run the kernel as an HTTP service (syscalls + OpenAI-compatible API)
    aios ps | aios top       agents and their state; a live view of queues, cores and snapshots
    aios plugins             what is loaded, from where, and what failed
    aios audit               the access manager's audit log
    aios bench <study>       benchmarks: schedulers, overhead, cores, managers, humaneval, ...
    aios config              the effective configuration (file + environment + defaults)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape

from aios_core import bridge
from aios_core.errors import AIOSError

console = Console()

#: the entry-point group benchmarks register under: name -> callable main(argv) -> exit status
BENCH_GROUP = "aios.bench"


def _confirm_hook(args: argparse.Namespace, config: Any) -> Any:
    """Ask at the terminal before irreversible actions, when there is a terminal (and --no-confirm was not given)."""
    if getattr(args, "no_confirm", False):
        return None
    from aios_core.managers import managers_config
    from aios_core.terminal_confirm import terminal_confirm_if_interactive

    timeout = managers_config(config.managers).access.confirm_timeout
    # answer before the access manager's own deadline, so the refusal is reported at the terminal too
    return terminal_confirm_if_interactive(timeout=max(1.0, timeout - 1.0))


def _kernel_from_args(args: argparse.Namespace) -> Any:
    from aios_core.config import load_config
    from aios_core.kernel import Kernel

    overrides: dict[str, Any] = {}
    if getattr(args, "scheduler", None):
        overrides["scheduler"] = args.scheduler
    if getattr(args, "core", None):
        overrides["cores"] = [{"kind": args.core}]
    if getattr(args, "model_path", None):
        overrides["cores"] = [{"kind": "llamacpp", "model_path": args.model_path}]
    config = load_config(getattr(args, "config", None), **overrides)
    return Kernel(config, confirm=_confirm_hook(args, config))


def cmd_run(args: argparse.Namespace) -> int:
    from aios_core.run_job import render, run_job

    kernel = _kernel_from_args(args)
    with console.status("starting the kernel (loading the model)..."):
        kernel.start()
    try:
        with console.status(f"running {args.agents} agents through the kernel..."):
            # the job's agents run on the kernel's own loop: no thread hop per syscall
            result = bridge.run_sync(kernel.loop, run_job(kernel, agents=args.agents, max_tokens=args.max_tokens))
    finally:
        kernel.stop()
    # piped or logged output would wrap at rich's default of 80 columns
    Console(width=console.width if console.is_terminal else 140).print(render(result))
    return 1 if result["failed"] else 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from rich.table import Table

    from aios_core.config import load_config
    from aios_core.plugins import PluginHost

    config = load_config(getattr(args, "config", None))
    host = PluginHost(entry_point_plugins=config.entry_point_plugins, disabled=set(config.disabled_plugins))
    report = host.report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table(title="AIOS plugins")
    table.add_column("plugin")
    table.add_column("origin")
    table.add_column("contributes", overflow="fold")
    for p in report["plugins"]:
        contributes = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in p["contributes"].items()) or "-"
        table.add_row(p["name"], p["origin"], contributes)
    console.print(table)
    for e in report["errors"]:
        console.print(f"[red]plugin error[/red] {e['plugin']}: {e['message']}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from aios_core.config import load_config
    from aios_core.managers import managers_config
    from aios_core.managers.tools import isolation_status

    config = load_config(getattr(args, "config", None))
    print(config.model_dump_json(indent=2))
    # which confinement code tools get here, and whether it can run (stderr: stdout stays the JSON)
    print(isolation_status(managers_config(config.managers).tools), file=sys.stderr)
    return 0


def bench_studies() -> dict[str, Any]:
    """The installed benchmarks, found through their entry points (the CLI names none of them)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in sorted(entry_points(group=BENCH_GROUP), key=lambda ep: ep.name)}


def _summary(obj: Any) -> str:
    """The first line of a study's docstring (its module's when the callable has none)."""
    import inspect

    doc = inspect.getdoc(obj) or inspect.getdoc(sys.modules.get(getattr(obj, "__module__", ""), None)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def print_bench_help(studies: dict[str, Any]) -> None:
    # plain print: a study's line must not be wrapped at the terminal's width
    print("usage: aios bench <study> [options]   (aios bench <study> --help shows the study's options)\n")
    width = max((len(name) for name in studies), default=0)
    for name, ep in studies.items():
        try:
            line = _summary(ep.load())
        except Exception as exc:  # noqa: BLE001 - a study whose extra is not installed is still listed
            line = f"(not available: {exc})"
        print(f"  {name:<{width}}  {line}")
    print("\nexample: aios bench schedulers --agents 240 --seed 0")


def cmd_bench(rest: list[str]) -> int:
    studies = bench_studies()
    if not rest or rest[0] in ("-h", "--help"):
        print_bench_help(studies)
        return 0 if studies else 2
    study, argv = rest[0], rest[1:]
    ep = studies.get(study)
    if ep is None:
        console.print(f"[red]unknown study {study!r}[/red]; choose one of: {', '.join(studies) or 'none installed'}")
        return 2
    try:
        run = ep.load()
    except ModuleNotFoundError as exc:
        console.print(f"[red]the {study} benchmark is not available in this installation ({exc})[/red]")
        return 2
    try:
        return int(run(argv) or 0)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)


def cmd_serve(args: argparse.Namespace) -> int:
    from aios_core.config import load_config
    from aios_core.kernel import Kernel
    from aios_core.server.app import serve

    config = load_config(args.config)
    if args.check:
        Kernel(config).check()
        console.print(f"configuration ok: cores {', '.join(c.name for c in config.cores) or '(the default)'}, scheduler {config.scheduler}")
        return 0
    serve(config, host=args.host, port=args.port, kernel=Kernel(config, confirm=_confirm_hook(args, config)))
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    from aios_core.server.top import ps

    ps(args.url, args.token)
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from aios_core.server.top import run_top

    run_top(args.url, args.token)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from rich.table import Table

    from aios_core.config import load_config
    from aios_core.managers.audit import printable, read_audit, verify_audit

    config = load_config(getattr(args, "config", None))
    from aios_core.managers import audit_file, managers_config

    path = audit_file(managers_config(config.managers), config.data_dir)
    if args.verify:
        report = verify_audit(path)
        if args.json:
            print(json.dumps(report.as_dict(), indent=2))
        elif report.ok:
            unchained = f" ({report.unchained} older records written before chaining are not covered)" if report.unchained else ""
            console.print(f"audit log {escape(str(path))}: {report.records} records, chain intact{unchained}; head {report.head}")
        else:
            console.print(f"[red]audit log {escape(str(path))}: chain broken at record {report.broken_at}:[/red] {escape(printable(report.problem or ''))}")
        return 0 if report.ok else 1
    entries = read_audit(path, agent=args.agent, limit=args.limit, decision=args.decision)
    if args.json:
        # ensure_ascii: control and bidi characters an agent put in a resource reach the terminal as \u escapes
        print(json.dumps([e.as_dict() for e in entries], indent=2, default=str, ensure_ascii=True))
        return 0
    table = Table(title=f"AIOS audit log ({escape(printable(str(path)))})")
    columns = ["id", "time", "agent", "group", "action", "resource", "decision", "reason"]
    for c in columns:
        table.add_column(c, overflow="fold")
    for e in entries:
        row = e.as_dict()
        row["time"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["time"]))
        if row["irreversible"]:
            row["action"] += " (irreversible)"
        style = "red" if row["decision"] == "deny" else None
        # every cell escaped twice over: rich markup, and characters that would drive the terminal
        table.add_row(*[escape(printable(str(row[c]))) for c in columns], style=style)
    if not entries:
        console.print(f"no audit records in {path}" + (" (no such file yet: no kernel has run with this data dir)" if not path.exists() else ""))
        return 0
    Console(width=console.width if console.is_terminal else 160).print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aios",
        description="AIOS: an operating system for LLM agents. Agents of any framework share models, tools, "
        "memory and storage through one kernel that schedules, isolates and meters them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with `aios run` (agents sharing the embedded local model), then `aios serve` to share the "
        "kernel across processes. Configuration: ./aios.toml, --config FILE, or AIOS_* variables (see `aios config`).\n\n"
        "examples:\n  aios run\n  aios bench --help\n  aios serve --port 8765",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run several agents on the embedded model through the kernel and report",
        description="Several agents answer short questions at once on one shared model; the table shows each answer "
        "and where its time went (queued vs. generating), then batching, prefix-cache hits and scheduling totals.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  aios run\n  aios run --agents 8 --scheduler rr\n"
        "  aios run --model-path ~/models/qwen2.5-1.5b-instruct-q4_k_m.gguf   # a larger GGUF answers better",
    )
    p.add_argument("--agents", type=int, default=6, help="concurrent agents (default 6)")
    p.add_argument("--max-tokens", type=int, default=24, help="at most this many tokens per answer (default 24; answers stop at their line's end)")
    p.add_argument("--scheduler", help="fifo | rr | priority | plas (default from config: plas)")
    p.add_argument("--core", help="core kind to run on instead of the configured ones, e.g. sim")
    p.add_argument("--model-path", help="a GGUF file to run on the llama.cpp core instead of the embedded Gemma 3 270M")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--no-confirm", action="store_true", help="never ask at the terminal: irreversible actions are denied")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "serve",
        help="serve the kernel over HTTP (syscalls, OpenAI-compatible /v1)",
        description="Serve the kernel over HTTP. In a terminal, irreversible actions of agents (running code, the shell, "
        "purging history) are asked about here first (y/N); without a terminal, or with --no-confirm, they are denied "
        "unless a group pre-approves them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  aios serve --port 8765\n  aios serve --config aios.toml --check\n"
        "  curl -s localhost:8765/v1/chat/completions -H 'Content-Type: application/json' "
        "-d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--no-confirm", action="store_true", help="never ask at the terminal: irreversible actions are denied")
    p.add_argument("--check", action="store_true", help="check the configuration (cores' and scheduler's options) without loading models or serving")
    p.set_defaults(func=cmd_serve)

    for name, func, text in (("ps", cmd_ps, "list agents, programs and states of a running kernel"), ("top", cmd_top, "live view of a running kernel")):
        p = sub.add_parser(
            name, help=text, formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=f"example:\n  aios {name} --url http://127.0.0.1:8765   (with `aios serve` running)",
        )
        p.add_argument("--url", default=None, help="kernel URL (default $AIOS_URL or http://127.0.0.1:8765)")
        p.add_argument("--token", default=None, help="admin token (default $AIOS_TOKEN or the token file in the data dir)")
        p.set_defaults(func=func)

    p = sub.add_parser(
        "plugins", help="list loaded plugins, where they come from and what failed",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="examples:\n  aios plugins\n  aios plugins --json",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--config", help="TOML configuration file")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser(
        "audit", help="show the access manager's audit log",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  aios audit --decision deny\n  aios audit --agent weather_agent --limit 20 --json",
    )
    p.add_argument("--agent", help="only this agent's entries")
    p.add_argument("--decision", choices=["allow", "deny"], help="only allowed or only denied actions")
    p.add_argument("--limit", type=int, default=50, help="the newest N records (default 50)")
    p.add_argument("--verify", action="store_true", help="check the hash chain; report the first broken link (exit 1 if broken)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--config", help="TOML configuration file")
    p.set_defaults(func=cmd_audit)

    sub.add_parser("bench", help="run a benchmark study (aios bench --help lists them)", add_help=False)

    p = sub.add_parser(
        "config", help="print the effective configuration",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  aios config\n  AIOS_SCHEDULER=rr aios config --config ./aios.toml",
    )
    p.add_argument("--config", help="TOML configuration file")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # each study owns its options (and its --help): everything after `bench` is the study's
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return cmd_bench(argv[1:])
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)], format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 0
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(args.func(args))
    except AIOSError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
