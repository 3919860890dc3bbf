"""Finding, loading and calling plugins, with every failure contained and attributed.

Every plugin is found through the ``aios`` entry-point group, built-ins
included: the kernel names none of them. Those of this distribution (the
built-in schedulers, cores, tools, managers and adapters) are registered
first, so they win name clashes; then every other distribution's.

Hooks are called as pluggy documents (``tryfirst`` implementations first,
``trylast`` ones last, a later-registered plugin before an earlier one among
equals, ``firstresult`` hooks stop at the first answer, ``wrapper=True``
implementations run around all the others and may change the result), but the
host runs pluggy's call loop itself so that each implementation is contained:
one that raises costs only its own contribution, and the failure is recorded as
a :class:`PluginFailure` naming the plugin and its distribution, logged, and shown
by ``aios plugins``. Old-style ``hookwrapper=True`` implementations are refused
at registration with a message pointing to ``wrapper=True``.

One host serves the process unless a caller builds its own:
:func:`process_host` is built once from the configuration (its
``entry_point_plugins`` and ``disabled_plugins``) and shared by ``aios.patch``
and the default kernel.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy
from packaging.utils import canonicalize_name
from pydantic import ValidationError

from aios_core import hookspecs
from aios_core.components import Adapter
from aios_core.errors import UnknownComponentError
from aios_core.scheduler.base import Scheduler
from aios_core.syscalls import ToolSpec
from aios_core.tool import Tool

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "aios"

#: the distribution whose entry points are the built-ins (registered first, origin "builtin")
BUILTIN_DISTRIBUTION = "aios-python"

#: registration hooks and what they contribute
KINDS: dict[str, str] = {
    "schedulers": "aios_register_schedulers",
    "cores": "aios_register_cores",
    "tools": "aios_register_tools",
    "memory_backends": "aios_register_memory_backends",
    "storage_backends": "aios_register_storage_backends",
    "adapters": "aios_register_adapters",
}


def _has_create(item: Any) -> bool:
    return callable(getattr(item, "create", None))


#: what each kind's registration hook must return items of, checked when registries are collected,
#: so that a wrong return value is reported against the plugin instead of failing later at use
EXPECTED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "schedulers": ("a Scheduler subclass", lambda item: inspect.isclass(item) and issubclass(item, Scheduler)),
    "cores": ("a CoreFactory (an object with a create callable)", _has_create),
    "tools": ("an aios_core.tool.Tool", lambda item: isinstance(item, Tool)),
    "memory_backends": ("a BackendFactory (an object with a create callable)", _has_create),
    "storage_backends": ("a BackendFactory (an object with a create callable)", _has_create),
    "adapters": ("an Adapter (with patch and unpatch)", lambda item: isinstance(item, Adapter) or (callable(getattr(item, "patch", None)) and callable(getattr(item, "unpatch", None)))),
}


def _problem(kind: str, item: Any) -> str | None:
    """Why ``item`` cannot be registered as one of ``kind``, or None."""
    what, valid = EXPECTED[kind]
    if not valid(item):
        return f"is not {what}"
    if kind == "tools":
        try:
            ToolSpec(name=item.name, description=item.description, parameters=item.parameters)
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors(include_url=False))
            return f"has an invalid name or parameter schema ({reasons})"
    return None


@dataclass(frozen=True)
class PluginFailure:
    """A contained plugin failure: a plugin that failed to import, registered a duplicate name or raised in a hook.

    A record, not an exception: the host never raises it (a failing plugin costs only its own contribution);
    ``aios plugins``, the dashboard and ``UnknownComponentError``'s hint show these.
    """

    plugin: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PluginInfo:
    name: str
    origin: str  # "builtin", "entry point <dist> <version>", or "registered at runtime"
    module: str
    contributes: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Registered:
    component: Any
    plugin: str


def _is_builtin(ep: EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and canonicalize_name(dist.name) == BUILTIN_DISTRIBUTION


def _entry_points() -> tuple[list[EntryPoint], list[EntryPoint]]:
    """The group's entry points split into (built-in, third-party), each in installation order."""
    eps = list(entry_points(group=ENTRY_POINT_GROUP))
    return [ep for ep in eps if _is_builtin(ep)], [ep for ep in eps if not _is_builtin(ep)]


