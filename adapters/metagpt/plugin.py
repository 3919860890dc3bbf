"""Registers the MetaGPT adapter through the same hook as any third-party adapter (MetaGPT is imported only on patch)."""

from __future__ import annotations

from aios.adapters.metagpt.adapter import ADAPTER

from aios_core.components import Adapter
from aios_core.hookspecs import hookimpl


@hookimpl
def aios_register_adapters() -> list[Adapter]:
    return [ADAPTER]
