"""Module-level tool callables for the sandboxed-tool tests (a subprocess must be able to import them)."""

from __future__ import annotations

import time


def add(a: int, b: int) -> int:
    return a + b


def hang(seconds: float = 3600) -> str:
    time.sleep(seconds)
    return "woke up"


def spin() -> None:
    while True:
        pass


def eat_memory(mb: int = 4096) -> int:
    hog = bytearray(mb * 1024 * 1024)
    return len(hog)


def fail() -> None:
    raise ValueError("the tool's own error")


def grow_memory(step_mb: int = 8) -> int:
    """Grows a little at a time, as a leaking tool does, until something stops it."""
    chunks = []
    while True:
        chunks.append(bytearray(step_mb * 1024 * 1024))
