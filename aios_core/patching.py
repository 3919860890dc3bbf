"""``aios.patch`` / ``aios.unpatch``: routing a framework through the kernel, and back.

Adapters are plugins (hook ``aios_register_adapters``). Patching resolves the
adapter by name, checks the installed framework version against the adapter's
supported range (failing with that range in the message), and lets the adapter
replace attributes through a :class:`Patcher`, which remembers every original
so that unpatching restores the framework exactly. Patching twice is harmless.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from aios_core.components import Adapter
from aios_core.errors import AIOSError, UnknownComponentError

log = logging.getLogger(__name__)
_MISSING = object()


class Patcher:
    """Replaces attributes and remembers the originals, for exact restoration."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def replace(self, owner: Any, name: str, new: Any) -> Any:
        """Set ``owner.name = new``; returns the original (as found in ``owner.__dict__`` when it has one there)."""
        original = owner.__dict__.get(name, _MISSING) if hasattr(owner, "__dict__") else getattr(owner, name, _MISSING)
        # inherited (not in owner.__dict__): what callers saw before, read before it is shadowed
        inherited = getattr(owner, name, None) if original is _MISSING else original
        self._saved.append((owner, name, original))
        setattr(owner, name, new)
        return inherited

    def restore(self) -> None:
        while self._saved:
            owner, name, original = self._saved.pop()
            if original is _MISSING:
                try:
                    delattr(owner, name)
                except AttributeError:
                    pass
            else:
                setattr(owner, name, original)

    def __bool__(self) -> bool:
        return bool(self._saved)


def check_version(distribution: str, supported: str, framework: str) -> str:
    """The installed version of ``distribution``; an AIOSError naming the supported range when it does not fit."""
    try:
        installed = version(distribution)
    except PackageNotFoundError:
        raise AIOSError(
            f"aios.patch({framework!r}) needs {distribution} {supported}, which is not installed; "
            f"install it with: pip install '{distribution}{supported}'"
        ) from None
    if supported and Version(installed) not in SpecifierSet(supported):
        raise AIOSError(
            f"aios.patch({framework!r}) supports {distribution} {supported}, but {installed} is installed; "
            f"install a supported version: pip install '{distribution}{supported}'"
        )
    return installed


_lock = threading.Lock()
_default_kernel: Any = None
#: whether _default_kernel was started here (then it is ours to stop) or handed in by set_default_kernel
_default_is_ours = False
_exit_handler_registered = False

#: seconds in-flight syscalls get to finish when the default kernel stops (unpatch, interpreter exit)
STOP_GRACE = 5.0


def default_kernel() -> Any:
    """The embedded kernel adapters use when none is given: started lazily with the default configuration.

    ``AIOS_URL`` set in the environment makes it a remote kernel instead (see ``aios.connect``).
    It is stopped when the last framework patched onto it is unpatched, and at
    interpreter exit: in-flight syscalls get :data:`STOP_GRACE` seconds to
    finish, then their callers get a :class:`~aios_core.errors.SyscallCancelledError`.
    """
    global _default_kernel, _default_is_ours, _exit_handler_registered
    with _lock:
        if _default_kernel is None:
            import os

            if os.environ.get("AIOS_URL"):
                from aios_core.server.remote import connect

                _default_kernel = connect(os.environ["AIOS_URL"], os.environ.get("AIOS_TOKEN"))
            else:
                from aios_core.kernel import Kernel

                _default_kernel = Kernel(auto_register_agents=True, plugins=_host()).start()
            _default_is_ours = True
            if not _exit_handler_registered:
                # registered after the kernel's loop thread, so it runs first (last in, first out):
                # the kernel stops gracefully, then its loop is torn down
                from aios_core import bridge

                bridge.at_exit_before_executors(stop_default_kernel)
                _exit_handler_registered = True
        return _default_kernel


def set_default_kernel(kernel: Any) -> None:
    """Make ``kernel`` the one adapters use when none is given; its owner starts and stops it."""
    global _default_kernel, _default_is_ours
    with _lock:
        _default_kernel = kernel
        _default_is_ours = False


def stop_default_kernel(grace: float | None = None) -> None:
    """Stop the default kernel if this module started it; the next :func:`default_kernel` starts a fresh one.

    In-flight syscalls get ``grace`` seconds (default :data:`STOP_GRACE`) to finish; the rest are cancelled
    and their callers get a SyscallCancelledError. A kernel given to
    :func:`set_default_kernel` is left alone: its owner stops it.
    """
    global _default_kernel, _default_is_ours
    with _lock:
        if _default_kernel is None or not _default_is_ours:
            return
        kernel = _default_kernel
        _default_kernel, _default_is_ours = None, False
    try:
        kernel.stop(grace=STOP_GRACE if grace is None else grace)
    except Exception:  # noqa: BLE001 - stopping must not raise out of unpatch or interpreter exit
        log.exception("stopping the default AIOS kernel failed")


def _adapter(name: str) -> Adapter:
    host = _host()
    try:
        return host.get("adapters", name)  # type: ignore[no-any-return]
    except UnknownComponentError:
        raise UnknownComponentError(
            f"no adapter named {name!r}; available: {', '.join(host.names('adapters')) or 'none'}", name=name
        ) from None


def _host() -> Any:
    """The process's one plugin host, shared with the default kernel, so adapters honour ``disabled_plugins``."""
    from aios_core.plugins import process_host

    return process_host()


def patch(name: str, kernel: Any = None, **agent_options: Any) -> Adapter:
    """Route framework ``name``'s LLM and tool calls through ``kernel`` (default: the embedded kernel)."""
    adapter = _adapter(name)
    if adapter.distribution:
        check_version(adapter.distribution, adapter.supported, name)
    if adapter.patched:
        current = getattr(getattr(adapter, "route", None), "kernel", None)
        if kernel is not None and current is not None and kernel is not current:
            from aios_core.errors import ConfigError

            raise ConfigError(
                f"{name} is already patched onto another kernel; call aios.unpatch({name!r}) first to move it "
                "(patching again with the same kernel, or with none, is harmless)"
            )
        return adapter
    adapter.patch(kernel if kernel is not None else default_kernel(), **agent_options)
    log.info("patched %s", name)
    return adapter


def unpatch(name: str | None = None) -> None:
    """Restore framework ``name`` (every patched framework when None) exactly as it was before :func:`patch`.

    When no framework is left patched onto the default kernel, the default
    kernel is stopped (see :func:`stop_default_kernel`).
    """
    host = _host()
    adapters = [_adapter(name)] if name is not None else [host.get("adapters", n) for n in host.names("adapters")]
    for adapter in adapters:
        if adapter.patched:
            adapter.unpatch()
    if not _default_kernel_in_use(host):
        stop_default_kernel()


def _default_kernel_in_use(host: Any) -> bool:
    """Whether a patched framework still routes to the default kernel (one whose kernel is unknown counts)."""
    current = _default_kernel
    if current is None:
        return False
    for adapter_name in host.names("adapters"):
        adapter = host.get("adapters", adapter_name)
        if adapter.patched:
            kernel = getattr(getattr(adapter, "route", None), "kernel", None)
            if kernel is None or kernel is current:
                return True
    return False


@contextlib.contextmanager
def patched(name: str, kernel: Any = None, **agent_options: Any) -> Iterator[Adapter]:
    """``with aios.patched("langchain", kernel): ...`` — patched inside the block only."""
    was = _adapter(name).patched
    adapter = patch(name, kernel, **agent_options)
    try:
        yield adapter
    finally:
        if not was:
            unpatch(name)
