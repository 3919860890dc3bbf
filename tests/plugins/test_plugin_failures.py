"""A broken plugin is reported under its name and distribution, and the kernel runs without it.

Each test installs real distributions (dist-info + entry points) on sys.path,
then checks three things: the failure is recorded and names the plugin and its
distribution, the rest of the plugin (and every other plugin) still works, and
a kernel starts and serves syscalls.
"""

from __future__ import annotations

import pytest

from aios_core.errors import UnknownComponentError
from aios_core.plugins import PluginHost

GOOD_TOOL = """
    from aios_core.hookspecs import hookimpl
    from aios_core.tool import Tool

    def shout(text: str) -> str:
        return text.upper()

    @hookimpl
    def aios_register_tools():
        schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        return [Tool("shout", "upper-case a text", schema, shout)]
"""


def errors_of(host: PluginHost, plugin: str) -> list[str]:
    return [e["message"] for e in host.report()["errors"] if e["plugin"] == plugin]


def assert_kernel_serves(kernel) -> None:
    agent = kernel.agent("survivor")
    assert agent.chat("still alive?", max_tokens=4).content
    [result] = agent.call_tools([{"name": "calculator", "arguments": {"expression": "6*7"}}])
    assert result.ok


def test_a_plugin_that_fails_to_import_is_reported_with_its_distribution(install, kernel_with_plugins):
    install("aios-broken", {"broken": "broken_plugin"}, {"broken_plugin": "raise RuntimeError('missing API key for the weather service')"})
    install("aios-shout", {"shout": "shout_plugin"}, {"shout_plugin": GOOD_TOOL})
    kernel = kernel_with_plugins()
    [message] = errors_of(kernel.plugins, "broken")
    assert "aios-broken 1.0" in message and "failed to import" in message and "missing API key" in message
    assert "broken" not in kernel.plugins.plugins
    assert kernel.plugins.get("tools", "shout").name == "shout", "the healthy plugin still loads"
    [shouted] = kernel.agent("user").call_tools([{"name": "shout", "arguments": {"text": "hi"}}])
    assert shouted.output == "HI"
    assert_kernel_serves(kernel)


def test_an_entry_point_naming_a_missing_module_is_reported(install):
    install("aios-typo", {"typo": "no_such_module.plugin"}, {})
    host = PluginHost()
    [message] = errors_of(host, "typo")
    assert "aios-typo 1.0" in message and "No module named 'no_such_module'" in message
    assert host.report()["errors"][-1]["origin"] == "entry point aios-typo 1.0"


def test_a_duplicate_component_name_keeps_the_first_and_reports_the_second(install, kernel_with_plugins):
    install(
        "aios-copycat",
        {"copycat": "copycat_plugin"},
        {
            "copycat_plugin": """
            from aios_core.hookspecs import hookimpl
            from aios_core.scheduler.fifo import FifoScheduler

            class NotReallyFifo(FifoScheduler):
                name = "fifo"

            class Lifo(FifoScheduler):
                name = "lifo-example"

            @hookimpl
            def aios_register_schedulers():
                return [NotReallyFifo, Lifo]
            """
        },
    )
    kernel = kernel_with_plugins()
    [message] = errors_of(kernel.plugins, "copycat")
    assert "copycat (entry point aios-copycat 1.0)" in message
    assert "scheduler 'fifo', already registered by aios.plugins.schedulers (builtin); ignored" in message
    assert type(kernel.pools["sim"].scheduler).__module__ == "aios_core.scheduler.fifo", "the builtin keeps the name"
    assert kernel.plugins.get("schedulers", "lifo-example").__name__ == "Lifo", "the plugin's other contributions stay"
    assert_kernel_serves(kernel)


def test_two_distributions_claiming_one_tool_name(install):
    install("aios-shout", {"shout": "shout_plugin"}, {"shout_plugin": GOOD_TOOL})
    install("aios-shout-too", {"shout-too": "shout_too_plugin"}, {"shout_too_plugin": GOOD_TOOL})
    host = PluginHost()
    owner = host.registries["tools"]["shout"].plugin
    loser = ({"shout", "shout-too"} - {owner}).pop()
    [message] = errors_of(host, loser)
    assert f"registers tool 'shout', already registered by {owner} (entry point aios-" in message


