"""The greedy head's eval callback as a C function: ggml calls it without taking the GIL.

ggml calls a context's eval callback for every node of every graph, about 700
times a step for Gemma 3 270M. :class:`~aios_core.cores.llamacpp_head.HiddenTap`
is a Python function, so each call takes the GIL; when the kernel's loop (or
an agent framework in the same process) runs Python while the engine decodes,
every call waits for it, and a step of 15 or 16 decoding rows took 12-25 %
longer (``python -m aios.bench.studies.ubatch --tap --busy``). :class:`NativeTap`
does the same work in ``llamacpp_native_tap.c``: it wants only ``result_norm``,
copies its rows into a buffer that Python reads after ``llama_decode`` returns,
and stops the graph there when asked.

The C file is compiled on first use (:mod:`aios_core.cores.native_library`:
the system's C compiler, the user cache, loaded only if nobody else could
have written it). Without a compiler, or with ``AIOS_NATIVE_TAP=0``,
:func:`native_tap` returns None and the head uses the Python tap; the load-time
check of the head (its picks against llama.cpp's) covers either.
"""

from __future__ import annotations

import ctypes
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from aios_core.cores.llamacpp_head import TENSOR_DATA_OFFSET, TENSOR_NAME_OFFSET, TENSOR_NB_OFFSET, TENSOR_NE_OFFSET
from aios_core.cores.native_library import compiled_library

__all__ = ["NativeTap", "native_tap", "native_tap_library"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_suffix(".c")
#: the environment variable that turns the C tap off (``0``): the Python tap is used
DISABLE_ENV = "AIOS_NATIVE_TAP"


class _TapState(ctypes.Structure):
    """``aios_native_tap`` of the C file, field for field."""

    _fields_ = [
        ("active", ctypes.c_int32),
        ("stop", ctypes.c_int32),
        ("n_embd", ctypes.c_int64),
        ("capacity", ctypes.c_int64),
        ("buffer", ctypes.c_void_p),
        ("ne_offset", ctypes.c_int64),
        ("nb_offset", ctypes.c_int64),
        ("data_offset", ctypes.c_int64),
        ("name_offset", ctypes.c_int64),
        ("rows", ctypes.c_int64),
        ("refused", ctypes.c_int32),
        ("calls", ctypes.c_int64),
    ]


@lru_cache(maxsize=1)
def native_tap_library() -> Any:
    """The compiled C tap (a ``ctypes.CDLL``), compiled once per source and machine; None when it cannot be had
    (turned off, no compiler, a failed compile: logged), and the Python tap is used."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        log.info("$%s=0: the greedy head's tap runs in Python", DISABLE_ENV)
        return None
    lib = compiled_library(SOURCE, "aios_native_tap_on_node",
                           "the greedy head's tap runs in Python (a little slower when the kernel's loop is busy beside the engine)")
    if lib is not None:
        lib.aios_native_tap_on_node.restype = ctypes.c_bool
    return lib


class NativeTap:
    """:class:`~aios_core.cores.llamacpp_head.HiddenTap`'s interface over the C callback: ``callback`` and
    ``user_data`` go into the context's ``cb_eval`` and ``cb_eval_user_data``; this object (its state and
    buffer) must outlive the context."""

    def __init__(self, library: Any, n_embd: int, capacity: int) -> None:
        import llama_cpp as L

        self.n_embd = n_embd
        self._buffer = np.empty((capacity, n_embd), dtype=np.float32)
        self._state = _TapState(
            n_embd=n_embd, capacity=capacity, buffer=self._buffer.ctypes.data,
            ne_offset=TENSOR_NE_OFFSET, nb_offset=TENSOR_NB_OFFSET, data_offset=TENSOR_DATA_OFFSET, name_offset=TENSOR_NAME_OFFSET,
        )
        self.user_data = ctypes.cast(ctypes.pointer(self._state), ctypes.c_void_p)
        address = ctypes.cast(library.aios_native_tap_on_node, ctypes.c_void_p).value
        if not address:
            raise OSError("the native tap library has no aios_native_tap_on_node")
        self.callback = L.ggml_backend_sched_eval_callback(address)
        self._library = library  # the function lives in it

    @property
    def active(self) -> bool:
        """Take the hidden states of the coming llama_decode."""
        return bool(self._state.active)

    @active.setter
    def active(self, value: bool) -> None:
        self._state.active = int(value)

    @property
    def stop(self) -> bool:
        """And stop each micro-batch's graph after them (no output layer)."""
        return bool(self._state.stop)

    @stop.setter
    def stop(self, value: bool) -> None:
        self._state.stop = int(value)

    @property
    def calls(self) -> int:
        """Every call ggml made to the callback."""
        return int(self._state.calls)

    def take(self) -> np.ndarray:
        """The hidden states of the output rows since the last take, in batch order (n_outputs, n_embd); none when a
        micro-batch's node was not one the tap reads (the caller then uses llama.cpp's logits)."""
        rows, refused = int(self._state.rows), bool(self._state.refused)
        self._state.rows, self._state.refused = 0, 0
        if refused or not rows:
            return np.empty((0, self.n_embd), dtype=np.float32)
        return self._buffer[:rows].copy()


def native_tap(n_embd: int, capacity: int) -> NativeTap | None:
    """A C tap for a model of width ``n_embd`` whose decodes have at most ``capacity`` output rows, or None (see
    :func:`native_tap_library`)."""
    library = native_tap_library()
    return NativeTap(library, n_embd, capacity) if library is not None else None
