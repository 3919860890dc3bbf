"""The output layer of greedy rows, computed outside llama.cpp: a fast bf16 pass, then the few close tokens exactly.

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
3. One bf16 matrix product with the dequantized weights (torch, which uses
   the CPU's bf16 units where it has them) gives every logit within a bound
   that follows from bf16's rounding (:data:`_BF16_REL`), per row.
4. Only the tokens whose approximate logit could still be the largest are
   computed exactly, from the int8 values and scales (integer dot products per
   block, scaled and summed in float64), and the largest of them is the pick.

So the pick is llama.cpp's up to its own float32 rounding (the order in which
it sums 20 blocks), which already differs between its own kernels for one row
and for several; the bound is worst-case, never a guess. The bf16 pass reads
335 MB of weights whatever the number of rows, so it pays from a few rows on
(``LlamaCppCore(fast_head_rows=...)``); below that, and in a decode where a row
samples or follows a grammar, llama.cpp's own output layer runs.

Only a Q8_0 output matrix is read (the default model's); any other type
leaves the output layer to llama.cpp (:meth:`GreedyHead.from_gguf` returns None).
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: the graph node llama.cpp names the final (normed) hidden states of the output rows, in every architecture
HIDDEN_NODE = b"result_norm"
#: ggml's Q8_0 block: 32 int8 values under one float16 scale
Q8_0_BLOCK = 32

# struct ggml_tensor (ggml.h): type, buffer, ne[4], nb[4], op, op_params[16], flags, src[10], view_src,
# view_offs, data, name[64] on a 64-bit platform. The tap takes nothing from a tensor whose shape or strides do
# not fit, and the core checks the head against llama.cpp at load (:func:`agrees_with_llama`).
_NE_OFFSET = 16
_NB_OFFSET = 48
_DATA_OFFSET = 248
_NAME_OFFSET = 256

#: bf16 keeps 8 significant bits: each input is within 2**-8 of its value, so a product is within
#: 2 * 2**-8 + 2**-16 of it; float32 accumulation over 640 terms adds at most 640 * 2**-24; the margin
#: covers any order the library sums in
_BF16_REL = (2 * 2.0**-8 + 2.0**-16 + 1024 * 2.0**-24) * 1.25
#: the bf16 result itself is rounded once more: within 2**-8 of the logit (a margin again)
_BF16_OUT_REL = 2.0**-8 * 1.25
#: rows of the output matrix converted at once at load (bounds the float32 scratch to 40 MB)
_LOAD_CHUNK = 16384
#: close tokens under the bound for every token beyond which each token's own bound is worth computing
_FEW = 64


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


class GreedyHead:
    """Argmax of a Q8_0 output layer for rows of hidden states (see the module docstring)."""

    def __init__(self, blocks: np.ndarray, *, threads: int = 1) -> None:
        """``blocks``: the output matrix as GGUF stores Q8_0, uint8 (n_vocab, n_embd / 32, 34): per block a float16
        scale and 32 int8 values (a view of the model file is enough: rows are read from it only when checked).
        ``threads``: torch's threads for the bf16 pass (the core's own count: both run in the engine thread)."""
        import torch  # a heavy import, needed only when the head is used

        torch.set_num_threads(threads)
        self._torch = torch
        self._blocks = blocks
        self.n_vocab, n_blocks = blocks.shape[:2]
        self.n_embd = n_blocks * Q8_0_BLOCK
        self._weights = torch.empty((self.n_vocab, self.n_embd), dtype=torch.bfloat16)
        #: the bound's weight side: each token's norm per block (Cauchy-Schwarz per block), and the largest
        self._block_norms = np.empty((self.n_vocab, n_blocks), dtype=np.float32)
        for lo in range(0, self.n_vocab, _LOAD_CHUNK):
            values, scales = self._rows(np.arange(lo, min(lo + _LOAD_CHUNK, self.n_vocab)))
            # the product of a float16 scale and an int8 value is exact in float32; only the bf16 cast rounds
            w = torch.from_numpy(values).float() * torch.from_numpy(scales)[:, :, None]
            self._block_norms[lo : lo + len(w)] = w.square().sum(dim=2).sqrt().numpy()
            self._weights[lo : lo + len(w)] = w.reshape(len(w), self.n_embd).to(torch.bfloat16)
        self._block_norm_max = self._block_norms.max(axis=0).astype(np.float64)
        #: tokens computed exactly in the last call, per row (for the tests and the core's counters)
        self.last_close: list[int] = []

    def _rows(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int8 values (t, n_blocks, 32) and float32 scales (t, n_blocks) of some tokens' rows."""
        raw = np.ascontiguousarray(self._blocks[tokens])
        return raw[:, :, 2:].view(np.int8), raw[:, :, :2].copy().view(np.float16)[:, :, 0].astype(np.float32)

    @classmethod
    def from_gguf(cls, path: Path, n_vocab: int, n_embd: int, *, threads: int = 1) -> "GreedyHead | None":
        """The head of a GGUF whose output matrix is Q8_0 (``output.weight``, else the tied ``token_embd.weight``),
        found by ggml's own GGUF reader; None for any other type, or without torch."""
        try:
            import torch  # noqa: F401
        except ImportError:
            log.info("the greedy output head needs torch; llama.cpp computes every output layer")
            return None
        found = _find_tensor(path, (b"output.weight", b"token_embd.weight"))
        if found is None or found[1] != _GGML_TYPE_Q8_0:
            log.info("output matrix of %s is not Q8_0; llama.cpp computes every output layer", path.name)
            return None
        offset, _, size = found
        shape = (n_vocab, n_embd // Q8_0_BLOCK, 2 + Q8_0_BLOCK)
        if n_embd % Q8_0_BLOCK or size != int(np.prod(shape)):
            log.info("output matrix of %s is not %d x %d; llama.cpp computes every output layer", path.name, n_vocab, n_embd)
            return None
        return cls(np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape), threads=threads)

    def argmax(self, hidden: np.ndarray, banned: list[np.ndarray | None] | None = None) -> np.ndarray:
        """The greedy pick of each row of ``hidden`` (n, n_embd) float32; ``banned[i]`` are tokens row ``i`` never picks."""
        torch = self._torch
        q, qscale = quantize_q8_0(hidden)
        n_blocks = self.n_embd // Q8_0_BLOCK
        act_blocks = q.reshape(-1, n_blocks, Q8_0_BLOCK).astype(np.float32) * qscale[:, :, None]
        approx = (torch.from_numpy(act_blocks.reshape(len(q), self.n_embd)).to(torch.bfloat16) @ self._weights.T).float()
        # |logit| <= sum_b |w_b| |a_b| <= sum_b max_v |w_vb| * |a_b|: one bound per row for every token
        act_norms = np.sqrt((act_blocks.astype(np.float64) ** 2).sum(axis=2))
        reach = act_norms @ self._block_norm_max
        picks = np.empty(len(q), dtype=np.int64)
        self.last_close = []
        for r in range(len(q)):
            row = approx[r]
            if banned is not None and banned[r] is not None:
                row[torch.from_numpy(np.asarray(banned[r], dtype=np.int64))] = -float("inf")
            top = float(row.max())
            # every approximate logit is within err of its exact value (err: one bound for all tokens first),
            # so a token whose approximation is more than 2 * err below the top one cannot be the largest; a
            # token just below may be up to 2 * err larger in magnitude than the top one, and its bf16 rounding
            # with it (a few parts in a thousand of err): 2.05
            err = _BF16_REL * reach[r] + _BF16_OUT_REL * (abs(top) + _BF16_REL * reach[r])
            close = torch.nonzero(row >= top - 2.05 * err).flatten().numpy()
            if len(close) > _FEW:
                # many: each token's own bound (its block norms), tighter than the largest token's
                near = row.numpy()[close].astype(np.float64)
                own = _BF16_REL * (self._block_norms[close].astype(np.float64) @ act_norms[r])
                own_err = own + _BF16_OUT_REL * (np.abs(near) + own)
                close = close[near + own_err >= np.max(near - own_err)]
            self.last_close.append(len(close))
            picks[r] = close[int(np.argmax(self.exact(q[r], qscale[r], close)))]
        return picks

    def exact(self, q: np.ndarray, qscale: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """The logits of ``tokens`` for one quantized row, as ggml's Q8_0 dot product defines them (integer dot
        products per block, times both scales, summed), in float64. ``tokens`` ascending: ties go to the first."""
        values, scales = self._rows(tokens)
        dots = np.einsum("tbj,bj->tb", values.astype(np.int32), q.reshape(scales.shape[1], Q8_0_BLOCK).astype(np.int32))
        return (dots * scales.astype(np.float64) * qscale.astype(np.float64)).sum(axis=1)


_GGML_TYPE_Q8_0 = 8


class _GGUFInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def _ggml_base() -> ctypes.CDLL:
    """The ggml library llama-cpp-python ships, for its GGUF reader (the Python ``gguf`` reader parses every
    vocabulary string first: seconds for Gemma's 262k tokens)."""
    import llama_cpp as L

    lib_dir = Path(L.__file__).parent / "lib"
    candidates = sorted(lib_dir.glob("libggml-base.*")) + sorted(lib_dir.glob("ggml-base.*"))
    if not candidates:
        raise OSError(f"no ggml-base library in {lib_dir}")
    lib = ctypes.CDLL(str(candidates[0]))
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
        if ctypes.string_at(tensor + _NAME_OFFSET, len(HIDDEN_NODE) + 1) != HIDDEN_NODE + b"\0":
            return False
        if ask:
            return True
        ne = (ctypes.c_int64 * 2).from_address(tensor + _NE_OFFSET)
        nb = (ctypes.c_size_t * 2).from_address(tensor + _NB_OFFSET)
        data = ctypes.c_void_p.from_address(tensor + _DATA_OFFSET).value
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


class OutputHead:
    """Where the core's decodes meet the greedy head: which decodes it takes, and the picks it gives for them.

    A decode is taken when every row asked for a pick belongs to a greedy sequence without a grammar and at
    least ``min_rows`` rows compute logits (below that llama.cpp's own output layer is cheaper: its cost
    grows with the rows, the bf16 pass's hardly does).
    """

    def __init__(self, head: GreedyHead, tap: HiddenTap, min_rows: int) -> None:
        self.head = head
        self.tap = tap
        self.min_rows = min_rows

    def takes(self, n_rows: int, all_greedy: bool) -> bool:
        """Whether a decode with ``n_rows`` logits rows, all of greedy sequences, is the head's."""
        return all_greedy and n_rows >= self.min_rows

    def arm(self, take: bool) -> bool:
        """Before a llama_decode: take it (stop llama.cpp before its output layer) or leave it alone."""
        self.tap.take()  # nothing left over from a decode that failed
        self.tap.active = self.tap.stop = take
        return take

    def picks(self, logits_flags: np.ndarray, rows: list[int], banned: list[np.ndarray | None]) -> dict[int, int] | None:
        """After a taken llama_decode: the pick of each batch row in ``rows`` (rows with logits flags), or None if
        the hidden states did not come (then llama.cpp's graph was not stopped: its logits stand)."""
        self.tap.active = self.tap.stop = False
        hidden = self.tap.take()
        n_outputs = int(np.count_nonzero(logits_flags))
        if len(hidden) != n_outputs:
            log.warning("took %d hidden rows for %d outputs; llama.cpp's logits are used", len(hidden), n_outputs)
            return None
        index = np.cumsum(logits_flags != 0) - 1  # a batch row's place among the output rows
        chosen = self.head.argmax(hidden[index[rows]], banned)
        return dict(zip(rows, (int(t) for t in chosen)))


def head_for_model(path: Path, model: Any, min_rows: int, threads: int) -> OutputHead | None:
    """The greedy head of a loaded llama.cpp model (its ``cb_eval`` goes into the context's parameters), or None."""
    import llama_cpp as L

    n_embd = L.llama_model_n_embd(model)
    greedy = GreedyHead.from_gguf(path, L.llama_vocab_n_tokens(L.llama_model_get_vocab(model)), n_embd, threads=threads)
    return OutputHead(greedy, HiddenTap(n_embd), min_rows) if greedy is not None else None


def agrees_with_llama(head: OutputHead, ctx: Any, batch: Any, token: int, seq: int) -> bool:
    """At load: the head's pick after ``token`` (decoded at position 0 of sequence ``seq``, removed after) is
    llama.cpp's own argmax of the same row. A layout of ggml's tensor this module does not read, or any other
    disagreement, is found here, before a request depends on it."""
    import llama_cpp as L

    batch.n_tokens = 1
    batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0] = token, 0, 1, 1
    batch.seq_id[0][0] = seq
    head.tap.take()
    head.tap.active, head.tap.stop = True, False  # llama.cpp computes its own logits as well, to compare
    try:
        rc = L.llama_decode(ctx, batch)
    finally:
        head.tap.active = False
    ours = head.picks(np.ones(1, dtype=np.int8), [0], [None]) if rc == 0 else None
    theirs = None
    if rc == 0:
        n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(L.llama_get_model(ctx)))
        theirs = int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, 0), shape=(n_vocab,))))
    L.llama_memory_seq_rm(L.llama_get_memory(ctx), seq, -1, -1)
    if ours is None or ours[0] != theirs:
        log.warning("the greedy output head picked %s where llama.cpp picks %s; llama.cpp computes every output layer",
                    None if ours is None else ours[0], theirs)
        return False
    return True
