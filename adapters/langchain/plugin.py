"""Registers the LangChain adapter through the same hook as any third-party adapter."""

from __future__ import annotations

from aios.adapters.langchain.adapter import ADAPTER

from aios_core.components import Adapter
from aios_core.hookspecs import hookimpl


@hookimpl
def aios_register_adapters() -> list[Adapter]:
    # one instance per process: the adapter holds the patch state of the (process-wide) framework classes
    return [ADAPTER]
