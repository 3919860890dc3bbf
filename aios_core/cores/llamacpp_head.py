"""The output layer of greedy rows, computed outside llama.cpp: a fast int8 pass, then the few close tokens exactly.

Gemma 3's output layer is its token embedding, 262,144 tokens by 640 (Q8_0 in
the default GGUF). llama.cpp computes it row by row with int8 dot products, about
6.5 ms a logits row on one thread here, nearly half of a decoding row (``python -m
aios.bench.studies.rows``). A greedy row needs only the argmax of those logits, and
that can be had for much less:

1. The rows' final hidden states (the graph node ``result_norm``) are taken from
   llama.cpp's graph as it runs (an eval callback), and the graph is stopped
   there, so llama.cpp never runs its output layer for that micro-batch.
2. Each row is quantized as ggml quantizes it for a Q8_0 matrix product
   (:func:`quantize_q8_0`), so that the logits aimed at are those llama.cpp
   would compute.
3. One int8 matrix product gives every logit within a known bound. At load each
   token's row of weights is quantized again with one scale for the whole row
   (instead of one per block of 32) and packed for oneDNN (through torch, which
   picks the CPU's int8 units: VNNI, AMX); each hidden row is quantized the same
   way before the product. The integer sums are exact, and the two
   requantization errors are known: the weights' per token at load, the row's
   at each call. Cauchy-Schwarz turns them into a worst-case bound per row, one
   for every token first, then each close token's own.
4. Only the tokens whose approximate logit could still be the largest are
   computed exactly, from the Q8_0 int8 values and scales (integer dot products
   per block, scaled and summed in float64), and the largest of them is the pick.

So the pick is llama.cpp's up to its own float32 rounding (the order in which
it sums 20 blocks), which already differs between its own kernels for one row
and for several; the bound is worst-case, never a guess. The int8 pass reads
the 168 MB of packed weights whatever the number of rows, about 13 ms a step
here (a bf16 pass, the first version, read 335 MB in 35-46 ms), so it pays from
one row on (``LlamaCppCore(fast_head_rows=...)``); in a decode where a row
samples or follows a grammar, llama.cpp's own output layer runs.

The pass is checked at load against integer products computed in numpy, with
rows built to overflow 16-bit partial sums (the saturating AVX2 instructions
some int8 kernels use): a pass that is not exact is not used. It is timed at
load too: where oneDNN has no fast int8 kernel for the CPU (seen on an AMD EPYC
with AVX-512 VNNI: seconds a row, hundreds of times the time above), one row of the
pass takes longer than llama.cpp's whole output layer for the probe's rows,
and the head is not used (:class:`SlowPass`); so is a torch without oneDNN's
int8 linear (:class:`NoInt8Linear`). Only a Q8_0 output matrix is read (the
default model's); any other type leaves the output layer to llama.cpp
(:func:`output_matrix` returns None). Where the head is not used, the row pass
(:mod:`aios_core.cores.llamacpp_row_logits`, through :class:`OutputHead`) may
still take the row counts llama.cpp's batched kernel is slow at.
"""

from __future__ import annotations

import ctypes
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from aios_core.cores.llamacpp_native_tap import NativeTap
    from aios_core.cores.llamacpp_row_logits import RowLogits

log = logging.getLogger(__name__)

#: the graph node llama.cpp names the final (normed) hidden states of the output rows, in every architecture
HIDDEN_NODE = b"result_norm"
#: ggml's Q8_0 block: 32 int8 values under one float16 scale
Q8_0_BLOCK = 32

# struct ggml_tensor (ggml.h): type, buffer, ne[4], nb[4], op, op_params[16], flags, src[10], view_src,
# view_offs, data, name[64] on a 64-bit platform. The tap takes nothing from a tensor whose shape or strides do
# not fit, and the head is checked against llama.cpp at load (:meth:`OutputHead.build`).
TENSOR_NE_OFFSET = 16
TENSOR_NB_OFFSET = 48
TENSOR_DATA_OFFSET = 248
TENSOR_NAME_OFFSET = 256

#: the int8 pass's output is scale * integer sum in float32: within two roundings (2 * 2**-24) of it, with room
_OUT_REL = 2.0**-22
#: float32's rounding in the pass, the float dimensions' scaling and their sum (at most 64 terms: 66 * 2**-24)
_ROUND_REL = 2.0**-17
#: dimensions of the hidden states multiplied in float32 (the largest ones, found at load)
FLOAT_DIMS = 32
#: the bound's margin over the rounding in the norms and the requantization errors (float32's at load: a few parts
#: in 10**5)
_MARGIN = 1.001
#: rows of the output matrix requantized at once at load (bounds the float32 scratch to 42 MB a copy)
_LOAD_CHUNK = 16384
#: tokens whose int8 products are checked against numpy at load (besides the saturation rows' own tokens)
_CHECK_TOKENS = 4096