def _origin_of(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"entry point {dist.name} {dist.version}" if dist is not None else "entry point"


class PluginHost:
    """The kernel's plugin manager: hookspecs, loading, registries per kind, contained calls."""

    def __init__(self, *, builtins: bool = True, entry_point_plugins: bool = True, disabled: set[str] | frozenset[str] = frozenset()) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.errors: list[PluginFailure] = []
        self.disabled = set(disabled)
        self._registries: dict[str, dict[str, Registered]] | None = None
        builtin, third_party = _entry_points()
        if not builtins:
            builtin = []
        elif not builtin:
            self._fail(
                BUILTIN_DISTRIBUTION,
                f"no built-in plugins found: the {BUILTIN_DISTRIBUTION} distribution is not installed "
                "(pip install -e . in a checkout), so no scheduler, core, tool or adapter is registered",
            )
        self._load_entry_points(builtin, origin=lambda ep: "builtin")
        if entry_point_plugins:
            self._load_entry_points(third_party, origin=_origin_of)

    # ------------------------------------------------------------------ loading

    def _load_entry_points(self, eps: list[EntryPoint], *, origin: Callable[[EntryPoint], str]) -> None:
        for ep in eps:
            if ep.name in self.disabled:
                continue
            where = origin(ep)
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, not ours
                self._fail(ep.name, f"plugin {ep.name} ({where}) failed to import: {exc!r}", origin=where)
                continue
            self.register(obj, name=ep.name, origin=where)

    def register(self, obj: Any, *, name: str | None = None, origin: str = "registered at runtime") -> str | None:
        """Register a plugin object or module; returns its name, or None if it was refused."""
        name = name or getattr(obj, "__name__", None) or type(obj).__name__
        if name in self.plugins:
            self._fail(name, f"a plugin named {name!r} is already registered ({self.plugins[name].origin}); {origin} ignored", origin=origin)
            return None
        old_style = self._old_style_wrappers(obj)
        if old_style:
            self._fail(
                name,
                f"plugin {name} ({origin}) could not be registered: {', '.join(old_style)} use(s) hookwrapper=True, "
                "pluggy's old-style wrapper, which AIOS does not run; write it as @hookimpl(wrapper=True) "
                "(result = yield; return result)",
                origin=origin,
            )
            return None
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # noqa: BLE001 - e.g. a hookimpl with a misspelled hook name
            self._fail(name, f"plugin {name} ({origin}) could not be registered: {exc}", origin=origin)
            return None
        self.plugins[name] = PluginInfo(name=name, origin=origin, module=getattr(obj, "__name__", type(obj).__name__))
        self._check_hook_names(obj, name)
        self._registries = None
        return name

    def _old_style_wrappers(self, obj: Any) -> list[str]:
        """Hook implementations of ``obj`` declared ``hookwrapper=True`` (refused: see :meth:`call`)."""
        found = []
        for attr in dir(obj):
            try:
                opts = self.pm.parse_hookimpl_opts(obj, attr)
            except Exception:  # noqa: BLE001 - an attribute that cannot be inspected is not a hook implementation
                continue
            if opts and opts.get("hookwrapper"):
                found.append(attr)
        return found

    def _check_hook_names(self, obj: Any, name: str) -> None:
        """pluggy accepts implementations of hooks nobody specified; for us that is a typo worth reporting."""
        known = [n for n in dir(hookspecs) if n.startswith("aios_")]
        for attr in dir(obj):
            if not attr.startswith("aios_") or attr in known:
                continue
            if getattr(getattr(obj, attr, None), f"{hookspecs.PROJECT}_impl", None) is None:
                continue
            close = difflib.get_close_matches(attr, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; AIOS hooks are: {', '.join(known)}"
            self._fail(name, f"plugin {self.describe(name)} implements {attr}, which is not an AIOS hook, so it is never called{hint}", hook=attr)

    def describe(self, plugin: str) -> str:
        """A plugin's name and where it came from, for messages: ``stride (entry point aios-stride 0.1.0)``."""
        info = self.plugins.get(plugin)
        return f"{plugin} ({info.origin})" if info is not None else plugin

    def _fail(self, plugin: str, message: str, **details: Any) -> None:
        if any(e.message == message for e in self.errors):
            return  # registries are re-collected after a late registration; report each failure once
        log.warning("%s", message)
        if plugin in self.plugins:
            details.setdefault("origin", self.plugins[plugin].origin)
        self.errors.append(PluginFailure(plugin, message, details))

    # ------------------------------------------------------------------ registries

    def _collect(self) -> dict[str, dict[str, Registered]]:
        registries: dict[str, dict[str, Registered]] = {kind: {} for kind in KINDS}
        for info in self.plugins.values():
            info.contributes = {}
        order = {name: i for i, name in enumerate(self.plugins)}
        for kind, hook_name in KINDS.items():
            answers, owners = self._call(hook_name, {}, firstresult=False, consequence=f"its {kind} are not available")
            if not isinstance(answers, list):
                self._fail(self._wrappers_of(hook_name), f"the wrappers of {hook_name} returned {answers!r} instead of a list of lists; no {kind} are available", hook=hook_name)
                continue
            # pluggy's call order decides what wrappers see; a name belongs to the plugin registered first
            # (the built-ins), so a later plugin cannot silently take it over
            contributions = sorted(
                ((owners.get(id(items), self._wrappers_of(hook_name)), items) for items in answers),
                key=lambda pair: order.get(pair[0], len(order)),
            )
            for plugin, items in contributions:
                who = self.describe(plugin)
                if not isinstance(items, (list, tuple)):
                    self._fail(plugin, f"plugin {who}: {hook_name} must return a list of {kind}, got {items!r}; ignored", hook=hook_name)
                    continue
                for item in items:
                    item_name = getattr(item, "name", None)
                    if not isinstance(item_name, str) or not item_name:
                        self._fail(plugin, f"plugin {who} returned a {kind[:-1]} without a name from {hook_name}: {item!r}", hook=hook_name)
                        continue
                    problem = _problem(kind, item)
                    if problem is not None:
                        self._fail(plugin, f"plugin {who} returned {kind[:-1]} {item_name!r} from {hook_name}, which {problem}; ignored", hook=hook_name)
                        continue
                    taken = registries[kind].get(item_name)
                    if taken is not None:
                        self._fail(
                            plugin,
                            f"plugin {who} registers {kind[:-1]} {item_name!r}, already registered by {self.describe(taken.plugin)}; ignored",
                            hook=hook_name,
                        )
                        continue
                    registries[kind][item_name] = Registered(item, plugin)
                    if plugin in self.plugins:
                        self.plugins[plugin].contributes.setdefault(kind, []).append(item_name)
        return registries

    def _wrappers_of(self, hook_name: str) -> str:
        names = [impl.plugin_name for impl in getattr(self.pm.hook, hook_name).get_hookimpls() if impl.wrapper]
        return ", ".join(names) or hook_name

    @property
    def registries(self) -> dict[str, dict[str, Registered]]:
        if self._registries is None:
            self._registries = self._collect()
        return self._registries

    def get(self, kind: str, name: str) -> Any:
        try:
            return self.registries[kind][name].component
        except KeyError:
            known = ", ".join(sorted(self.registries.get(kind, {}))) or "none"
            failed = [e.plugin for e in self.errors]
            hint = f" (plugins that failed to load: {', '.join(failed)})" if failed else ""
            raise UnknownComponentError(f"no {kind[:-1]} named {name!r}; known: {known}{hint}", kind=kind, name=name) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.registries[kind])

    def all(self, kind: str) -> dict[str, Any]:
        return {name: reg.component for name, reg in self.registries[kind].items()}

    # ------------------------------------------------------------------ calling hooks

    def call(self, hook_name: str, **kwargs: Any) -> Any:
        """Call a hook as pluggy would (same order, wrappers, firstresult), each implementation's failure contained.

        Returns what ``pm.hook.<hook_name>(**kwargs)`` returns: the list of
        non-None answers, or for a ``firstresult`` hook the first one (None if
        none), as changed by any ``wrapper=True`` implementations.
        """
        spec = getattr(self.pm.hook, hook_name).spec
        firstresult = bool(spec is not None and spec.opts.get("firstresult"))
        return self._call(hook_name, kwargs, firstresult=firstresult)[0]

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of an observer hook; a failing one is logged and recorded, never raised."""
        self._call(hook_name, kwargs, firstresult=False)

    def first_answer(self, hook_name: str, **kwargs: Any) -> Any:
        """The first non-None answer of a firstresult hook; a plugin that raises is skipped (and recorded)."""
        return self._call(hook_name, kwargs, firstresult=True)[0]

    def _call(self, hook_name: str, kwargs: dict[str, Any], *, firstresult: bool, consequence: str = "") -> tuple[Any, dict[int, str]]:
        """pluggy's call loop (``pluggy._callers._multicall``) with every implementation contained.

        Implementations run in reverse of ``get_hookimpls()`` (that list ends
        with the wrappers and, within each group, the ``tryfirst`` ones); each
        wrapper runs to its ``yield`` on the way in and gets the result on the
        way out, innermost first. A wrapper that raises, does not yield or
        yields twice leaves the result as it found it. Besides the result,
        returns who produced each answer (``id(answer) -> plugin``), so that
        registries can attribute what they collect.
        """
        owners: dict[int, str] = {}
        keep: list[Any] = []  # answers whose id is in owners stay alive until the caller is done with them
        results: list[Any] = []
        teardowns: list[tuple[pluggy.HookImpl, Generator[None, Any, Any]]] = []
        suffix = f"; {consequence}" if consequence else ""

        def failed(impl: pluggy.HookImpl, what: str) -> None:
            self._fail(impl.plugin_name, f"plugin {self.describe(impl.plugin_name)} {what}{suffix}", hook=hook_name)

        try:
            for impl in reversed(getattr(self.pm.hook, hook_name).get_hookimpls()):
                try:
                    args = [kwargs[a] for a in impl.argnames]
                    extra = {a: kwargs[a] for a in impl.kwargnames if a in kwargs}
                    answer = impl.function(*args, **extra)
                    if impl.wrapper:
                        next(answer)  # run the wrapper up to its yield
                except StopIteration:
                    failed(impl, f"did not yield in {hook_name} (a wrapper=True implementation must yield once)")
                    continue
                except Exception as exc:  # noqa: BLE001 - a plugin's failure costs only its own contribution
                    failed(impl, f"raised in {hook_name}: {exc!r}")
                    continue
                if impl.wrapper:
                    teardowns.append((impl, answer))
                elif answer is not None:
                    results.append(answer)
                    owners[id(answer)] = impl.plugin_name
                    keep.append(answer)
                    if firstresult:
                        break
        except BaseException:
            for _, gen in teardowns:
                gen.close()
            raise
        result: Any = (results[0] if results else None) if firstresult else results
        for impl, gen in reversed(teardowns):
            try:
                gen.send(result)
            except StopIteration as stop:
                if isinstance(stop.value, list):
                    for answer in stop.value:
                        if id(answer) not in owners:
                            owners[id(answer)] = impl.plugin_name
                            keep.append(answer)
                result = stop.value
                continue
            except Exception as exc:  # noqa: BLE001
                failed(impl, f"raised in {hook_name} after its yield: {exc!r}")
                continue
            gen.close()
            failed(impl, f"yielded more than once in {hook_name} (a wrapper=True implementation must yield once)")
        return result, owners

    def _origin(self, plugin: str) -> str:
        info = self.plugins.get(plugin)
        return info.origin if info is not None else "unknown"

    def report(self) -> dict[str, Any]:
        """What ``aios plugins`` prints: each plugin with origin and contributions, and every failure."""
        self.registries  # noqa: B018 - make sure contributions are collected
        return {
            "plugins": [
                {"name": p.name, "origin": p.origin, "module": p.module, "contributes": p.contributes} for p in self.plugins.values()
            ],
            "errors": [
                {"plugin": e.plugin, "origin": e.details.get("origin") or self._origin(e.plugin), "message": e.message} for e in self.errors
            ],
        }


_process_host: PluginHost | None = None
_process_host_lock = threading.Lock()


def process_host() -> PluginHost:
    """The process's one plugin host, built on first use from the configuration and shared from then on.

    ``aios.patch`` looks adapters up here and the default kernel is built on it,
    so both honour the same ``entry_point_plugins`` and ``disabled_plugins``
    (a second host would load what the configuration disabled). A kernel built
    with its own configuration builds its own host.
    """
    global _process_host
    with _process_host_lock:
        if _process_host is None:
            from aios_core.config import load_config

            config = load_config()
            _process_host = PluginHost(entry_point_plugins=config.entry_point_plugins, disabled=set(config.disabled_plugins))
        return _process_host
