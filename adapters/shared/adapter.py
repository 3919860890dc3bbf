"""What every framework adapter's ``patch`` / ``unpatch`` does, written once.

An adapter's patch is one :class:`~aios.adapters.shared.route.Route` (its options parsed and
checked) plus method replacements recorded by a :class:`~aios_core.patching.Patcher`; unpatching
restores every original exactly. Patching twice is harmless; a patch that fails half-way is rolled
back before the error reaches the caller. Subclasses say only what is theirs: what to check or
prepare before the framework is imported (:meth:`prepare`) and what to replace (:meth:`install`).
"""

from __future__ import annotations

import abc
import logging
import threading
from typing import Any

from aios.adapters.shared.route import Route, RouteOptions

from aios_core.components import Adapter
from aios_core.patching import Patcher
from aios_core.port import KernelPort

log = logging.getLogger(__name__)


class RoutedAdapter(Adapter):
    """An :class:`Adapter` whose patch is a route to the kernel and a set of exactly reversible replacements."""

    def __init__(self) -> None:
        self._patcher: Patcher | None = None
        self.route: Route | None = None
        self._lock = threading.Lock()

    @property
    def patched(self) -> bool:
        return self._patcher is not None

    def prepare(self, patcher: Patcher, kernel: KernelPort, options: RouteOptions) -> None:
        """Before the route exists: check versions, supply configuration, import the framework (default: nothing)."""

    @abc.abstractmethod
    def install(self, patcher: Patcher, route: Route) -> None:
        """Replace the framework's methods through ``patcher`` so that its calls take ``route``."""

    def patch(self, kernel: Any, **agent_options: Any) -> None:
        with self._lock:
            if self._patcher is not None:
                return
            options = RouteOptions.parse(self.name, agent_options)
            patcher = Patcher()
            try:
                self.prepare(patcher, kernel, options)
                route = Route(kernel, self.name, options)
                self.install(patcher, route)
            except BaseException:
                patcher.restore()
                raise
            self._patcher, self.route = patcher, route
            log.info("%s: model and tool calls now go through the kernel", self.name)

    def unpatch(self) -> None:
        with self._lock:
            if self._patcher is None:
                return
            self._patcher.restore()
            self._patcher, self.route = None, None
