"""Every extension point of AIOS, as pluggy hook specifications (project name ``aios``).

A plugin is any module or object with functions decorated ``@aios.hookimpl``
named like the specs below; it is found through the ``aios`` entry-point group
of an installed distribution::

    [project.entry-points.aios]
    my_tools = "my_package.plugin"

AIOS's own schedulers, cores, tools and adapters are registered through these
same hooks (see the ``plugins/`` and ``adapters/`` packages). Registration hooks
return lists; a plugin that raises, or returns a name that is already taken,
is reported under its own name by ``aios plugins`` and the kernel carries on
without that contribution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from aios_core.components import Adapter, BackendFactory, CoreFactory
    from aios_core.scheduler.base import Scheduler
    from aios_core.tool import Tool

PROJECT = "aios"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def aios_register_schedulers() -> "list[type[Scheduler]]":
    """Scheduling policies this plugin provides.

    Called once when the plugin host starts. Return :class:`~aios_core.scheduler.base.Scheduler`
    subclasses; each class's ``name`` is what ``scheduler = "..."`` in the config selects.

    Example::

        @hookimpl
        def aios_register_schedulers():
            return [ShortestPromptFirst]
    """


@hookspec
def aios_register_cores() -> "list[CoreFactory]":
    """LLM core kinds this plugin provides.

    Return :class:`~aios_core.components.CoreFactory` objects; ``[[cores]] kind = "..."``
    in the config selects one, and the rest of that table is passed to ``create`` as keywords.

    Example::

        @hookimpl
        def aios_register_cores():
            return [CoreFactory("echo", EchoCore, "repeats the prompt")]
    """


@hookspec
def aios_register_tools() -> "list[Tool]":
    """Tools this plugin provides to agents (name, JSON schema, callable, side-effect class).

    Example::

        @hookimpl
        def aios_register_tools():
            return [Tool("add", "Add two numbers", {"type": "object", ...}, add)]
    """


@hookspec
def aios_register_memory_backends() -> "list[BackendFactory]":
    """Backends for the memory manager's long-term tier (the default is the storage manager)."""


@hookspec
def aios_register_storage_backends() -> "list[BackendFactory]":
    """Backends for the storage manager (the default is SQLite)."""


@hookspec
def aios_register_adapters() -> "list[Adapter]":
    """Framework adapters; ``aios.patch(name)`` looks them up by ``Adapter.name``."""


@hookspec
def aios_kernel_started(kernel: Any) -> None:
    """The kernel finished starting (its loop runs, cores are loaded). Observers only; errors are logged."""


@hookspec
def aios_kernel_stopping(kernel: Any) -> None:
    """The kernel is about to stop. Observers only; errors are logged."""


@hookspec
def aios_syscall_finished(syscall: Any, error: Any) -> None:
    """A syscall finished (``error`` is None on success). Runs on the kernel loop: keep it cheap."""


@hookspec(firstresult=True)
def aios_confirm_action(agent: str, action: str, detail: dict[str, Any]) -> "bool | None":
    """Confirm an irreversible action (delete, overwrite, shell, code execution, network).

    Return True to allow, False to deny, None to leave the decision to the next
    plugin. When no plugin and no API callback answers, the action is denied.
    """
