"""The kernel: the one place where agents' syscalls meet models, memory, storage and tools.

It owns one asyncio loop. Embedded in a sync program it runs that loop in a
background thread (:meth:`Kernel.start`); inside an async program it runs on
the caller's loop (``async with Kernel() as kernel``). Every syscall is
validated, attributed to a registered agent, queued on its resource and
awaited: LLM syscalls go to the :class:`~aios_core.llm_pool.LLMPool` of their
model (scheduler + cores); memory, storage and tool syscalls go to their
manager through a bounded pool of concurrent slots. Nothing polls, and no
thread is started per syscall.

Errors reach the one caller they concern, as :class:`~aios_core.errors.AIOSError`
subclasses; the kernel keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from aios_core import bridge
from aios_core.agents import AgentRecord, AgentTable, program_key
from aios_core.config import KernelConfig, load_config
from aios_core.cores.base import LLMCore
from aios_core.errors import (
    AIOSError,
    ConfigError,
    CoreError,
    KernelNotRunningError,
    QueueFullError,
    SyscallCancelledError,
    SyscallTimeoutError,
    UnknownComponentError,
)
from aios_core.llm_pool import Flight, LLMPool
from aios_core.managers.context import ContextManager
from aios_core.plugins import PluginFailure, PluginHost
from aios_core.port import ToolRegistry
from aios_core.scheduler.base import Scheduler
from aios_core.syscalls import AnySyscall, LLMSyscall, StreamPiece, SyscallBase, parse_syscall
from aios_core.timeline import Timeline

log = logging.getLogger(__name__)

MANAGED_KINDS = ("memory", "storage", "tool")


class KernelState(enum.StrEnum):
    """The kernel's lifecycle: NEW -> STARTING -> RUNNING -> STOPPING -> STOPPED (-> STARTING again); a failed start ends STOPPED.

    A ``StrEnum``, so ``stats()["state"]`` and messages keep the plain words.
    """

    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Kernel:
    """An AIOS kernel. Construct, start (sync or async), submit syscalls, stop."""

    def __init__(
        self,
        config: KernelConfig | None = None,
        *,
        cores: list[LLMCore] | None = None,
        scheduler: str | Scheduler | None = None,
        plugins: PluginHost | None = None,
        managers: Any = None,
        confirm: Callable[[str, str, dict[str, Any]], bool | None] | None = None,
        **overrides: Any,
    ) -> None:
        if config is not None and overrides:
            config = config.model_copy(update=overrides)
        self.config = config if config is not None else load_config(**overrides)
        self.plugins = plugins or PluginHost(
            entry_point_plugins=self.config.entry_point_plugins, disabled=set(self.config.disabled_plugins)
        )
        self.agents = AgentTable(auto_register=self.config.auto_register_agents, default_group=self.config.default_group)
        self.context = ContextManager(
            memory_budget=self.config.snapshot_budget_mb * 1024 * 1024, spill_dir=self.config.data_dir / "snapshots"
        )
        #: recent phases of every syscall (the dashboard's timeline); survives restarts
        self.timeline = Timeline()
        self.pools: dict[str, LLMPool] = {}
        self.cores: dict[str, LLMCore] = {}
        self.managers = managers
        #: managers the kernel builds itself are closed at stop and rebuilt at a restart; ones passed in are the caller's
        self._own_managers = managers is None
        #: tasks running memory/storage/tool syscalls (cancelled at stop once the grace period is over)
        self._managed: set[asyncio.Task[Any]] = set()
        self.confirm = confirm
        self._given_cores = cores
        self._scheduler_spec = scheduler
        self._routes: dict[str, str] = {}
        self._default_pool: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: bridge.LoopThread | None = None
        self._state = KernelState.NEW
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._waiting: dict[str, int] = {kind: 0 for kind in MANAGED_KINDS}
        self._inflight: set[asyncio.Future[Any]] = set()
        self._observed = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._state is KernelState.RUNNING

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    async def astart(self) -> "Kernel":
        """Start on the running loop: build and load cores, pools and managers."""
        if self._state is KernelState.RUNNING:
            return self
        if self._state not in (KernelState.NEW, KernelState.STOPPED):
            raise KernelNotRunningError(f"cannot start a kernel that is {self._state}")
        self._loop = asyncio.get_running_loop()
        self._state = KernelState.STARTING
        try:
            await self._start_cores()
            self._build_pools()
            self._slots = {
                "memory": asyncio.Semaphore(self.config.memory_workers),
                "storage": asyncio.Semaphore(self.config.storage_workers),
                "tool": asyncio.Semaphore(self.config.tool_workers),
            }
            if self.managers is None:
                self.managers = self._build_managers()
        except BaseException:
            self._state = KernelState.STOPPED
            for core in self.cores.values():
                try:
                    await core.stop()
                except Exception:  # noqa: BLE001
                    log.exception("stopping core %s after a failed start", core.name)
            raise
        self._observed = bool(self.plugins.pm.hook.aios_syscall_finished.get_hookimpls())
        self._state = KernelState.RUNNING
        self.plugins.notify("aios_kernel_started", kernel=self)
        log.info("kernel started: cores %s, scheduler %s", list(self.cores), {p: pool.scheduler.name for p, pool in self.pools.items()})
        return self

    async def astop(self, *, grace: float = 5.0) -> None:
        """Stop accepting syscalls, let in-flight ones finish for ``grace`` seconds, cancel the rest."""
        if self._state is not KernelState.RUNNING:
            return
        self._state = KernelState.STOPPING
        self.plugins.notify("aios_kernel_stopping", kernel=self)
        pending = [f for f in self._inflight if not f.done()]
        if pending and grace > 0:
            await asyncio.wait(pending, timeout=grace)
        reason = SyscallCancelledError("the kernel is stopping; the syscall was cancelled")
        for pool in self.pools.values():
            pool.shutdown(reason)
        managed = [t for t in self._managed if not t.done()]
        for task in managed:
            task.cancel()  # _execute_managed turns this into a SyscallCancelledError for its caller
        if managed:
            await asyncio.wait(managed, timeout=max(1.0, grace))
        await asyncio.sleep(0)
        for core in self.cores.values():
            try:
                await core.stop()
            except Exception:  # noqa: BLE001
                log.exception("core %s failed to stop cleanly", core.name)
        if self._own_managers and self.managers is not None:
            try:
                await self.managers.aclose()
            except Exception:  # noqa: BLE001
                log.exception("closing the managers failed")
            self.managers = None  # a restart opens them again
        self.context.close()
        self.cores.clear()
        self.pools.clear()
        self._routes.clear()
        self._state = KernelState.STOPPED

    def start(self) -> "Kernel":
        """Start embedded: the kernel's loop runs in a background thread; use the sync or async API from anywhere."""
        if self._state is KernelState.RUNNING:
            return self
        self._thread = bridge.LoopThread()
        try:
            bridge.run_sync(self._thread.loop, self.astart())
        except BaseException:
            self._thread.stop()
            self._thread = None
            raise
        return self

    def stop(self, *, grace: float = 5.0) -> None:
        if self._state is KernelState.RUNNING and self._loop is not None:
            if bridge.on_loop(self._loop):
                raise RuntimeError("kernel.stop() was called on the kernel's loop; use `await kernel.astop()`")
            bridge.run_sync(self._loop, self.astop(grace=grace))
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def __enter__(self) -> "Kernel":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> "Kernel":
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    # ------------------------------------------------------------------ building

    def check(self) -> None:
        """Build the configured cores and the scheduler without starting them; raise :class:`ConfigError` if one is refused.

        Constructing a core checks its options (and its model file, when one is named) but loads nothing. :meth:`astart`
        finds a bad scheduler option only after loading every model, and a benchmark only after its
        baseline rounds; this finds it in a moment.
        """
        self._build_cores()
        self._make_scheduler()

    def _build_cores(self) -> list[LLMCore]:
        cores = list(self._given_cores) if self._given_cores is not None else [self._make_core(c) for c in self.config.cores]
        names = [c.name for c in cores]
        if len(set(names)) != len(names):
            raise ConfigError(f"core names must be unique, got {names}")
        return cores

    async def _start_cores(self) -> None:
        cores = self._build_cores()
        for core in cores:
            try:
                await core.start()
            except AIOSError:
                raise
            except Exception as exc:
                raise CoreError(f"core {core.name} ({core.kind}) failed to start: {exc}") from exc
            self.cores[core.name] = core

    def _make_core(self, cfg: Any) -> LLMCore:
        factory = self.plugins.get("cores", cfg.kind)
        try:
            return factory.create(name=cfg.name, **cfg.options())
        except AIOSError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cores.{cfg.name}: bad options for core kind {cfg.kind!r}: {exc}") from exc

    def _make_scheduler(self) -> Scheduler:
        spec = self._scheduler_spec
        if isinstance(spec, Scheduler):
            return spec
        name = spec or self.config.scheduler
        cls = self.plugins.get("schedulers", name)
        try:
            return cls(**self.config.scheduler_options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"scheduler_options: bad options for scheduler {name!r}: {exc}") from exc

    def _build_pools(self) -> None:
        by_model: dict[str, list[LLMCore]] = {}
        for core in self.cores.values():
            by_model.setdefault(core.model, []).append(core)
        if isinstance(self._scheduler_spec, Scheduler) and len(by_model) > 1:
            raise ConfigError("a scheduler instance can serve only one model; pass a scheduler name instead")
        for model, cores in by_model.items():
            self.pools[model] = LLMPool(
                model,
                cores,
                self._make_scheduler(),
                self.context,
                max_queued=self.config.max_queued,
                max_retries=self.config.max_retries,
                preemption=self.config.preemption,
                preempt_recompute=self.config.preempt_recompute,
                on_finish=self._llm_finished,
                on_scheduler_error=self._scheduler_failed,
                timeline=self.timeline,
            )
            self._routes[model] = model
            for core in cores:
                self._routes[core.name] = model
        first = next(iter(self.cores.values()))
        default = self.config.default_model or first.model
        if default not in self._routes:
            raise ConfigError(f"default_model {default!r} is neither a model nor a core name; have {sorted(self._routes)}")
        self._default_pool = self._routes[default]

    def _build_managers(self) -> Any:
        try:
            from aios_core.managers import build_managers
        except ImportError:
            log.warning("no managers available: memory, storage and tool syscalls will be refused")
            return None
        return build_managers(self)

    def _scheduler_failed(self, scheduler: Scheduler, exc: BaseException) -> None:
        plugin = next((reg.plugin for n, reg in self.plugins.registries["schedulers"].items() if reg.component is type(scheduler)), type(scheduler).__module__)
        self.plugins.errors.append(
            PluginFailure(plugin, f"scheduler {scheduler.name!r} from plugin {plugin} raised {exc!r}; its pool fell back to fifo")
        )

    # ------------------------------------------------------------------ agents

    def register_agent(
        self, name: str, *, group: str | None = None, program: str | None = None, priority: int = 0, framework: str = "sdk"
    ) -> AgentRecord:
        now = self._loop.time() if self._loop is not None else 0.0
        return self.agents.register(name, group=group, program=program, priority=priority, framework=framework, now=now)

    def has_agent(self, name: str) -> bool:
        return name in self.agents

    # ------------------------------------------------------------------ the adapters' port (aios_core.port.KernelPort)

    #: framework tools are registered in this kernel's own tool manager and run as kernel functions
    hosts_client_tools = False

    def served_models(self) -> list[str]:
        """Model names, then core names, that LLM syscalls may name (empty before the kernel has started)."""
        return list(self.pools) + [name for name in self.cores if name not in self.pools]

    def tool_registry(self) -> ToolRegistry | None:
        return self.managers.tools if self.managers is not None else None

    def agent(self, name: str, **options: Any) -> Any:
        """Register ``name`` (if needed) and return an SDK handle whose methods issue its syscalls."""
        from aios_core.sdk import Agent

        record = self.register_agent(name, **options)
        return Agent(self, record.name, program=record.program, priority=record.priority)

    def end_agent(self, name: str) -> None:
        """The agent is done: forget it, its snapshots and its scheduling history."""
        record = self.agents.unregister(name)
        if record is None:
            return
        self.context.drop_agent(name)
        program = program_key(name, record.program)

        def end_program() -> None:
            for pool in self.pools.values():
                pool.end_program(program)

        # the pools may start queued calls on the room this frees: that happens on the kernel's loop
        if self._loop is not None and self._loop.is_running() and not bridge.on_loop(self._loop):
            self._loop.call_soon_threadsafe(end_program)
        else:
            end_program()

    # ------------------------------------------------------------------ syscalls (async face)

    async def acall(self, syscall: AnySyscall | dict[str, Any] | str | bytes) -> Any:
        """Run a syscall to completion from any loop; returns its result (LLMResponse, tool results, ...)."""
        sc = syscall if isinstance(syscall, SyscallBase) else parse_syscall(syscall)
        return await bridge.run_async(self._loop, self._execute(sc))  # type: ignore[arg-type]

    async def astream(self, syscall: LLMSyscall | dict[str, Any]) -> AsyncIterator[StreamPiece]:
        """Stream an LLM syscall from any loop: text deltas, then a last piece with the full response."""
        sc = syscall if isinstance(syscall, SyscallBase) else parse_syscall(syscall)
        if not isinstance(sc, LLMSyscall):
            raise_invalid("only LLM syscalls stream")
        async for piece in bridge.iterate_async(self._loop, self._stream(sc)):  # type: ignore[arg-type]
            yield piece

    # ------------------------------------------------------------------ syscalls (sync face)

    def call(self, syscall: AnySyscall | dict[str, Any] | str | bytes) -> Any:
        sc = syscall if isinstance(syscall, SyscallBase) else parse_syscall(syscall)
        return bridge.run_sync(self._loop, self._execute(sc))  # type: ignore[arg-type]

    def stream(self, syscall: LLMSyscall | dict[str, Any]) -> Iterator[StreamPiece]:
        sc = syscall if isinstance(syscall, SyscallBase) else parse_syscall(syscall)
        if not isinstance(sc, LLMSyscall):
            raise_invalid("only LLM syscalls stream")
        return bridge.iterate_sync(self._loop, self._stream(sc))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ on the kernel loop

    def _check_running(self) -> None:
        if self._state is not KernelState.RUNNING:
            raise KernelNotRunningError(f"the kernel is {self._state}; syscalls are accepted only while it runs")

    def _pool_for(self, model: str | None) -> LLMPool:
        self._check_running()
        key = self._default_pool if model is None else self._routes.get(model)
        if key is None:
            raise UnknownComponentError(f"no core serves model {model!r}; available: {sorted(self._routes)}", model=model)
        return self.pools[key]

    def _admit(self, sc: AnySyscall) -> AgentRecord:
        self._check_running()
        agent = self.agents.get(sc.agent)
        now = self._loop.time()  # type: ignore[union-attr]
        if sc.timing.created is None:
            sc.timing.created = now
        agent.syscalls += 1
        agent.in_flight += 1
        agent.last_seen = now
        agent.by_kind[sc.kind] = agent.by_kind.get(sc.kind, 0) + 1
        return agent

    async def _execute(self, sc: AnySyscall) -> Any:
        current = asyncio.current_task()
        if current is not None:
            self._inflight.add(current)  # type: ignore[arg-type]
        try:
            if isinstance(sc, LLMSyscall):
                return await self._execute_llm(sc)
            return await self._execute_managed(sc)
        finally:
            if current is not None:
                self._inflight.discard(current)  # type: ignore[arg-type]

    async def _execute_llm(self, sc: LLMSyscall) -> Any:
        pool = self._pool_for(sc.request.model)
        agent = self._admit(sc)
        try:
            await self._authorize_core(agent, pool)
            flight = pool.submit(sc, agent)
        except BaseException as exc:
            self._settle(agent, sc, exc, timed=False)
            raise
        return await self._await_flight(pool, flight)

    async def _await_flight(self, pool: LLMPool, flight: Flight) -> Any:
        timeout = flight.syscall.timeout
        try:
            if timeout is None:
                return await asyncio.shield(flight.done)
            async with asyncio.timeout(timeout):
                return await asyncio.shield(flight.done)
        except TimeoutError:
            error = SyscallTimeoutError(f"syscall {flight.id} did not finish within its timeout of {timeout} s", syscall=flight.id)
            pool.cancel(flight, error)
            raise error from None
        except asyncio.CancelledError:
            pool.cancel(flight, SyscallCancelledError(f"syscall {flight.id} was cancelled by its caller"))
            raise

    async def _stream(self, sc: LLMSyscall) -> AsyncIterator[StreamPiece]:
        current = asyncio.current_task()
        pool = self._pool_for(sc.request.model)
        agent = self._admit(sc)
        try:
            await self._authorize_core(agent, pool)
            flight = pool.submit(sc, agent, stream=True)
        except BaseException as exc:
            self._settle(agent, sc, exc, timed=False)
            raise
        if current is not None:
            self._inflight.add(flight.done)
        assert flight.deltas is not None
        deadline = None if sc.timeout is None else self._loop.time() + sc.timeout  # type: ignore[union-attr]
        try:
            while True:
                if deadline is None:
                    item = await flight.deltas.get()
                else:
                    try:
                        async with asyncio.timeout_at(deadline):
                            item = await flight.deltas.get()
                    except TimeoutError:
                        error = SyscallTimeoutError(f"syscall {flight.id} did not finish within its timeout of {sc.timeout} s")
                        pool.cancel(flight, error)
                        raise error from None
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.response is not None:
                    return
        finally:
            self._inflight.discard(flight.done)
            if not flight.done.done():
                pool.cancel(flight, SyscallCancelledError(f"the consumer of stream {flight.id} went away"))

    async def _authorize_core(self, agent: AgentRecord, pool: LLMPool) -> None:
        access = getattr(self.managers, "access", None)
        if access is not None:
            await access.authorize(agent, "llm", pool.name)

    def _llm_finished(self, flight: Flight, error: BaseException | None) -> None:
        # the pool stamped timing.finished when it settled the flight
        self._settle(flight.agent, flight.syscall, error, flight=flight, stamp_finished=False)

    def _settle(
        self,
        agent: AgentRecord,
        sc: AnySyscall,
        error: BaseException | None,
        *,
        flight: Flight | None = None,
        stamp_finished: bool = True,
        timed: bool = True,
    ) -> None:
        """Close one syscall in its agent's books and tell the observers: the one place every syscall ends.

        ``flight`` adds an LLM call's token usage; ``timed=False`` is for a
        call refused before it was queued (no service or waiting to count).
        """
        if stamp_finished and self._loop is not None:
            sc.timing.finished = self._loop.time()
        agent.in_flight = max(0, agent.in_flight - 1)
        if flight is not None:
            agent.prompt_tokens += flight.prompt_tokens
            agent.completion_tokens += flight.completion_tokens
        if timed:
            agent.service_time += sc.timing.service
            agent.waiting_time += sc.timing.waiting or 0.0
        if error is not None:
            agent.failed += 1
        if self._observed:
            self.plugins.notify("aios_syscall_finished", syscall=sc, error=error)

    async def _execute_managed(self, sc: AnySyscall) -> Any:
        kind = sc.kind
        manager = getattr(self.managers, kind, None) if self.managers is not None else None
        agent = self._admit(sc)
        loop = self._loop
        assert loop is not None
        error: BaseException | None = None
        task = asyncio.current_task()
        if task is not None:
            self._managed.add(task)
        try:
            if manager is None:
                raise UnknownComponentError(f"no {kind} manager is configured in this kernel", kind=kind)
            if self._waiting[kind] >= self.config.max_queued:
                raise QueueFullError(f"{self._waiting[kind]} {kind} syscalls are waiting (the limit); retry later")
            sc.timing.queued = loop.time()
            self._waiting[kind] += 1
            try:
                async with asyncio.timeout(sc.timeout):
                    async with self._slots[kind]:
                        start = loop.time()
                        sc.timing.started = start
                        try:
                            return await manager.handle(sc, agent)
                        finally:
                            sc.timing.service += loop.time() - start
            except TimeoutError:
                raise SyscallTimeoutError(f"{kind} syscall {sc.id} did not finish within its timeout of {sc.timeout} s") from None
            finally:
                self._waiting[kind] -= 1
        except AIOSError as exc:
            error = exc
            raise
        except asyncio.CancelledError as exc:
            if self._state is KernelState.STOPPING:
                error = SyscallCancelledError(f"the kernel is stopping; the {kind} syscall was cancelled")
                raise error from None
            error = exc
            raise
        except (Exception, SystemExit) as exc:  # a manager bug: report it to this caller only
            log.exception("%s manager failed on %s", kind, sc.id)
            error = AIOSError(f"the {kind} manager failed: {exc!r}")
            raise error from exc
        finally:
            if task is not None:
                self._managed.discard(task)
            self._settle(agent, sc, error)
            self.timeline.managed(sc, error)

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, Any]:
        """A consistent picture of queues, cores, agents and snapshots (for ``aios top`` and the bench)."""
        return {
            "state": self._state,
            "pools": {
                name: {
                    "scheduler": pool.scheduler.name,
                    "queued": pool.queued,
                    "running": pool.running,
                    "completed": pool.completed,
                    "failed": pool.failed,
                    "cores": [core.stats().as_dict() for core in pool.cores],
                }
                for name, pool in self.pools.items()
            },
            "managed_waiting": dict(self._waiting),
            "agents": [a.as_dict() for a in self.agents.all()],
            "snapshots": self.context.stats.as_dict(),
            "managers": self._manager_stats(),
        }

    def _manager_stats(self) -> dict[str, Any]:
        stats = getattr(self.managers, "stats", None)
        if not callable(stats):
            return {}
        try:
            return dict(stats())
        except Exception:  # noqa: BLE001 - a plugin manager's counters must not break ``aios top``
            log.exception("the managers' stats failed")
            return {}


def raise_invalid(message: str) -> None:
    from aios_core.errors import InvalidSyscallError

    raise InvalidSyscallError(message)
