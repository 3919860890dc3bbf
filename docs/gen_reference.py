"""Reference pages generated from the code, so they cannot drift from it.

* ``reference/configuration.md``: every key of :class:`aios_core.config.KernelConfig`,
  the ``[[cores]]`` options of each built-in core kind, each scheduler's options and
  every ``[managers.*]`` table, from the pydantic models' fields and descriptions
  and the constructors' signatures.
* ``reference/hooks.md``: every hook of :mod:`aios_core.hookspecs`, from its
  signature and docstring (when it is called, arguments, return, example).

Used as an MkDocs hook (``hooks: [docs/gen_reference.py]`` in mkdocs.yml): the
pages are added to the build in memory, never written to ``docs/``. Run it as a
script to print them: ``python docs/gen_reference.py hooks|configuration``.
"""

from __future__ import annotations

import ast
import enum
import importlib
import inspect
import json
import logging
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

#: under "mkdocs.", so that `mkdocs build --strict` counts these warnings
log = logging.getLogger("mkdocs.hooks.gen_reference")

GENERATED = {
    "reference/configuration.md": "configuration_reference",
    "reference/hooks.md": "hooks_reference",
}

# --------------------------------------------------------------------------- rendering helpers


def type_name(annotation: Any) -> str:
    """A short, readable spelling of a type annotation: ``list[str] | None``, ``int``."""
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, str):
        return annotation
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) if isinstance(a, str) else repr(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    if inspect.isclass(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def render_value(value: Any) -> str:
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return f"`{'~' + text[len(home) :] if text.startswith(home) else text}` (platform user data dir)"
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{json.dumps(to_jsonable_python(value, exclude_none=True), default=str)}`"


def field_default(field: FieldInfo) -> str:
    if field.default is not PydanticUndefined:
        return render_value(field.default)
    if field.default_factory is not None:
        try:
            return render_value(field.default_factory())  # type: ignore[call-arg]
        except Exception:
            return "(computed)"
    return "**required**"


def constraints(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for attr, symbol in (
            ("gt", ">"),
            ("ge", ">="),
            ("lt", "<"),
            ("le", "<="),
            ("min_length", "min length"),
            ("max_length", "max length"),
        ):
            bound = getattr(item, attr, None)
            if bound is not None:
                parts.append(f"{symbol} {bound}")
    return f" ({', '.join(parts)})" if parts else ""


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def model_table(model: type[BaseModel], *, env_prefix: str | None = None, key_prefix: str = "") -> str:
    """A markdown table of a pydantic model's fields: key, type, default, description (and env variable)."""
    header = "| key | type | default | description |"
    rule = "|---|---|---|---|"
    if env_prefix is not None:
        header = "| key | type | default | environment | description |"
        rule = "|---|---|---|---|---|"
    rows = [header, rule]
    for name, field in model.model_fields.items():
        columns = [
            f"`{key_prefix}{name}`",
            f"`{cell(type_name(field.annotation))}`{cell(constraints(field))}",
            cell(field_default(field)),
        ]
        if env_prefix is not None:
            columns.append(f"`{env_prefix}{name.upper()}`")
        columns.append(cell(field.description or ""))
        rows.append("| " + " | ".join(columns) + " |")
    return "\n".join(rows)


def docstring_markdown(doc: str) -> str:
    """A constructor's docstring as markdown: ``literals`` become code, a Google ``Args:`` section a list."""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    in_args = False
    for line in lines:
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args and line.startswith((" ", "\t")) and ":" in line:
            name, _, text = line.strip().partition(":")
            out.append(f"- `{name.strip()}`: {text.strip()}")
            continue
        if in_args and line.startswith((" ", "\t")) and out:
            out[-1] += " " + line.strip()
            continue
        in_args = False
        out.append(line.strip() if not line.lstrip().startswith("- ") else line.lstrip())
    return _LITERAL.sub(r"`\1`", "\n".join(out))


def parameters_table(params: list[inspect.Parameter], descriptions: dict[str, str] | None = None) -> str:
    rows = ["| option | type | default |", "|---|---|---|"]
    for p in params:
        default = "**required**" if p.default is inspect.Parameter.empty else render_value(p.default)
        annotation = "" if p.annotation is inspect.Parameter.empty else f"`{cell(type_name(p.annotation))}`"
        rows.append(f"| `{p.name}` | {annotation} | {cell(default)} |")
    return "\n".join(rows)


def keyword_options(func: Callable[..., Any], skip: tuple[str, ...] = ("self",)) -> list[inspect.Parameter]:
    try:
        signature = inspect.signature(func, eval_str=True)
    except (NameError, TypeError):
        signature = inspect.signature(func)
    return [
        p
        for p in signature.parameters.values()
        if p.name not in skip and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    ]


def factory_target(create: Callable[..., Any]) -> Callable[..., Any]:
    """What a core factory really builds.

    Built-in factories import their engine lazily (``from m import C; return C(**options)``)
    so that heavy engines load only when used; read that class from the factory's source.
    A factory that declares its options itself is documented as it is.
    """
    if inspect.isclass(create) or keyword_options(create):
        return create
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(create)))
    except (OSError, TypeError, SyntaxError):
        return create
    imports = {
        alias.asname or alias.name: node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name):
            name = node.value.func.id
            if imports.get(name):
                return getattr(importlib.import_module(imports[name]), name)  # type: ignore[arg-type]
    return create


# --------------------------------------------------------------------------- configuration reference


def configuration_reference() -> str:
    from aios_core.config import CoreConfig, KernelConfig
    from aios_core.managers.access import Group
    from aios_core.managers.factory import ManagersConfig
    from aios_core.plugins import PluginHost
    from aios_core.scheduler.base import Scheduler

    host = PluginHost(entry_point_plugins=False)
    for error in host.errors:  # a built-in plugin that fails would silently vanish from the reference
        log.warning("built-in plugin failure while generating the configuration reference: %s", error.message)
    out = [
        "# Configuration reference",
        "",
        "<!-- generated by docs/gen_reference.py from aios_core/config.py, the managers' config models and the built-in plugins -->",
        "",
        "One TOML file (`./aios.toml`, `--config FILE` or `$AIOS_CONFIG`) plus `AIOS_*` environment variables, "
        "validated by pydantic when the kernel is built. Precedence, highest first: keyword arguments "
        "(`Kernel(scheduler=...)`, `load_config(**overrides)`), environment variables, the file, the defaults below. "
        'Lists and tables in an environment variable are JSON (`AIOS_CORES=\'[{"kind": "sim"}]\'`); nested keys use '
        "`__` (`AIOS_MANAGERS__TOOLS__SHELL_ENABLED=true`). An invalid value fails with a `ConfigError` that names the "
        "key, for example `max_queued: Input should be greater than 0`; `aios config` prints the effective configuration.",
        "",
        "## Kernel",
        "",
        model_table(KernelConfig, env_prefix="AIOS_"),
        "",
        "## Cores: `[[cores]]`",
        "",
        "Each `[[cores]]` table builds one LLM core. `kind` selects the core factory; every other key is passed to it. "
        "Cores that serve the same `model` share one scheduler queue.",
        "",
        model_table(CoreConfig),
        "",
    ]
    for name, factory in sorted(host.all("cores").items()):
        target = factory_target(factory.create)
        out += [f'### `kind = "{name}"`', "", factory.description, ""]
        try:
            params = keyword_options(target.__init__ if inspect.isclass(target) else target)
        except (TypeError, ValueError):
            params = []
        params = [p for p in params if p.name != "name"]
        if params:
            where = f"{target.__module__}.{target.__qualname__}"
            out += [f"Options (from `{where}`):", "", parameters_table(params), ""]
            if inspect.isclass(target) and target.__init__.__doc__:
                out += [docstring_markdown(target.__init__.__doc__), ""]
        else:
            out += ["This core kind takes its options as free keywords; see its module.", ""]
    out += [
        "## Schedulers: `scheduler` and `[scheduler_options]`",
        "",
        "`scheduler` names a policy; `scheduler_options` are passed to its constructor as keywords. "
        f"Every policy accepts {', '.join(f'`{p.name}`' for p in keyword_options(Scheduler.__init__))} "
        "(the weight of a prompt token relative to a generated one in attained service, and how many "
        "programs' histories are kept).",
        "",
    ]
    out += ["Plugins add policies of their own (`aios plugins` lists what is installed); their options are in their documentation.", ""]
    for name, cls in sorted(host.all("schedulers").items()):
        own = [p for p in keyword_options(cls.__init__) if p.name not in ("prefill_weight", "max_programs")]
        out += [f'### `scheduler = "{name}"`', "", cls.description or (inspect.getdoc(cls) or "").split("\n")[0], ""]
        out += [parameters_table(own), ""] if own else ["No options of its own.", ""]
    out += [
        "## Managers: `[managers.*]`",
        "",
        "Each manager's table is validated when the kernel starts; an unknown key fails with its full path "
        "(`managers.tools.shel_enabled: Extra inputs are not permitted`).",
        "",
    ]
    for name, field in ManagersConfig.model_fields.items():
        model = field.annotation
        assert inspect.isclass(model) and issubclass(model, BaseModel)
        out += [f"### `[managers.{name}]`", ""]
        if model.__doc__ and model.__doc__ != BaseModel.__doc__:
            out += [_LITERAL.sub(r"`\1`", inspect.cleandoc(model.__doc__).split("\n\n")[0]), ""]
        out += [model_table(model), ""]
        if name == "access":
            out += [
                "#### `[managers.access.groups.<group>]`",
                "",
                "A privilege group; agents are registered into one (`default_group` otherwise). Patterns are shell globs "
                "in which `{self}` stands for the calling agent's name.",
                "",
                model_table(Group),
                "",
            ]
    try:
        from aios_core.server.settings import ServerSettings
    except ImportError:  # an installation without the HTTP service
        return "\n".join(out).rstrip() + "\n"
    out += [
        "## HTTP service: `AIOS_SERVER_*`",
        "",
        "`aios serve` reads these from the environment only (the kernel behind it reads the configuration above).",
        "",
        model_table(ServerSettings, env_prefix="AIOS_SERVER_"),
        "",
    ]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- hooks reference


_ROLE = re.compile(r":(?:class|func|meth|mod|attr):`~?([\w.]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def _inline(text: str, hooks: set[str]) -> str:
    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        short = target.rsplit(".", 1)[-1]
        if short in hooks:
            return f"[`{short}`](#{short})"
        return f"`{short}`"

    return _LITERAL.sub(r"`\1`", _ROLE.sub(role, text))


def hook_specs() -> Iterator[tuple[str, Callable[..., Any], dict[str, Any]]]:
    """Every hookspec of :mod:`aios_core.hookspecs`, in source order."""
    from aios_core import hookspecs

    for name, obj in vars(hookspecs).items():
        options = getattr(obj, f"{hookspecs.PROJECT}_spec", None)
        if name.startswith("aios_") and callable(obj) and options is not None:
            yield name, obj, options


def split_docstring(doc: str) -> tuple[str, str | None]:
    """The prose of a hook's docstring and its ``Example::`` code (dedented), if any."""
    marker = re.search(r"^Example::\s*$", doc, flags=re.M)
    if marker is None:
        return doc.strip(), None
    return doc[: marker.start()].strip(), textwrap.dedent(doc[marker.end() :]).strip("\n")


def hook_examples() -> dict[str, str]:
    """Each hook's example code, for the tests that run them."""
    return {name: split_docstring(inspect.getdoc(func) or "")[1] or "" for name, func, _ in hook_specs()}


def hooks_reference() -> str:
    specs = list(hook_specs())
    names = {name for name, _, _ in specs}
    out = [
        "# Hook reference",
        "",
        "<!-- generated by docs/gen_reference.py from the hookspecs in aios_core/hookspecs.py -->",
        "",
        "Every extension point of AIOS is one of these pluggy hooks (project name `aios`). Implement one by "
        "writing a function with the hook's name, decorated with `aios.hookimpl` (the same object as "
        "`aios_core.hookspecs.hookimpl`), in a module your distribution names in the `aios` entry-point group. "
        "Arguments are passed by name: an implementation may accept any subset of them. "
        "The [plugin guide](../plugins/guide.md) shows complete packages.",
        "",
        "| hook | kind | what it is for |",
        "|---|---|---|",
    ]
    for name, func, options in specs:
        kind = "registration" if name.startswith("aios_register_") else ("first answer wins" if options.get("firstresult") else "observer")
        summary = (inspect.getdoc(func) or "").split("\n")[0]
        out.append(f"| [`{name}`](#{name}) | {kind} | {cell(_inline(summary, names))} |")
    out.append("")
    for name, func, options in specs:
        signature = inspect.signature(func)
        params = ", ".join(str(p).replace("'", "") for p in signature.parameters.values())
        returns = signature.return_annotation
        returns = returns.strip("'\"") if isinstance(returns, str) else type_name(returns)
        prose, example = split_docstring(inspect.getdoc(func) or "")
        out += [f"## {name}", "", "```python", f"def {name}({params}) -> {returns}", "```", ""]
        if options.get("firstresult"):
            out += [
                "*First answer wins:* implementations are asked in registration order until one returns something other than `None`.",
                "",
            ]
        out += [_inline(prose, names), ""]
        if example:
            out += ["**Example**", "", "```python", example, "```", ""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- MkDocs hook


#: pages other parts of the project write into docs/ (bench/ writes its results page); listed in the
#: nav when present, so that a strict build neither warns about an omitted page nor a missing one
OPTIONAL_PAGES = {"benchmarks.md": "Benchmarks"}


def on_config(config: Any) -> Any:
    docs = Path(config["docs_dir"])
    listed = json.dumps(config["nav"])
    for page, title in OPTIONAL_PAGES.items():
        if (docs / page).is_file() and f'"{page}"' not in listed:
            config["nav"].append({title: page})
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the build (in memory)."""
    from mkdocs.structure.files import File

    for path, builder in GENERATED.items():
        content = globals()[builder]()
        existing = files.get_file_from_path(path)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, path, content=content))
    return files


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "hooks"
    print({"hooks": hooks_reference, "configuration": configuration_reference}[which]())
