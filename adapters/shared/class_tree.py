"""Replacing methods on every class of a hierarchy: the classes that exist now and those defined later.

A framework's base class (``ChatCompletionClient``, ``BaseChatModel``) is an
interface; each implementation defines its own ``create`` / ``_generate``. So
patching the base alone catches nothing. :class:`ClassTreePatch` walks the
subclass tree, lets the adapter install its replacements on each class, and
hooks the base's subclass-creation hook so that classes defined after
``aios.patch`` (a user's own client, a provider package imported later) are
patched as they are created. Everything goes through one
:class:`~aios_core.patching.Patcher`, so unpatching restores each class exactly,
and removes the hook.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from aios_core.patching import Patcher

log = logging.getLogger(__name__)


def walk_subclasses(root: type) -> Iterator[type]:
    """Every subclass of ``root`` (depth first, each once)."""
    seen: set[type] = set()
    stack = list(type.__subclasses__(root))
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield cls
        stack.extend(type.__subclasses__(cls))


class ClassTreePatch:
    """Apply ``install(cls)`` to ``root``'s subclasses now and to each subclass created while patched.

    ``hook`` names the class-creation hook to chain into: ``__init_subclass__``
    for plain classes, ``__pydantic_init_subclass__`` for pydantic models (it
    runs once the model class is complete).
    """

    def __init__(
        self,
        patcher: Patcher,
        root: type,
        install: Callable[[type], None],
        *,
        hook: str = "__init_subclass__",
        include_root: bool = False,
    ) -> None:
        self.patcher = patcher
        self.root = root
        self.install = install
        self.hook = hook
        self.include_root = include_root

    def apply(self) -> None:
        if self.include_root:
            self.install(self.root)
        for cls in list(walk_subclasses(self.root)):
            self.install(cls)
        self._hook_future_subclasses()

    def _hook_future_subclasses(self) -> None:
        root, hook_name, install = self.root, self.hook, self.install
        own = root.__dict__.get(hook_name)

        def chained(cls: type, **kwargs: Any) -> None:
            if own is not None:
                own.__get__(None, cls)(**kwargs)
            else:
                getattr(super(root, cls), hook_name)(**kwargs)
            try:
                install(cls)
            except Exception:
                log.exception("could not route %s.%s through the kernel", cls.__module__, cls.__qualname__)

        chained.__name__ = hook_name
        self.patcher.replace(root, hook_name, classmethod(chained))