def test_two_distributions_with_the_same_plugin_name(install):
    install("aios-first", {"twin": "twin_one"}, {"twin_one": GOOD_TOOL})
    install("aios-second", {"twin": "twin_two"}, {"twin_two": GOOD_TOOL.replace('"shout"', '"whisper"')})
    host = PluginHost()
    [message] = errors_of(host, "twin")
    assert "a plugin named 'twin' is already registered" in message
    loaded = host.plugins["twin"].origin
    assert loaded in ("entry point aios-first 1.0", "entry point aios-second 1.0")
    ignored = "aios-second" if "aios-first" in loaded else "aios-first"
    assert f"entry point {ignored} 1.0 ignored" in message


def test_a_registration_hook_that_raises_costs_only_that_contribution(install, kernel_with_plugins):
    install(
        "aios-half",
        {"half": "half_plugin"},
        {
            "half_plugin": GOOD_TOOL
            + """
    @hookimpl
    def aios_register_schedulers():
        raise KeyError("scheduler table not found")
    """
        },
    )
    kernel = kernel_with_plugins()
    [message] = errors_of(kernel.plugins, "half")
    assert "half (entry point aios-half 1.0) raised in aios_register_schedulers" in message
    assert "KeyError('scheduler table not found')" in message and "its schedulers are not available" in message
    assert "shout" in kernel.plugins.names("tools"), "its tools still load"
    assert_kernel_serves(kernel)


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("FifoScheduler", "must return a list"),
        ("[object()]", "without a name"),
        ("[Named]", "is not a Scheduler subclass"),
    ],
)
def test_a_registration_hook_returning_the_wrong_thing_is_reported(install, kernel_with_plugins, returned, expected):
    install(
        "aios-sloppy",
        {"sloppy": "sloppy_plugin"},
        {
            "sloppy_plugin": f"""
            from aios_core.hookspecs import hookimpl
            from aios_core.scheduler.fifo import FifoScheduler

            class Named:
                name = "not-a-policy"

            @hookimpl
            def aios_register_schedulers():
                return {returned}
            """
        },
    )
    kernel = kernel_with_plugins()
    [message] = errors_of(kernel.plugins, "sloppy")
    assert "sloppy (entry point aios-sloppy 1.0)" in message and expected in message
    assert "not-a-policy" not in kernel.plugins.names("schedulers")
    assert_kernel_serves(kernel)


def test_a_tool_with_an_invalid_schema_is_reported_and_its_siblings_kept(install, kernel_with_plugins):
    install(
        "aios-badschema",
        {"badschema": "badschema_plugin"},
        {
            "badschema_plugin": """
            from aios_core.hookspecs import hookimpl
            from aios_core.tool import Tool

            @hookimpl
            def aios_register_tools():
                return [
                    Tool("count", "count things", {"type": "array"}, len),
                    Tool("two words", "bad name", {"type": "object", "properties": {}}, len),
                    Tool("ok_tool", "fine", {"type": "object", "properties": {}}, lambda: "ok"),
                ]
            """
        },
    )
    kernel = kernel_with_plugins()
    messages = errors_of(kernel.plugins, "badschema")
    assert len(messages) == 2
    assert "tool 'count' from aios_register_tools, which has an invalid name or parameter schema" in messages[0]
    assert "tool 'two words'" in messages[1] and "badschema (entry point aios-badschema 1.0)" in messages[1]
    [ok] = kernel.agent("user").call_tools([{"name": "ok_tool"}])
    assert ok.output == "ok"
    assert_kernel_serves(kernel)


def test_a_hook_with_a_wrong_signature_is_refused_at_registration(install):
    install(
        "aios-wrongsig",
        {"wrongsig": "wrongsig_plugin"},
        {
            "wrongsig_plugin": """
            from aios_core.hookspecs import hookimpl

            @hookimpl
            def aios_kernel_started(kernel, extra_argument):
                pass
            """
        },
    )
    host = PluginHost()
    [message] = errors_of(host, "wrongsig")
    assert "aios-wrongsig 1.0" in message and "could not be registered" in message and "extra_argument" in message
    assert "wrongsig" not in host.plugins


def test_a_misspelled_hook_name_is_explained(install):
    install(
        "aios-misspelt",
        {"misspelt": "misspelt_plugin"},
        {"misspelt_plugin": GOOD_TOOL.replace("def aios_register_tools", "def aios_register_tool")},
    )
    host = PluginHost()
    [message] = errors_of(host, "misspelt")
    assert "misspelt (entry point aios-misspelt 1.0) implements aios_register_tool, which is not an AIOS hook" in message
    assert "did you mean aios_register_tools?" in message


