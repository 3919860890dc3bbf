"""The plugin host calls hooks in the order pluggy documents, runs ``wrapper=True`` around the rest, and contains failures.

Each test registers throwaway plugins on a host and calls a hook twice: through
the host (contained) and through pluggy's own hook caller (``host.pm.hook``),
and asserts the same call order and the same result. pluggy's documented
order: ``wrapper=True`` implementations run around all others (a ``tryfirst``
wrapper outermost); among the rest ``tryfirst`` first, ``trylast`` last, and a
later-registered plugin before an earlier one; a ``firstresult`` hook stops at
the first non-None answer.

Mutations these catch (each fails on the host that walked ``get_hookimpls()``
front to back and called every ``impl.function`` as a plain function):
``tryfirst`` running last, earlier-registered before later, a wrapper called as
a plain function (its code never runs, the result is a generator), a
firstresult hook answered by the wrong plugin, a wrapper's changed result ignored.
"""

from __future__ import annotations

from typing import Any

import pytest

from aios_core.hookspecs import hookimpl
from aios_core.plugins import PluginHost
from aios_core.scheduler.fifo import FifoScheduler


def bare_host() -> PluginHost:
    """A host with no plugins at all, so that only the test's plugins take part."""
    return PluginHost(builtins=False, entry_point_plugins=False)


def observer(log: list[str], label: str, **opts: Any) -> object:
    class Observer:
        @hookimpl(**opts)
        def aios_syscall_finished(self, syscall, error):
            log.append(label)

    return Observer()


def observing_wrapper(log: list[str], label: str, **opts: Any) -> object:
    class Wrapper:
        @hookimpl(wrapper=True, **opts)
        def aios_syscall_finished(self, syscall, error):
            log.append(f"{label}:in")
            result = yield
            log.append(f"{label}:out")
            return result

    return Wrapper()


def register_all(host: PluginHost, plugins: dict[str, object]) -> None:
    for name, plugin in plugins.items():
        assert host.register(plugin, name=name) == name, host.errors


def test_observers_run_in_pluggys_order_with_wrappers_around_them():
    # catches: tryfirst/trylast ignored, registration order not reversed, wrappers called as plain functions
    log: list[str] = []
    host = bare_host()
    register_all(host, {
        "early": observer(log, "early"),
        "eager": observer(log, "eager", tryfirst=True),
        "around": observing_wrapper(log, "around"),
        "late": observer(log, "late"),
        "lazy": observer(log, "lazy", trylast=True),
        "around-first": observing_wrapper(log, "around-first", tryfirst=True),
    })
    expected = ["around-first:in", "around:in", "eager", "late", "early", "lazy", "around:out", "around-first:out"]

    host.notify("aios_syscall_finished", syscall="sc", error=None)
    assert log == expected
    assert host.errors == []

    log.clear()
    host.pm.hook.aios_syscall_finished(syscall="sc", error=None)
    assert log == expected, "the expectation above is pluggy's own order"


def confirmer(log: list[str], label: str, answer: bool | None, **opts: Any) -> object:
    class Confirmer:
        @hookimpl(**opts)
        def aios_confirm_action(self, agent, action, detail):
            log.append(label)
            return answer

    return Confirmer()


def test_a_firstresult_hook_is_answered_by_the_first_plugin_in_pluggys_order():
    # catches: the earliest-registered plugin answering (old host: "deny" won, and "undecided" ran after it)
    log: list[str] = []
    host = bare_host()
    register_all(host, {
        "deny": confirmer(log, "deny", False),
        "allow": confirmer(log, "allow", True),
        "undecided": confirmer(log, "undecided", None, tryfirst=True),
    })
    assert host.first_answer("aios_confirm_action", agent="a", action="tool", detail={}) is True
    assert log == ["undecided", "allow"], "pluggy stops at the first non-None answer"
    log.clear()
    assert host.pm.hook.aios_confirm_action(agent="a", action="tool", detail={}) is True
    assert log == ["undecided", "allow"]
    assert host.call("aios_confirm_action", agent="a", action="tool", detail={}) is True, "call() knows the hook is firstresult"


def test_a_wrapper_sees_and_may_replace_the_result():
    # catches: a wrapper's returned value ignored (old host: the wrapper was a plain function returning a generator)
    seen: list[Any] = []
    host = bare_host()

    class DenyByDefault:
        @hookimpl(wrapper=True)
        def aios_confirm_action(self, agent, action, detail):
            answer = yield
            seen.append(answer)
            return False if answer is None else answer

    register_all(host, {"undecided": confirmer([], "undecided", None), "deny-by-default": DenyByDefault()})
    assert host.first_answer("aios_confirm_action", agent="a", action="x", detail={}) is False
    assert host.pm.hook.aios_confirm_action(agent="a", action="x", detail={}) is False
    assert seen == [None, None]