def quantize_q8_0(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of float32 as ggml's ``quantize_row_q8_0`` makes them: per block of 32, scale = max|x| / 127 (kept
    as float16), values = round-half-even(x * (127 / max|x|)). Returns (int8 values (n, k), float32 scales (n, k/32))."""
    n, k = x.shape
    blocks = x.astype(np.float32, copy=False).reshape(n, k // Q8_0_BLOCK, Q8_0_BLOCK)
    amax = np.abs(blocks).max(axis=2)
    with np.errstate(divide="ignore"):
        inv = np.where(amax != 0, np.float32(127.0) / amax, np.float32(0.0)).astype(np.float32)
    q = np.rint(blocks * inv[:, :, None]).astype(np.int8)
    scale = (amax / np.float32(127.0)).astype(np.float16).astype(np.float32)
    return q.reshape(n, k), scale


def requantize_rows(x: Any) -> tuple[Any, Any, Any]:
    """Rows of a float torch tensor as int8 under one scale each (max|x| / 127 in float32; 0 for a zero row).
    Returns (int8 values, float32 scales, errors ``x - scale * values`` in x's dtype: exact but for its rounding)."""
    import torch

    scale = (x.abs().amax(dim=1) / 127).to(torch.float32)
    safe = torch.where(scale > 0, scale, 1.0).to(x.dtype)
    values = torch.round(x / safe[:, None]).clamp_(-127, 127)
    return values.to(torch.int8), scale, x - scale.to(x.dtype)[:, None] * values


class InexactPass(RuntimeError):
    """The int8 matrix product disagreed with exact integer arithmetic (a saturating kernel, say)."""


class NoInt8Linear(RuntimeError):
    """torch, or its oneDNN int8 linear, is missing."""


class SlowPass(RuntimeError):
    """The int8 matrix product is slower than the output layer it would stand in for (no fast kernel for this CPU)."""


def largest_dims(hidden: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` dimensions where rows of hidden states are largest (by |value| over the row's RMS, summed):
    transformers keep a few such dimensions in every row, and an int8 pass with one scale per row loses the
    others' precision to them."""
    rms = np.sqrt((hidden.astype(np.float64) ** 2).mean(axis=1, keepdims=True))
    weight = (np.abs(hidden) / np.where(rms > 0, rms, 1.0)).sum(axis=0)
    return np.sort(np.argsort(-weight, kind="stable")[:count])


class GreedyHead:
    """Argmax of a Q8_0 output layer for rows of hidden states (see the module docstring)."""

    def __init__(self, blocks: np.ndarray, float_dims: np.ndarray | None = None, *, threads: int = 1,
                 max_pass_seconds: float | None = None) -> None:
        """``blocks``: the output matrix as GGUF stores Q8_0, uint8 (n_vocab, n_embd / 32, 34): per block a float16
        scale and 32 int8 values (a view of the model file is enough: rows are read from it only when checked).
        ``float_dims``: dimensions multiplied in float32 instead of int8 (:func:`largest_dims`; none by default).
        ``threads``: torch's threads (the core's own count: the head runs in the engine thread).
        ``max_pass_seconds``: the longest one row of the int8 pass may take (None: not timed).
        Raises :class:`InexactPass` when this CPU's int8 product is not exact, :class:`SlowPass` when it is slower
        than ``max_pass_seconds``, :class:`NoInt8Linear` without torch's oneDNN int8 linear, and whatever torch
        raises."""
        try:
            import torch  # a heavy import, needed only when the head is used
        except ImportError as exc:
            raise NoInt8Linear(f"no torch ({exc})") from exc
        if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.onednn, "qlinear_pointwise"):
            raise NoInt8Linear("this torch has no oneDNN int8 linear")

        torch.set_num_threads(threads)
        self._torch = torch
        self._blocks = blocks
        self.n_vocab, n_blocks = blocks.shape[:2]
        self.n_embd = n_blocks * Q8_0_BLOCK
        self._float_dims = np.zeros(0, dtype=np.int64) if float_dims is None else np.asarray(float_dims, dtype=np.int64)
        self._int_dims = np.setdiff1d(np.arange(self.n_embd), self._float_dims)
        values = np.empty((self.n_vocab, len(self._int_dims)), dtype=np.int8)
        scales = np.empty(self.n_vocab, dtype=np.float32)
        float_weights = np.empty((self.n_vocab, len(self._float_dims)), dtype=np.float32)
        #: the bound's weight side, per token: the requantization error's norm, the pass's own weights' norm and
        #: the float dimensions' norm
        self._err_norm = np.empty(self.n_vocab, dtype=np.float64)
        self._pass_norm = np.empty(self.n_vocab, dtype=np.float64)
        self._float_norm = np.empty(self.n_vocab, dtype=np.float64)
        float_index, int_index = torch.from_numpy(self._float_dims), torch.from_numpy(self._int_dims)
        for lo in range(0, self.n_vocab, _LOAD_CHUNK):
            hi = min(lo + _LOAD_CHUNK, self.n_vocab)
            q, s = self._rows(np.arange(lo, hi))
            # the product of a float16 scale and an int8 value is exact in float32; the errors and norms below are
            # float32's: within a few parts in 10**5 of exact (_MARGIN), and an error that rounds to nothing is
            # below 2**-23 of the row's norm, inside the pass's own rounding term (_ROUND_REL)
            w = (torch.from_numpy(q).float() * torch.from_numpy(s)[:, :, None]).reshape(hi - lo, self.n_embd)
            floats = w[:, float_index]
            float_weights[lo:hi] = floats.numpy()
            self._float_norm[lo:hi] = floats.norm(dim=1).numpy()
            v, scale, err = requantize_rows(w[:, int_index])
            values[lo:hi], scales[lo:hi] = v.numpy(), scale.numpy()
            self._err_norm[lo:hi] = err.norm(dim=1).numpy()
            self._pass_norm[lo:hi] = (scale * v.float().norm(dim=1)).numpy()
        self._max_err_norm = float(self._err_norm.max())
        self._max_pass_norm = float(self._pass_norm.max())
        self._max_float_norm = float(self._float_norm.max())
        self._scales = torch.from_numpy(scales)
        self._zero_points = torch.zeros(self.n_vocab, dtype=torch.int64)
        self._packed = torch.ops.onednn.qlinear_prepack(torch.from_numpy(values), None)
        self._float_weights_t = torch.from_numpy(np.ascontiguousarray(float_weights.T))  # (dims, n_vocab): a faster addmm
        if max_pass_seconds is not None:
            # before the exactness check, which runs eight rows: a slow pass is refused after two
            seconds = self.one_row_seconds()
            if seconds > max_pass_seconds:
                raise SlowPass(f"one row of its int8 pass takes {seconds * 1e3:.0f} ms, more than llama.cpp's output layer for "
                               f"the probe's rows ({max_pass_seconds * 1e3:.0f} ms): oneDNN has no fast int8 kernel for this CPU")
        self._check_pass(values, scales)
        #: tokens computed exactly in the last call, per row (for the tests and the core's counters)
        self.last_close: list[int] = []

    def _rows(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int8 values (t, n_blocks, 32) and float32 scales (t, n_blocks) of some tokens' rows."""
        raw = np.ascontiguousarray(self._blocks[tokens])
        return raw[:, :, 2:].view(np.int8), raw[:, :, :2].copy().view(np.float16)[:, :, 0].astype(np.float32)

    def int8_pass(self, rows: np.ndarray) -> Any:
        """``scale[v] * (rows @ values[v])`` for every token ``v`` (the int8 dimensions), a float32 tensor
        (n, n_vocab), from int8 ``rows`` (n, int8 dimensions)."""
        torch = self._torch
        return torch.ops.onednn.qlinear_pointwise(
            torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int8)), 1.0, 0, self._packed, self._scales,
            self._zero_points, None, 1.0, 0, torch.float32, "none", [], "",
        )

    def one_row_seconds(self) -> float:
        """Seconds one row of the int8 pass takes: the faster of two (the first may pay for setting up)."""
        row = np.ones((1, len(self._int_dims)), dtype=np.int8)
        times = []
        for _ in range(2):
            started = time.perf_counter()
            self.int8_pass(row)
            times.append(time.perf_counter() - started)
        return min(times)

    def _check_pass(self, values: np.ndarray, scales: np.ndarray) -> None:
        """The pass against numpy's integer products on sampled tokens: random rows, and for some tokens a row of
        +-127 with their weights' signs (the largest sums, which overflow 16-bit partial sums)."""
        rng = np.random.default_rng(0)
        stride = max(1, self.n_vocab // _CHECK_TOKENS)
        strongest = stride * np.argsort(-np.abs(values[::stride].astype(np.int32)).sum(axis=1))[:4]
        tokens = np.unique(np.concatenate([strongest, rng.integers(0, self.n_vocab, min(_CHECK_TOKENS, self.n_vocab))]))
        signs = np.where(values[strongest] >= 0, 127, -127).astype(np.int8)
        rows = np.concatenate([signs, rng.integers(-127, 128, (4, values.shape[1])).astype(np.int8)])
        got = self.int8_pass(rows).numpy()[:, tokens].astype(np.float64)
        want = (rows.astype(np.int64) @ values[tokens].astype(np.int64).T) * scales[tokens].astype(np.float64)
        if not (np.abs(got - want) <= _OUT_REL * np.abs(want)).all():
            worst = np.unravel_index(np.argmax(np.abs(got - want)), got.shape)
            raise InexactPass(f"the int8 pass gave {got[worst]} where the integer product is {want[worst]}")

    def argmax(self, hidden: np.ndarray, banned: list[np.ndarray | None] | None = None) -> np.ndarray:
        """The greedy pick of each row of ``hidden`` (n, n_embd) float32; ``banned[i]`` are tokens row ``i`` never picks."""
        torch = self._torch
        n = len(hidden)
        q, qscale = quantize_q8_0(hidden)
        n_blocks = self.n_embd // Q8_0_BLOCK
        # the activations llama.cpp multiplies (exact in float64), and their int8 dimensions requantized
        acts = (q.reshape(n, n_blocks, Q8_0_BLOCK).astype(np.float64) * qscale[:, :, None]).reshape(n, self.n_embd)
        rows_t, scale_t, err_t = requantize_rows(torch.from_numpy(acts[:, self._int_dims]))
        rows, row_scale, row_err = rows_t.numpy(), scale_t.numpy(), err_t.numpy()
        unit = np.where(row_scale > 0, row_scale, 1.0).astype(np.float64)
        # every logit in units of its row's scale: the int8 pass, plus the float dimensions (in place)
        floats = (acts[:, self._float_dims] / unit[:, None]).astype(np.float32)
        approx_t = self.int8_pass(rows)
        if len(self._float_dims):
            approx_t.addmm_(torch.from_numpy(floats), self._float_weights_t)
        approx = approx_t.numpy()
        if banned is not None:
            for r, tokens in enumerate(banned):
                if tokens is not None:
                    approx[r, np.asarray(tokens, dtype=np.int64)] = -np.inf
        # logit / unit = approx + (err . acts + scale * values . row_err) / unit + roundings (exactly), so by
        # Cauchy-Schwarz each token is within own_err of approx (the int8 dimensions' error norms, and float32's
        # rounding over the pass's and the float dimensions' sizes)
        act_side = np.sqrt((acts[:, self._int_dims] ** 2).sum(axis=1)) / unit
        row_side = np.sqrt((row_err**2).sum(axis=1)) / unit + _ROUND_REL * np.sqrt((rows.astype(np.float64) ** 2).sum(axis=1))
        float_side = _ROUND_REL * np.sqrt((floats.astype(np.float64) ** 2).sum(axis=1))

        def own_err(r: Any, tokens: np.ndarray) -> np.ndarray:
            return _MARGIN * (self._err_norm[tokens] * act_side[r] + self._pass_norm[tokens] * row_side[r]
                              + self._float_norm[tokens] * float_side[r])

        top_token = approx.argmax(axis=1)
        top = approx[np.arange(n), top_token].astype(np.float64)
        # first with the largest norms for every token: one threshold per row below the top token's lower bound
        every_err = _MARGIN * (self._max_err_norm * act_side + self._max_pass_norm * row_side + self._max_float_norm * float_side)
        threshold = top - own_err(np.arange(n), top_token) - every_err
        threshold = np.nextafter(threshold.astype(np.float32), np.float32(-np.inf))
        close_rows, close_tokens = np.divmod(np.flatnonzero(approx >= threshold[:, None]), self.n_vocab)  # 2-D nonzero is 7x slower
        # then each of those tokens' own bound: kept if it could reach the best lower bound of its row
        near = approx[close_rows, close_tokens].astype(np.float64)
        err = own_err(close_rows, close_tokens)
        best_low = np.full(n, -np.inf)
        np.maximum.at(best_low, close_rows, near - err)
        keep = near + err >= best_low[close_rows]
        close_rows, close_tokens = close_rows[keep], close_tokens[keep]
        exact = self.exact(q[close_rows], qscale[close_rows], close_tokens)
        # per row, the first (lowest) token of the largest exact logit: pairs come by row, then token
        best = np.full(n, -np.inf)
        np.maximum.at(best, close_rows, exact)
        first = np.flatnonzero(exact == best[close_rows])
        seen_rows, at = np.unique(close_rows[first], return_index=True)
        if len(seen_rows) != n:
            raise ValueError("a row of hidden states has no finite logit (NaN or every token banned)")
        self.last_close = np.bincount(close_rows, minlength=n).tolist()
        return close_tokens[first[at]].astype(np.int64)

    def exact(self, q: np.ndarray, qscale: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The logits of ``tokens[i]`` for quantized row ``q[i]`` (with its block scales ``qscale[i]``), as ggml's
        Q8_0 dot product defines them (integer dot products per block, times both scales, summed), in float64."""
        values, scales = self._rows(tokens)
        dots = np.einsum("tbj,tbj->tb", values.astype(np.int32), q.reshape(len(q), -1, Q8_0_BLOCK).astype(np.int32))
        return (dots * scales.astype(np.float64) * qscale.astype(np.float64)).sum(axis=1)


_GGML_TYPE_Q8_0 = 8


class _GGUFInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def _ggml_base() -> ctypes.CDLL:
    """The ggml library llama-cpp-python ships, for its GGUF reader (the Python ``gguf`` reader parses every
    vocabulary string first: seconds for Gemma's 262k tokens)."""
    from aios_core.cores.llamacpp_runtime import ggml_library

    lib = ggml_library("ggml-base")
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, _GGUFInitParams]
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    lib.gguf_find_tensor.restype = ctypes.c_int64
    lib.gguf_find_tensor.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    for name in ("gguf_get_tensor_offset", "gguf_get_tensor_size"):
        getattr(lib, name).restype = ctypes.c_size_t
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_get_tensor_type.restype = ctypes.c_int
    lib.gguf_get_tensor_type.argtypes = [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_get_data_offset.restype = ctypes.c_size_t
    lib.gguf_get_data_offset.argtypes = [ctypes.c_void_p]
    return lib


def _find_tensor(path: Path, names: tuple[bytes, ...]) -> tuple[int, int, int] | None:
    """(file offset, ggml type, bytes) of the first of ``names`` the GGUF holds, or None."""
    try:
        lib = _ggml_base()
    except OSError as exc:
        log.info("cannot read the GGUF's tensor table (%s)", exc)
        return None
    ctx = lib.gguf_init_from_file(str(path).encode(), _GGUFInitParams(True, None))
    if not ctx:
        return None
    try:
        for name in names:
            tid = lib.gguf_find_tensor(ctx, name)
            if tid >= 0:
                offset = lib.gguf_get_data_offset(ctx) + lib.gguf_get_tensor_offset(ctx, tid)
                return offset, lib.gguf_get_tensor_type(ctx, tid), lib.gguf_get_tensor_size(ctx, tid)
        return None
    finally:
        lib.gguf_free(ctx)


class HiddenTap:
    """llama.cpp's eval callback that copies out ``result_norm`` and, when asked, stops the graph there.

    One instance per context; its ``callback`` goes into ``llama_context_params.cb_eval`` and must outlive the
    context. ggml calls it for every graph node (``ask`` True: does the caller want this node?) and once more
    after computing a wanted node (``ask`` False: returning False stops the rest of the graph). While
    ``active`` is False it wants nothing, and llama.cpp computes as if it were not there.
    """

    #: what goes into the context's ``cb_eval_user_data`` (nothing: the callback is a bound method)
    user_data = None

    def __init__(self, n_embd: int) -> None:
        import llama_cpp as L

        self.n_embd = n_embd
        #: take the hidden states of the coming llama_decode
        self.active = False
        #: and stop each micro-batch's graph after them (no output layer)
        self.stop = False
        self._rows: list[np.ndarray] = []
        self.callback = L.ggml_backend_sched_eval_callback(self._on_node)

    def _on_node(self, tensor: int | None, ask: bool, user_data: Any) -> bool:
        if not self.active or not tensor:
            return False
        if ctypes.string_at(tensor + TENSOR_NAME_OFFSET, len(HIDDEN_NODE) + 1) != HIDDEN_NODE + b"\0":
            return False
        if ask:
            return True
        ne = (ctypes.c_int64 * 2).from_address(tensor + TENSOR_NE_OFFSET)
        nb = (ctypes.c_size_t * 2).from_address(tensor + TENSOR_NB_OFFSET)
        data = ctypes.c_void_p.from_address(tensor + TENSOR_DATA_OFFSET).value
        if ne[0] != self.n_embd or nb[0] != 4 or nb[1] != 4 * ne[0] or not data:
            # not the layout this module reads: take nothing, let llama.cpp finish (the caller falls back)
            self._rows.append(np.empty((0, self.n_embd), dtype=np.float32))
            return True
        self._rows.append(np.ctypeslib.as_array((ctypes.c_float * (ne[0] * ne[1])).from_address(data)).reshape(ne[1], ne[0]).copy())
        return not self.stop

    def take(self) -> np.ndarray:
        """The hidden states of the output rows since the last take, in batch order (n_outputs, n_embd)."""
        rows, self._rows = self._rows, []
        if not rows:
            return np.empty((0, self.n_embd), dtype=np.float32)
        return np.concatenate(rows)


#: greedy heads refused as slow in this process, by thread count and output matrix shape: the reason (the int8
#: pass's speed is the CPU's and torch's, and finding it costs a requantization of the whole matrix)
_SLOW_PASSES: dict[tuple[int, tuple[int, ...]], str] = {}
#: the row pass's row counts measured in this process, by (model file, threads, micro-batch size): llama.cpp's
#: output layer's seconds at each count the pass takes
_ROW_COUNTS: dict[tuple[str, int, int], dict[int, float]] = {}


class OutputHead:
    """Where the core's decodes meet its own output layers: which decodes they take, and what they give for them.

    Two passes stand in for llama.cpp's output layer, both fed by the tap (the graph stops at the final hidden
    states):

    * the greedy head (:class:`GreedyHead`) takes a decode when every row asked for a pick belongs to a greedy
      sequence without a grammar and at least ``min_rows`` rows compute logits (below that llama.cpp's own
      output layer is cheaper: its cost grows with the rows, the int8 pass's hardly does), and gives picks;
    * the row pass (:class:`~aios_core.cores.llamacpp_row_logits.RowLogits`) takes a decode whose count of
      logits rows it was measured faster at, whatever the rows' samplers, and gives llama.cpp's own logits.

    Both are built and checked by :meth:`build`, once the context exists.
    """

    def __init__(self, blocks: np.ndarray, tap: HiddenTap | NativeTap, min_rows: int, threads: int = 1,
                 rows: RowLogits | None = None) -> None:
        self.blocks = blocks
        self.tap = tap
        self.min_rows = min_rows
        self.threads = threads
        self.head: GreedyHead | None = None
        #: why the greedy head was not built, for the core's stats; None if it was
        self.refused: str | None = None
        #: the row pass, once measured at load (None: not built, or refused, see ``rows_refused``)
        self.rows: RowLogits | None = None
        self._row_pass = rows
        #: why the row pass is not used (no compiler, a disagreement, no row count where it is faster); None if it is
        self.rows_refused: str | None = None if rows is not None else "not available"
        #: the last row pass's logits, and each batch row's place among them (None: the last decode was not its)
        self._row_out: np.ndarray | None = None
        self._row_index: np.ndarray | None = None

    @property
    def used(self) -> bool:
        """Whether either pass takes any decode (else the context needs no tap)."""
        return self.head is not None or self.rows is not None

    def takes(self, n_rows: int, all_greedy: bool) -> bool:
        """Whether a decode with ``n_rows`` logits rows, all of greedy sequences, is the greedy head's."""
        return self.head is not None and all_greedy and n_rows >= self.min_rows

    def takes_rows(self, n_rows: int) -> bool:
        """Whether a decode with ``n_rows`` logits rows is the row pass's."""
        return self.rows is not None and self.rows.takes(n_rows)

    def arm(self, take: bool, *, stop: bool = True) -> bool:
        """Before a llama_decode: take its hidden states or not; ``stop``: and stop llama.cpp before its output
        layer (False at load, where llama.cpp's logits are compared with the passes')."""
        self.tap.take()  # nothing left over from a decode that failed
        self.tap.active, self.tap.stop = take, take and stop
        self._row_out = self._row_index = None
        return take

    def picks(self, logits_flags: np.ndarray, rows: list[int], banned: list[np.ndarray | None]) -> dict[int, int] | None:
        """After a llama_decode the greedy head took: the pick of each batch row in ``rows`` (rows with logits
        flags), or None if the hidden states did not come (then llama.cpp's graph was not stopped: its logits stand)."""
        assert self.head is not None
        hidden = self._hidden(logits_flags)
        if hidden is None:
            return None
        index = np.cumsum(logits_flags != 0) - 1  # a batch row's place among the output rows
        chosen = self.head.argmax(hidden[index[rows]], banned)
        return dict(zip(rows, (int(t) for t in chosen)))

    def row_logits(self, logits_flags: np.ndarray) -> bool:
        """After a llama_decode the row pass took: compute every output row's logits (read with :meth:`logits`);
        False if the hidden states did not come (llama.cpp's graph was not stopped: its logits stand)."""
        assert self.rows is not None
        hidden = self._hidden(logits_flags)
        if hidden is None:
            return False
        self._row_out = self.rows.compute(hidden)
        self._row_index = np.cumsum(logits_flags != 0) - 1
        return True

    def llama_output_seconds(self, n_rows: int) -> float:
        """What llama.cpp's own output layer took at load for ``n_rows`` logits rows (a count the row pass takes)."""
        assert self.rows is not None
        return self.rows.llama_seconds.get(n_rows, 0.0)

    def logits(self, row: int) -> np.ndarray | None:
        """Batch row ``row``'s logits from the row pass of the last decode, or None if the row pass did not take it."""
        if self._row_out is None or self._row_index is None:
            return None
        return self._row_out[self._row_index[row]]

    def _hidden(self, logits_flags: np.ndarray) -> np.ndarray | None:
        self.tap.active = self.tap.stop = False
        hidden = self.tap.take()
        n_outputs = int(np.count_nonzero(logits_flags))
        if len(hidden) != n_outputs:
            log.warning("took %d hidden rows for %d outputs; llama.cpp's logits are used", len(hidden), n_outputs)
            return None
        return hidden

    def build(self, ctx: Any, batch: Any, tokens: list[int], seq: int) -> bool:
        """At load: decode ``tokens`` in sequence ``seq`` (removed after) with llama.cpp's logits on every row, build
        the greedy head with the float dimensions of their hidden states and check that its pick for each row is
        llama.cpp's own argmax; then measure the row pass (:meth:`_measure_rows`). A layout of ggml's tensor this
        module does not read, a CPU whose int8 product is not exact or slower than llama.cpp's output layer for
        these rows, or any other disagreement is found here, before a request depends on it. True if either pass
        is used (the reasons for what is not in :attr:`refused` and :attr:`rows_refused`); False: llama.cpp
        computes every output layer."""
        import llama_cpp as L

        n = len(tokens)
        self._put(batch, tokens, seq)
        memory = L.llama_get_memory(ctx)
        try:
            # what llama.cpp's output layer costs for these rows: the decode with logits less the faster of two
            # decodes stopped before it (the first may pay for setting up; noise only makes the cost look larger)
            stopped = float("inf")
            for _ in range(2):
                rc, seconds, _ = self._decode(ctx, batch, n, stop=True)
                stopped = min(stopped, seconds)
                L.llama_memory_seq_rm(memory, seq, -1, -1)
                if rc != 0:
                    return self._refuse_all(f"llama_decode returned {rc} for the probe")
            rc, full, hidden = self._decode(ctx, batch, n, stop=False)
            if rc != 0 or len(hidden) != n:
                return self._refuse_all(f"it took {len(hidden)} hidden rows for {n} (llama_decode {rc})")
            n_vocab = self.blocks.shape[0]
            theirs = [int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)))) for i in range(n)]
            L.llama_memory_seq_rm(memory, seq, -1, -1)
            slow_key = (self.threads, tuple(self.blocks.shape))
            slow = _SLOW_PASSES.get(slow_key)
            try:
                if slow is not None:  # the CPU and torch found slow by an earlier load in this process: 11 s saved
                    raise SlowPass(slow)
                self.head = GreedyHead(self.blocks, largest_dims(hidden, FLOAT_DIMS), threads=self.threads,
                                       max_pass_seconds=max(full - stopped, 0.0))
            except SlowPass as exc:
                self.refused = _SLOW_PASSES[slow_key] = str(exc)
            except RuntimeError as exc:  # NoInt8Linear, InexactPass, or oneDNN refusing this CPU
                self.refused = str(exc)
            if self.head is not None and (ours := self.head.argmax(hidden).tolist()) != theirs:
                self.head = None
                self.refused = f"it picked {ours} where llama.cpp picks {theirs}"
            if self._row_pass is not None:
                self._measure_rows(ctx, batch, tokens, seq)
            if self.refused is not None:
                log.warning("the greedy output head cannot be used here (%s)%s", self.refused,
                            "" if self.used else "; llama.cpp computes every output layer")
            return self.used
        finally:
            L.llama_memory_seq_rm(memory, seq, -1, -1)

    def _measure_rows(self, ctx: Any, batch: Any, tokens: list[int], seq: int) -> None:
        """For 1 to :data:`MEASURED_ROWS` logits rows: llama.cpp's output layer (a decode of that many probe tokens
        with logits, less the same decode stopped before its output layer) against the row pass on the same hidden
        rows, whose picks must be llama.cpp's. The row pass takes the counts where it was clearly faster."""
        import llama_cpp as L

        from aios_core.cores.llamacpp_row_logits import GAIN, MEASURED_ROWS

        rows = self._row_pass
        assert rows is not None
        key = (str(getattr(self.blocks, "filename", id(self.blocks))), self.threads, int(L.llama_n_ubatch(ctx)))
        if key in _ROW_COUNTS:  # measured by an earlier load of this model in this process, with the same threads
            rows.llama_seconds = dict(_ROW_COUNTS[key])
            rows.counts = frozenset(rows.llama_seconds)
            if rows.counts:
                self.rows, self.rows_refused = rows, None
            else:
                self.rows_refused = "llama.cpp's output layer was as fast for every row count"
            return
        memory = L.llama_get_memory(ctx)
        n_vocab = self.blocks.shape[0]
        faster: dict[int, tuple[float, float]] = {}
        for k in range(1, min(len(tokens), MEASURED_ROWS, rows.max_rows) + 1):
            rc, stopped, _ = self._decode(ctx, batch, k, stop=True)
            L.llama_memory_seq_rm(memory, seq, -1, -1)
            rc2, full, hidden = self._decode(ctx, batch, k, stop=False)
            theirs = [int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)))) for i in range(k)]
            L.llama_memory_seq_rm(memory, seq, -1, -1)
            if rc or rc2 or len(hidden) != k:
                self.rows_refused = f"it took {len(hidden)} hidden rows for {k} (llama_decode {rc}, {rc2})"
                return
            started = time.perf_counter()
            ours = rows.compute(hidden).argmax(axis=1).tolist()
            seconds = time.perf_counter() - started
            if ours != theirs:
                self.rows_refused = f"for {k} rows it picked {ours} where llama.cpp picks {theirs}"
                log.warning("the row pass cannot be used here (%s)", self.rows_refused)
                return
            if seconds < GAIN * (full - stopped):
                faster[k] = (seconds, full - stopped)
        _ROW_COUNTS[key] = {k: theirs_s for k, (_, theirs_s) in faster.items()}
        if not faster:
            self.rows_refused = "llama.cpp's output layer was as fast for every row count"
            log.info("the row pass is not used: %s", self.rows_refused)
            return
        rows.counts = frozenset(faster)
        rows.llama_seconds = {k: theirs_s for k, (_, theirs_s) in faster.items()}
        self.rows, self.rows_refused = rows, None
        log.info("the row pass takes decodes of %s logits rows (ms, row pass / llama.cpp: %s)", sorted(faster),
                 ", ".join(f"{k}: {a * 1e3:.0f}/{b * 1e3:.0f}" for k, (a, b) in sorted(faster.items())))

    @staticmethod
    def _put(batch: Any, tokens: list[int], seq: int) -> None:
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, 1
            batch.seq_id[i][0] = seq

    def _decode(self, ctx: Any, batch: Any, n: int, *, stop: bool) -> tuple[int, float, np.ndarray]:
        """The first ``n`` rows of the probe batch decoded with the tap taking their hidden states (and stopping the
        graph there if ``stop``): llama.cpp's return code, the seconds it took, the hidden rows."""
        import llama_cpp as L

        batch.n_tokens = n
        self.arm(True, stop=stop)
        started = time.perf_counter()
        try:
            rc = L.llama_decode(ctx, batch)
            return rc, time.perf_counter() - started, self.tap.take()
        finally:
            self.tap.active = self.tap.stop = False

    def _refuse_all(self, reason: str) -> bool:
        self.refused = reason
        self.head = self.rows = None
        self.rows_refused = reason
        log.warning("the core's own output layers cannot be used here (%s); llama.cpp computes every output layer", reason)
        return False


#: the text whose hidden states choose the float dimensions and check the head at load
PROBE_TEXT = "The quick brown fox jumps over the lazy dog. def add(a, b): return a + b  # 12 + 30 = 42"


def probe_tokens(vocab: Any, limit: int) -> list[int]:
    """:data:`PROBE_TEXT` in the model's tokens, beginning of sequence first, at most ``limit``."""
    import llama_cpp as L

    text = PROBE_TEXT.encode()
    buf = (L.llama_token * (len(text) + 2))()
    n = L.llama_tokenize(vocab, text, len(text), buf, len(buf), True, False)
    return list(buf[: max(0, min(n, limit))])


def output_matrix(path: Path, n_vocab: int, n_embd: int) -> np.ndarray | None:
    """The Q8_0 output matrix of a GGUF (``output.weight``, else the tied ``token_embd.weight``) as a read-only
    view (n_vocab, n_embd / 32, 34), found by ggml's own GGUF reader; None for any other type or shape."""
    found = _find_tensor(path, (b"output.weight", b"token_embd.weight"))
    if found is None or found[1] != _GGML_TYPE_Q8_0:
        log.info("output matrix of %s is not Q8_0; llama.cpp computes every output layer", path.name)
        return None
    offset, _, size = found
    shape = (n_vocab, n_embd // Q8_0_BLOCK, 2 + Q8_0_BLOCK)
    if n_embd % Q8_0_BLOCK or size != int(np.prod(shape)):
        log.info("output matrix of %s is not %d x %d; llama.cpp computes every output layer", path.name, n_vocab, n_embd)
        return None
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape)


def head_for_model(path: Path, model: Any, min_rows: int, threads: int, *, max_rows: int = 512, native: bool = True,
                   rows: bool = True) -> OutputHead | None:
    """The core's own output layers for a loaded llama.cpp model (the greedy head and the row pass), to be built
    (:meth:`OutputHead.build`) once its context exists (the tap's ``callback`` and ``user_data`` go into the
    context's ``cb_eval`` and ``cb_eval_user_data``), or None when the model's output layer is not one they read.
    ``native``: the tap in C (:mod:`aios_core.cores.llamacpp_native_tap`, for decodes of at most ``max_rows``
    output rows) where it can be compiled, else in Python. ``rows``: try the row pass (False: the greedy head only)."""
    import llama_cpp as L

    from aios_core.cores.llamacpp_row_logits import MEASURED_ROWS, row_logits_for

    n_embd = L.llama_model_n_embd(model)
    blocks = output_matrix(path, L.llama_vocab_n_tokens(L.llama_model_get_vocab(model)), n_embd)
    if blocks is None:
        return None
    tap: HiddenTap | NativeTap | None = None
    if native:
        from aios_core.cores.llamacpp_native_tap import native_tap

        tap = native_tap(n_embd, max_rows)
    row_pass = row_logits_for(blocks, threads=threads, max_rows=MEASURED_ROWS) if rows else None  # it never takes more rows
    return OutputHead(blocks, tap or HiddenTap(n_embd), min_rows, threads, row_pass)