def test_an_observer_hook_that_raises_never_fails_a_syscall(install, kernel_with_plugins):
    install(
        "aios-noisy",
        {"noisy": "noisy_plugin"},
        {
            "noisy_plugin": """
            from aios_core.hookspecs import hookimpl

            SEEN = []

            @hookimpl
            def aios_kernel_started(kernel):
                raise RuntimeError("metrics server unreachable")

            @hookimpl
            def aios_syscall_finished(syscall, error):
                SEEN.append(syscall.kind)
                raise RuntimeError("metrics server unreachable")
            """
        },
    )
    kernel = kernel_with_plugins()
    assert_kernel_serves(kernel)
    assert_kernel_serves(kernel)
    import noisy_plugin

    assert noisy_plugin.SEEN.count("llm") == 2 and noisy_plugin.SEEN.count("tool") == 2, "the hook kept being called"
    messages = errors_of(kernel.plugins, "noisy")
    assert len(messages) == 2, "each distinct failure is reported once, not once per syscall"
    assert any("raised in aios_kernel_started" in m for m in messages)
    assert any("noisy (entry point aios-noisy 1.0) raised in aios_syscall_finished" in m for m in messages)


def test_a_confirmation_hook_that_raises_is_skipped_and_the_next_answers(install, kernel_with_plugins):
    install(
        "aios-confirmers",
        {"a-crashing-confirmer": "crashing_confirmer", "b-approver": "approver"},
        {
            "crashing_confirmer": """
            from aios_core.hookspecs import hookimpl

            @hookimpl
            def aios_confirm_action(agent, action, detail):
                raise ConnectionError("approval service down")
            """,
            "approver": """
            from aios_core.hookspecs import hookimpl

            @hookimpl
            def aios_confirm_action(agent, action, detail):
                return detail.get("resource") == "notes_clear" or None
            """,
        },
    )
    kernel = kernel_with_plugins()
    agent = kernel.agent("careful")
    [cleared] = agent.call_tools([{"name": "notes_clear"}])
    [python] = agent.call_tools([{"name": "python", "arguments": {"code": "print(1)"}}])
    assert cleared.ok, cleared.error
    assert not python.ok and python.error_type == "access_denied", "no plugin approved it: denied by default"
    [message] = errors_of(kernel.plugins, "a-crashing-confirmer")
    assert "raised in aios_confirm_action" in message and "approval service down" in message


def test_a_scheduler_that_raises_at_runtime_falls_back_to_fifo_and_is_reported(install, kernel_with_plugins):
    install(
        "aios-flaky",
        {"flaky": "flaky_plugin"},
        {
            "flaky_plugin": """
            from aios_core.hookspecs import hookimpl
            from aios_core.scheduler.fifo import FifoScheduler

            class Flaky(FifoScheduler):
                name = "flaky"

                def pop(self, now):
                    raise ZeroDivisionError("bad priority arithmetic")

            @hookimpl
            def aios_register_schedulers():
                return [Flaky]
            """
        },
    )
    kernel = kernel_with_plugins(scheduler="flaky")
    assert_kernel_serves(kernel)
    assert kernel.pools["sim"].scheduler.name == "fifo"
    [message] = errors_of(kernel.plugins, "flaky")
    assert "scheduler 'flaky' from plugin flaky raised ZeroDivisionError('bad priority arithmetic')" in message
    [error] = [e for e in kernel.plugins.report()["errors"] if e["plugin"] == "flaky"]
    assert error["origin"] == "entry point aios-flaky 1.0"


def test_asking_for_a_component_of_a_failed_plugin_names_the_failure(install, kernel_with_plugins):
    install("aios-broken", {"broken": "broken_plugin"}, {"broken_plugin": "import a_dependency_that_is_not_installed"})
    host = PluginHost()
    with pytest.raises(UnknownComponentError) as info:
        host.get("schedulers", "deadline")
    assert "no scheduler named 'deadline'" in info.value.message
    assert "plugins that failed to load: broken" in info.value.message


def test_a_disabled_plugin_is_not_imported_at_all(install):
    install("aios-broken", {"broken": "broken_plugin"}, {"broken_plugin": "raise RuntimeError('must not be imported')"})
    host = PluginHost(disabled={"broken"})
    assert errors_of(host, "broken") == []
    assert "broken" not in host.plugins
