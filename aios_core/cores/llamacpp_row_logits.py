"""llama.cpp's output layer computed one row at a time, for the decodes whose row count its batched kernel handles slowly.

Gemma 3's output layer is a 262,144 by 640 Q8_0 matrix (its token embedding),
more than half of the model's weights. ggml computes it for one logits row with
its one-row kernel (``vec_dot``), and from two rows on hands the product to
llamafile's tinyBLAS, whose tiles suit row counts that are multiples of four.
Measured on an AMD EPYC (one thread, AVX2 build), a decode of 12 sequences took
13.0 ms for one decoding row, 43.9 for 2, 70.5 for 3 and 56.7 for 4
(``python -m aios.bench.studies.rows --row-pass``, docs/benchmarks.md): two
sequences decoding together made fewer tokens a second than one alone.

:class:`RowLogits` computes every row's logits with ggml's own one-row kernel
instead, in C (``llamacpp_row_logits.c``, compiled on first use by
:mod:`aios_core.cores.native_library`): the hidden states quantized by ggml's
``from_float``, each token's dot product by ggml's ``vec_dot`` (both from
``ggml_get_type_traits_cpu``), each token's weights read once for all rows, the
vocabulary split over the core's threads. A logit is the one llama.cpp computes,
bit for bit (the same kernel on the same quantized activations; tinyBLAS sums
each block in the same order), so any sampler may read them, not only greedy
ones. A decode with it grows by about 9 ms a row, so it pays for some row counts only: with
it the same decodes took 13.1, 19.1, 28.4 and 35.8 ms, and 73.8 against 69.9
without it at 8 rows.

Which row counts it takes is measured when the core loads
(:meth:`aios_core.cores.llamacpp_head.OutputHead.build`): for each count up to
:data:`MEASURED_ROWS`, llama.cpp's output layer (a decode with logits, less one
stopped before the output layer) against this pass on the same hidden rows, whose
picks must be llama.cpp's. A count is taken where this pass is clearly faster
(:data:`GAIN`). So a CPU or a build where llama.cpp's batched kernel has no such
dips, or more threads make it faster, gets no row counts, and llama.cpp computes
every output layer, as before.
"""

from __future__ import annotations

import ctypes
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from aios_core.cores.native_library import compiled_library

__all__ = ["GAIN", "MEASURED_ROWS", "RowLogits", "ggml_q8_0_kernels", "row_logits_for", "row_logits_library"]

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_suffix(".c")
#: row counts measured at load (1 to this): a decoding step's logits rows are its sequences plus guesses, and
#: from 8 rows on tinyBLAS's four-row tiles were as fast as this pass
MEASURED_ROWS = 16
#: this pass must take at most this share of llama.cpp's time for a row count to be taken (a margin over one
#: timing each at load)
GAIN = 0.8
#: ggml's type id of Q8_0, and a Q8_0 block: a float16 scale and 32 int8 values
_GGML_TYPE_Q8_0 = 8
_Q8_0_BLOCK_BYTES = 34
_Q8_0_BLOCK = 32


class _CpuTraits(ctypes.Structure):
    """``struct ggml_type_traits_cpu`` (ggml-cpu.h), field for field."""

    _fields_ = [
        ("from_float", ctypes.c_void_p),
        ("vec_dot", ctypes.c_void_p),
        ("vec_dot_type", ctypes.c_int),
        ("nrows", ctypes.c_int64),
    ]


@lru_cache(maxsize=1)
def ggml_q8_0_kernels() -> tuple[int, int] | None:
    """The addresses of ggml's Q8_0 ``vec_dot`` and the ``from_float`` that quantizes its activations, from the
    ggml CPU library llama-cpp-python loaded; None if it has none or they are not one-row Q8_0 kernels."""
    from aios_core.cores.llamacpp_runtime import ggml_library

    try:
        cpu = ggml_library("ggml-cpu")
        cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_CpuTraits)
        cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
        cpu.ggml_cpu_init()  # fills the traits table (llama.cpp's backend init did already; it runs once)
    except (OSError, AttributeError) as exc:
        log.info("cannot read ggml's CPU kernels (%s): llama.cpp computes every output layer", exc)
        return None
    q8 = cpu.ggml_get_type_traits_cpu(_GGML_TYPE_Q8_0).contents
    if q8.vec_dot_type != _GGML_TYPE_Q8_0 or q8.nrows != 1 or not q8.vec_dot:
        log.info("ggml's Q8_0 product here is not a one-row Q8_0 kernel: llama.cpp computes every output layer")
        return None
    # its activations' type is Q8_0 itself (checked above): the same traits quantize them
    return (q8.vec_dot, q8.from_float) if q8.from_float else None