def test_failures_are_contained_and_the_others_keep_pluggys_order():
    # catches: containment lost (pluggy alone stops at the first exception), or order changed around a failure
    log: list[str] = []
    host = bare_host()

    class Broken:
        @hookimpl
        def aios_syscall_finished(self, syscall, error):
            log.append("broken")
            raise RuntimeError("metrics backend down")

    class BrokenBeforeYield:
        @hookimpl(wrapper=True)
        def aios_syscall_finished(self, syscall, error):
            raise ValueError("wrapper setup failed")
            yield  # pragma: no cover - makes this a generator function, as pluggy requires of wrappers

    class BrokenAfterYield:
        @hookimpl(wrapper=True)
        def aios_syscall_finished(self, syscall, error):
            result = yield
            raise KeyError(f"lost {result}")

    class YieldsTwice:
        @hookimpl(wrapper=True)
        def aios_syscall_finished(self, syscall, error):
            yield
            yield

    register_all(host, {
        "early": observer(log, "early"),
        "broken": Broken(),
        "late": observer(log, "late"),
        "eager": observer(log, "eager", tryfirst=True),
        "around": observing_wrapper(log, "around"),
        "broken-before-yield": BrokenBeforeYield(),
        "broken-after-yield": BrokenAfterYield(),
        "yields-twice": YieldsTwice(),
    })
    host.notify("aios_syscall_finished", syscall="sc", error=None)
    assert log == ["around:in", "eager", "late", "broken", "early", "around:out"]
    failures = {e.plugin: e.message for e in host.errors}
    assert set(failures) == {"broken", "broken-before-yield", "broken-after-yield", "yields-twice"}
    assert "raised in aios_syscall_finished: RuntimeError('metrics backend down')" in failures["broken"]
    assert "ValueError('wrapper setup failed')" in failures["broken-before-yield"]
    assert "after its yield" in failures["broken-after-yield"]
    assert "yielded more than once" in failures["yields-twice"]
    with pytest.raises((RuntimeError, ValueError)):
        host.pm.hook.aios_syscall_finished(syscall="sc", error=None)  # what the host protects the kernel from


def test_a_registration_wrapper_can_replace_a_builtin_component():
    # catches: wrappers of registration hooks not run (old host: "must return a list ..., got <generator>")
    class QuietFifo(FifoScheduler):
        name = "fifo"

    class ReplaceFifo:
        @hookimpl(wrapper=True)
        def aios_register_schedulers(self):
            contributions = yield
            kept = [[s for s in schedulers if s.name != "fifo"] for schedulers in contributions]
            return [*kept, [QuietFifo]]

    host = PluginHost(entry_point_plugins=False)
    assert host.get("schedulers", "fifo") is not QuietFifo
    register_all(host, {"replace-fifo": ReplaceFifo()})
    assert host.get("schedulers", "fifo") is QuietFifo
    assert host.registries["schedulers"]["fifo"].plugin == "replace-fifo", "what a wrapper adds is attributed to it"
    assert "plas" in host.names("schedulers"), "the rest of the built-ins' contribution stays"
    assert host.errors == []


def test_a_builtin_keeps_a_clashing_name_whatever_the_call_order():
    # catches: clash resolution following call order (a later, or tryfirst, plugin silently replacing a built-in)
    class Impostor(FifoScheduler):
        name = "fifo"

    class Eager:
        @hookimpl(tryfirst=True)
        def aios_register_schedulers(self):
            return [Impostor]

    host = PluginHost(entry_point_plugins=False)
    register_all(host, {"eager": Eager()})
    assert host.get("schedulers", "fifo") is not Impostor
    [message] = [e.message for e in host.errors if e.plugin == "eager"]
    assert "already registered by aios.plugins.schedulers (builtin)" in message


def test_old_style_hookwrappers_are_refused_with_the_fix_named():
    # catches: an old-style hookwrapper registered and then run as a plain function (its code never runs)
    class OldStyle:
        @hookimpl(hookwrapper=True)
        def aios_syscall_finished(self, syscall, error):
            yield

    host = bare_host()
    assert host.register(OldStyle(), name="old-style") is None
    [error] = host.errors
    assert "hookwrapper=True" in error.message and "@hookimpl(wrapper=True)" in error.message
    assert "old-style" not in host.plugins and host.pm.get_plugin("old-style") is None


def test_a_wrapper_that_is_not_a_generator_is_refused_at_registration():
    # catches: a non-generator wrapper accepted and failing at every call instead of once, clearly, at registration
    class NotAGenerator:
        @hookimpl(wrapper=True)
        def aios_syscall_finished(self, syscall, error):
            return None

    host = bare_host()
    assert host.register(NotAGenerator(), name="flat") is None
    [error] = host.errors
    assert "could not be registered" in error.message and "generator function" in error.message
