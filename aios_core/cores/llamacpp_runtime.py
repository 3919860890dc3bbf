"""Process-wide llama.cpp setup the llama.cpp core stands on: backend, log routing, the engine thread, model loading.

Everything here exists once per process, whatever the number of cores:

* ggml's log lines go to Python ``logging`` (``aios_core.cores.llamacpp.ggml``)
  instead of stderr, and the latest error lines are kept so that a failed
  model load can quote llama.cpp's own reason in its :class:`ConfigError`;
* every llama.cpp compute call runs in one engine thread
  (:func:`engine_executor`): ggml's worker threads spin while they wait, so two
  engines stepping at once on the same CPUs slow each other down by far more
  than 2x; while it exists, the interpreter's GIL switch interval is at most
  :data:`ENGINE_SWITCH_INTERVAL`;
* :class:`LlamaMemory` is the handful of KV-cell operations the prefix cache
  and the core apply to llama.cpp's unified KV cache (drop a slot's cells,
  share cells between slots), so those callers hold no raw handle.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import llama_cpp as L

from aios_core.errors import ConfigError

log = logging.getLogger(__name__)
#: the logger ggml's lines go to (kept under the core's name: users filter on it)
ggml_log = logging.getLogger("aios_core.cores.llamacpp.ggml")

# ggml log levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the previous line.
# Loading a model logs ~100 info lines and a few harmless warnings; keep them below INFO.
_GGML_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.WARNING}
_last_ggml_level = [logging.DEBUG]
#: llama.cpp's latest error lines, quoted in the exception when a load fails
_recent_ggml_errors: deque[str] = deque(maxlen=4)


@L.llama_log_callback
def _ggml_log_callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    py_level = _GGML_LEVELS.get(level, _last_ggml_level[0])
    _last_ggml_level[0] = py_level
    if py_level >= logging.WARNING or ggml_log.isEnabledFor(py_level):
        message = text.decode("utf-8", errors="replace").rstrip()
        if not message:
            return
        if py_level >= logging.WARNING:
            _recent_ggml_errors.append(message)
            py_level = logging.INFO  # the caller gets these in a typed error; keep them out of WARNING logs
        ggml_log.log(py_level, "%s", message)


_setup_lock = threading.Lock()
_backend_ready = False
_executor: ThreadPoolExecutor | None = None


def init_backend() -> None:
    """Route ggml's logs and initialise llama.cpp's backend (once per process)."""
    global _backend_ready
    with _setup_lock:
        if not _backend_ready:
            L.llama_log_set(_ggml_log_callback, ctypes.c_void_p(0))
            L.llama_backend_init()
            _backend_ready = True


#: the GIL switch interval while an engine thread exists (Python's default is 5 ms): see :func:`engine_executor`
ENGINE_SWITCH_INTERVAL = 0.0005


def shorten_switch_interval() -> None:
    """The process's GIL switch interval at most :data:`ENGINE_SWITCH_INTERVAL` (see :func:`engine_executor`)."""
    if sys.getswitchinterval() > ENGINE_SWITCH_INTERVAL:
        log.debug("GIL switch interval %.4f s -> %.4f s for the engine thread", sys.getswitchinterval(), ENGINE_SWITCH_INTERVAL)
        sys.setswitchinterval(ENGINE_SWITCH_INTERVAL)


def engine_executor() -> ThreadPoolExecutor:
    """The single thread that runs every llama.cpp compute call in this process.

    ggml's worker threads spin while they wait for work; two engines stepping
    at once on the same cores slow each other down by far more than 2x, so all
    llama.cpp cores of a process share this one thread and take turns.

    The engine thread gives up the GIL in every llama.cpp, torch and large numpy
    call of a step, and takes it back after. When agents run in the same process
    (a patched framework), the event loop's thread holds the GIL most of the
    time, and each take can wait for a whole switch interval; so the first
    engine shortens the process's interval to :data:`ENGINE_SWITCH_INTERVAL`
    (it never lengthens it).
    """
    global _executor
    with _setup_lock:
        if _executor is None:
            shorten_switch_interval()
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llamacpp-engine")
        return _executor


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyper-threads of one core count once)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def ggml_library(stem: str) -> ctypes.CDLL:
    """One of the ggml libraries llama-cpp-python ships (``ggml-base``, ``ggml-cpu``...), as its own loader opened it:
    the same handle, so its state (the CPU backend's tables) is the one llama.cpp uses. OSError if there is none."""
    lib_dir = Path(L.__file__).parent / "lib"
    candidates = sorted(lib_dir.glob(f"lib{stem}*")) + sorted(lib_dir.glob(f"{stem}*"))
    if not candidates:
        raise OSError(f"no {stem} library in {lib_dir}")
    return ctypes.CDLL(str(candidates[0]))