@lru_cache(maxsize=1)
def row_logits_library() -> Any:
    """The compiled row pass (a ``ctypes.CDLL``), or None (no compiler, a failed compile: logged)."""
    lib = compiled_library(SOURCE, "aios_row_logits", "llama.cpp computes every output layer", flags=("-pthread",))
    if lib is not None:
        lib.aios_row_logits.restype = ctypes.c_int
        lib.aios_row_logits.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    return lib


class RowLogits:
    """The logits of rows of hidden states through a Q8_0 output matrix, as llama.cpp's one-row kernel computes them."""

    def __init__(self, blocks: np.ndarray, library: Any, kernels: tuple[int, int], *, threads: int, max_rows: int) -> None:
        """``blocks``: the output matrix as GGUF stores Q8_0, uint8 (n_vocab, n_embd / 32, 34), C-contiguous (a view of
        the model file). ``max_rows``: the most rows one call takes (its buffers are made once)."""
        if blocks.dtype != np.uint8 or blocks.ndim != 3 or blocks.shape[2] != _Q8_0_BLOCK_BYTES or not blocks.flags.c_contiguous:
            raise ValueError(f"not a Q8_0 matrix in GGUF's layout: {blocks.dtype} {blocks.shape}")
        self._blocks = blocks
        self._library = library
        self._vec_dot, self._from_float = kernels
        self.threads = threads
        self.n_vocab, n_blocks = blocks.shape[:2]
        self.n_embd = n_blocks * _Q8_0_BLOCK
        self._row_bytes = n_blocks * _Q8_0_BLOCK_BYTES
        self.max_rows = max_rows
        self._acts = np.empty(max_rows * self._row_bytes, dtype=np.uint8)
        self._out = np.empty((max_rows, self.n_vocab), dtype=np.float32)
        #: the row counts this pass takes (measured at load; none until then)
        self.counts: frozenset[int] = frozenset()
        #: llama.cpp's own output layer, seconds, at each of those counts (measured with them): what a step the pass
        #: took would have cost llama.cpp, for the guess rule, which prices llama.cpp's steps
        self.llama_seconds: dict[int, float] = {}

    def takes(self, n_rows: int) -> bool:
        """Whether a decode with ``n_rows`` logits rows is this pass's."""
        return n_rows in self.counts

    def compute(self, hidden: np.ndarray) -> np.ndarray:
        """The logits (n, n_vocab) of ``hidden`` (n, n_embd) float32: a view of this pass's buffer, valid until the
        next call."""
        n = len(hidden)
        if hidden.ndim != 2 or hidden.shape[1] != self.n_embd or not 0 < n <= self.max_rows:
            raise ValueError(f"hidden states {hidden.shape} for a pass of width {self.n_embd} and at most {self.max_rows} rows")
        rows = np.ascontiguousarray(hidden, dtype=np.float32)
        self._library.aios_row_logits(
            self._vec_dot, self._from_float, self._blocks.ctypes.data, self.n_vocab, self._row_bytes, self.n_embd,
            rows.ctypes.data, n, self._acts.ctypes.data, self._out.ctypes.data, self.threads,
        )
        return self._out[:n]


def row_logits_for(blocks: np.ndarray, *, threads: int, max_rows: int) -> RowLogits | None:
    """A row pass over ``blocks`` (measured and checked later, at load), or None where it cannot run (logged)."""
    kernels = ggml_q8_0_kernels()
    library = row_logits_library() if kernels is not None else None
    if kernels is None or library is None:
        return None
    return RowLogits(blocks, library, kernels, threads=threads, max_rows=max_rows)
