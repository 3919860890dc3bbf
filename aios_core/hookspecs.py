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

    **When:** the first time the plugin host's registries are read (at kernel start,
    by ``aios plugins``), and again whenever a plugin is registered later. Return a
    fresh list and do nothing else here: the hook may run more than once.

    **Arguments:** none.

    **Returns:** :class:`~aios_core.scheduler.base.Scheduler` subclasses (classes, not
    instances). A class's ``name`` is what ``scheduler = "..."`` in the configuration
    selects; the kernel instantiates it once per model with ``scheduler_options`` as
    keyword arguments. A name that is already taken is refused and reported; a
    policy that raises while scheduling is replaced by FIFO for that model and
    reported, and the kernel keeps serving.

    Example::

        from aios_core.hookspecs import hookimpl
        from aios_core.scheduler.base import Job, Scheduler


        class ShortestHintFirst(Scheduler):
            # the job whose caller expects the fewest output tokens runs first

            name = "shortest-hint"
            description = "shortest hinted job first (hint_tokens); never preempts"

            def __init__(self, **options):
                super().__init__(**options)
                self._waiting: list[Job] = []

            def _key(self, job: Job):
                return (job.hint_tokens if job.hint_tokens is not None else float("inf"), job.seq)

            def push(self, job, now):
                self._waiting.append(job)

            def peek(self, now):
                return min(self._waiting, key=self._key, default=None)

            def pop(self, now):
                job = self.peek(now)
                if job is not None:
                    self._waiting.remove(job)
                return job

            def remove(self, job):
                if job in self._waiting:
                    self._waiting.remove(job)
                    return True
                return False

            def __len__(self):
                return len(self._waiting)


        @hookimpl
        def aios_register_schedulers():
            return [ShortestHintFirst]
    """


@hookspec
def aios_register_cores() -> "list[CoreFactory]":
    """LLM core kinds this plugin provides.

    **When:** like every registration hook, when the registries are read (possibly
    more than once). The factories themselves run at kernel start: for each
    ``[[cores]]`` table whose ``kind`` is the factory's name, the kernel calls
    ``factory.create(name=<core name>, **options)`` with the table's other keys.
    A ``TypeError`` there (an unknown option) becomes a ``ConfigError`` naming the core.

    **Arguments:** none.

    **Returns:** :class:`~aios_core.components.CoreFactory` objects (name, create
    callable, one-line description). ``create`` returns an
    :class:`~aios_core.cores.base.LLMCore`; step-based engines subclass
    :class:`~aios_core.cores.batching.BatchingCore`, as the sim core does.

    Example::

        from aios_core.components import CoreFactory
        from aios_core.cores.sim import SimCore
        from aios_core.hookspecs import hookimpl


        def instant_sim(name: str = "instant", **options):
            # the sim core with (almost) free steps: for tests of agents, not of timing
            options.setdefault("t0", 0.0001)
            options.setdefault("a", 0.0)
            options.setdefault("b", 0.0)
            return SimCore(name=name, model=options.pop("model", "instant"), **options)


        @hookimpl
        def aios_register_cores():
            return [CoreFactory("instant-sim", instant_sim, "sim core with near-zero step cost")]
    """


@hookspec
def aios_register_tools() -> "list[Tool]":
    """Tools this plugin offers to agents.

    **When:** when the registries are read (possibly more than once). At kernel
    start the tool manager takes every tool, checks its name and JSON schema, and
    from then on validates each call's arguments against the schema before the
    tool runs.

    **Arguments:** none.

    **Returns:** :class:`~aios_core.tool.Tool` objects: name, description, JSON
    schema of the arguments, the callable, and the ``side_effect`` class
    (``none``, ``read``, ``write`` or ``irreversible``). Access control acts on it:
    an ``irreversible`` tool runs only after a confirmation (the kernel's ``confirm``
    callback or the :func:`aios_confirm_action` hook). ``timeout``,
    ``max_concurrency`` and ``sandboxed`` bound how it runs.

    Example::

        import random

        from aios_core.hookspecs import hookimpl
        from aios_core.tool import Tool


        def roll(sides: int = 6, times: int = 1) -> list[int]:
            return [random.randint(1, sides) for _ in range(times)]


        @hookimpl
        def aios_register_tools():
            return [
                Tool(
                    name="dice",
                    description="Roll dice and return the faces.",
                    parameters={
                        "type": "object",
                        "properties": {
                            "sides": {"type": "integer", "minimum": 2, "maximum": 100},
                            "times": {"type": "integer", "minimum": 1, "maximum": 20},
                        },
                        "additionalProperties": False,
                    },
                    func=roll,
                    side_effect="none",
                    timeout=2.0,
                )
            ]
    """


@hookspec
def aios_register_memory_backends() -> "list[BackendFactory]":
    """Memory managers the configuration can select with ``[managers.memory] backend = "<name>"``.

    **When:** when the registries are read; ``aios plugins`` lists them. At
    kernel start the configured backend's ``create`` is called once (the
    built-in ``lru-k`` is registered through this same hook by ``aios.plugins.managers``).
    An unknown name, or a ``create`` that raises, stops the start with a
    ConfigError naming ``managers.memory.backend``: the kernel does not silently
    keep agents' memory somewhere other than asked.

    **Arguments:** none.

    **Returns:** :class:`~aios_core.components.BackendFactory` objects (name,
    ``create(config, context)``, description). ``config`` is the validated
    ``[managers.memory]`` table (a plugin's own settings are in ``config.options``);
    ``context`` is a :class:`~aios_core.components.BackendContext` with the data
    directory, the access manager, the embedder and the storage manager to evict
    into. ``create`` returns the manager; subclassing
    :class:`~aios_core.managers.memory.MemoryManager` keeps every syscall, access
    check and audit record of the built-in one.

    Example::

        from aios_core.components import BackendFactory
        from aios_core.hookspecs import hookimpl
        from aios_core.managers.memory import MemoryManager


        def small(config, context):
            # the built-in manager, with the per-agent RAM limit a plugin option says (default 4 KiB)
            limit = int(config.options.get("per_agent_limit", 4096))
            return MemoryManager(
                config.model_copy(update={"per_agent_limit": limit}),
                storage=context.storage, access=context.access, embedder=context.embedder,
            )


        @hookimpl
        def aios_register_memory_backends():
            return [BackendFactory("small", small, "the built-in memory with a tiny RAM budget per agent")]
    """


@hookspec
def aios_register_storage_backends() -> "list[BackendFactory]":
    """Storage managers the configuration can select with ``[managers.storage] backend = "<name>"``.

    **When:** as for :func:`aios_register_memory_backends` (the built-in ``sqlite``
    backend is registered through this hook too). The memory manager evicts into
    the selected storage manager and the file tools use it.

    **Arguments:** none.

    **Returns:** :class:`~aios_core.components.BackendFactory` objects;
    ``create(config, context)`` gets the validated ``[managers.storage]`` table and
    a :class:`~aios_core.components.BackendContext` (``context.storage`` is None)
    and returns the manager. Subclass :class:`~aios_core.managers.storage.StorageManager`
    to keep its versioning, path sandboxing and access checks.

    Example::

        import tempfile

        from aios_core.components import BackendFactory
        from aios_core.hookspecs import hookimpl
        from aios_core.managers.storage import StorageManager


        def scratch(config, context):
            # the built-in SQLite storage in a throw-away directory: nothing outlives the process
            return StorageManager(config, data_dir=tempfile.mkdtemp(prefix="aios-scratch-"),
                                  access=context.access, embedder=context.embedder)


        @hookimpl
        def aios_register_storage_backends():
            return [BackendFactory("scratch", scratch, "SQLite storage in a temporary directory")]
    """


@hookspec
def aios_register_adapters() -> "list[Adapter]":
    """Framework adapters; ``aios.patch(name)`` looks them up by ``Adapter.name``.

    **When:** when the registries are read, which can happen again after a late
    plugin registration: return module-level instances, so an adapter that is
    patched is the same object that is later asked to unpatch.

    **Arguments:** none.

    **Returns:** :class:`~aios_core.components.Adapter` instances. ``patch(kernel,
    **agent_options)`` must be idempotent and ``unpatch()`` must restore the
    framework exactly (use :class:`~aios_core.patching.Patcher`); ``distribution``
    and ``supported`` name the framework's package and the versions the adapter
    was written for.

    Example::

        from aios_core.components import Adapter
        from aios_core.hookspecs import hookimpl
        from aios_core.patching import Patcher


        class TinyFrameworkAdapter(Adapter):
            name = "tinyframework"
            description = "routes tinyframework.complete(prompt) through the kernel"

            def __init__(self):
                self._patcher = Patcher()

            def patch(self, kernel, **agent_options):
                import tinyframework

                agent = kernel.agent(agent_options.get("agent", "tinyframework"))
                self._patcher.replace(tinyframework, "complete", lambda prompt: agent.chat(prompt).content)

            def unpatch(self):
                self._patcher.restore()

            @property
            def patched(self):
                return bool(self._patcher)


        ADAPTER = TinyFrameworkAdapter()


        @hookimpl
        def aios_register_adapters():
            return [ADAPTER]
    """


@hookspec
def aios_kernel_started(kernel: Any) -> None:
    """The kernel has started: cores are loaded, pools and managers are built, syscalls are accepted.

    **When:** once per start, on the kernel's event loop (in an embedded kernel that
    is its background thread). Do not block: hand slow work to a thread or a task.

    **Arguments:** ``kernel``, the :class:`~aios_core.kernel.Kernel`
    (``kernel.cores``, ``kernel.config``, ``kernel.stats()``).

    **Returns:** nothing. An exception is logged and reported by ``aios plugins``;
    the kernel runs on.

    Example::

        import logging

        from aios_core.hookspecs import hookimpl


        @hookimpl
        def aios_kernel_started(kernel):
            logging.getLogger("my_plugin").info("kernel up with cores %s", sorted(kernel.cores))
    """


@hookspec
def aios_kernel_stopping(kernel: Any) -> None:
    """The kernel is about to stop.

    **When:** once, at the start of ``stop()``: new syscalls are already refused,
    in-flight ones are still being given their grace period. On the kernel's loop.

    **Arguments:** ``kernel``, the :class:`~aios_core.kernel.Kernel`.

    **Returns:** nothing. An exception is logged and reported; the kernel stops anyway.

    Example::

        import json

        from aios_core.hookspecs import hookimpl

        LAST_STATS = {}


        @hookimpl
        def aios_kernel_stopping(kernel):
            LAST_STATS.update(json.loads(json.dumps(kernel.stats(), default=str)))
    """


@hookspec
def aios_syscall_finished(syscall: Any, error: Any) -> None:
    """A syscall finished, successfully or not.

    **When:** after every LLM, memory, storage and tool syscall, on the kernel's
    loop: keep it cheap. The kernel checks at start whether any plugin implements
    this hook, so a plugin registered after the kernel started is not called.

    **Arguments:** ``syscall``, the finished syscall (``kind``, ``agent``,
    ``program``, and ``timing`` with ``waiting``, ``service`` and ``turnaround``);
    ``error``, the exception it failed with, or ``None`` on success.

    **Returns:** nothing. An exception is logged and reported once; the syscall's
    result is not affected.

    Example::

        from collections import Counter

        from aios_core.hookspecs import hookimpl

        FINISHED = Counter()


        @hookimpl
        def aios_syscall_finished(syscall, error):
            FINISHED[(syscall.agent, syscall.kind, "failed" if error else "ok")] += 1
    """


@hookspec(firstresult=True)
def aios_confirm_action(agent: str, action: str, detail: dict[str, Any]) -> "bool | None":
    """Confirm an irreversible action (delete, overwrite, shell, code execution, network).

    **When:** the agent's group allows the action, the action is irreversible
    (an ``irreversible`` tool, purging history) and the group does not preapprove
    it. The kernel's own ``confirm`` callback is asked first, then plugins in
    registration order; the first True or False wins. Runs in a worker thread, so
    it may block (a prompt, an approval service) up to ``confirm_timeout`` seconds.

    **Arguments:** ``agent``, the agent's name; ``action``, e.g. ``"tool"``;
    ``detail``, with ``resource`` (e.g. the tool name), ``group``, and for tools
    ``call_id`` and ``arguments``.

    **Returns:** ``True`` to allow, ``False`` to deny, ``None`` to leave the
    decision to the next plugin. When nobody answers, the action is denied. A
    plugin that raises is skipped and reported.

    Example::

        from aios_core.hookspecs import hookimpl


        @hookimpl
        def aios_confirm_action(agent, action, detail):
            if action == "tool" and detail["resource"] == "python" and agent.startswith("ci-"):
                return True  # CI agents may run code
            return None  # not my decision
    """