def load_model(path: Path) -> Any:
    """Load a GGUF model (engine thread); a failure is a ConfigError quoting llama.cpp's reason."""
    init_backend()
    params = L.llama_model_default_params()
    _recent_ggml_errors.clear()
    model = L.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        reason = "; ".join(_recent_ggml_errors) or "no reason logged"
        raise ConfigError(
            f"llama.cpp could not load {str(path)!r} (llama.cpp: {reason}); "
            "give model_path= a complete GGUF file of an architecture this llama.cpp supports",
            model_path=str(path),
        )
    return model


def model_meta(model: Any, key: str) -> str | None:
    """A string from the GGUF's metadata (e.g. ``general.architecture``), None when absent."""
    buf = ctypes.create_string_buffer(256)
    n = L.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    if n < 0:
        return None
    if n >= len(buf):
        buf = ctypes.create_string_buffer(n + 1)
        L.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", errors="replace")


def special_text(vocab: Any, token: int) -> str:
    """The text of a special token (BOS, EOS) as a chat template writes it."""
    buf = ctypes.create_string_buffer(64)
    n = L.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")


class LlamaMemory:
    """The KV-cell operations applied to one context's unified KV cache (between steps, or in the engine thread).

    ``handle`` is None while the model is not loaded; the operations are then
    no-ops, so bookkeeping can be cleared before or after the context is freed.
    """

    def __init__(self) -> None:
        self.handle: Any = None
        #: the llama_context (state copies go through it)
        self.ctx: Any = None

    def save(self, slot: int) -> bytearray | None:
        """A copy of the cells tagged with ``slot`` (positions, keys, values), as llama.cpp serialises one sequence.

        llama.cpp writes straight into the buffer returned: one pass over ~18 KB per token of Gemma 3 270M.
        None when the slot holds nothing or llama.cpp could not copy it.
        """
        if self.ctx is None:
            return None
        size = L.llama_state_seq_get_size(self.ctx, slot)
        if size <= 0:
            return None
        data = bytearray(size)
        n = L.llama_state_seq_get_data(self.ctx, (ctypes.c_uint8 * size).from_buffer(data), size, slot)
        if n == 0:
            return None
        del data[n:]
        return data

    def load(self, data: bytes | bytearray, slot: int, keep: int | None = None) -> bool:
        """Write a copy made by :meth:`save` into ``slot`` (its cells are replaced), keeping positions below ``keep``.

        False when llama.cpp could not place the cells (not enough free cells); the slot is then empty.
        """
        if self.ctx is None or not data:
            return False
        src: Any
        if isinstance(data, bytes):  # read back from disk after a spill
            src = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))
        else:
            src = (ctypes.c_uint8 * len(data)).from_buffer(data)
        if L.llama_state_seq_set_data(self.ctx, src, len(data), slot) == 0:
            self.drop(slot)
            return False
        if keep is not None:
            L.llama_memory_seq_rm(self.handle, slot, keep, -1)
        return True

    def drop(self, slot: int) -> None:
        """Forget every cell tagged with sequence ``slot`` (cells other slots share stay)."""
        if self.handle is not None:
            L.llama_memory_seq_rm(self.handle, slot, -1, -1)

    def cut(self, slot: int, keep: int) -> None:
        """Forget sequence ``slot``'s cells at positions ``keep`` and beyond (a guessed token the model did not pick)."""
        if self.handle is not None:
            L.llama_memory_seq_rm(self.handle, slot, keep, -1)

    def share(self, src: int, dst: int, n: int) -> None:
        """Tag the first ``n`` cells of sequence ``src`` with ``dst`` too (shared, not copied)."""
        if self.handle is not None:
            L.llama_memory_seq_cp(self.handle, src, dst, 0, n)

    def clear(self) -> None:
        """Empty the whole KV cache."""
        if self.handle is not None:
            L.llama_memory_clear(self.handle, True)
