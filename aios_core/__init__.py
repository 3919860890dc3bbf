"""AIOS kernel internals: syscalls, scheduler, cores, managers and hooks. Users import :mod:`aios`."""

__version__ = "0.1.0"
