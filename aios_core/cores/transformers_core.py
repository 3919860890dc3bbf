"""The transformers core: a torch model from Hugging Face ``transformers``, batched with a KV cache, for GPU users.

It is a :class:`~aios_core.cores.batching.BatchingCore`: the shared engine
loop decides who runs each step; this module only runs the model.

The cache design, chosen so that sequences join and leave between any two steps:

- Every sequence owns its KV (one key and one value tensor per layer,
  ``[1, kv_heads, length, head_dim]``) from its prefill on. A new sequence is
  prefilled alone (batch 1, no padding), which also yields its first token.
- Decoding runs the whole batch in one forward pass over a *batched* cache: the
  running sequences' KV stacked along the batch axis, **left-padded** to the
  longest, with a 2D attention mask that hides the padding and per-row position
  ids that keep each sequence's true positions. Between membership changes
  the same batched cache object grows by one column per step.
- When the membership changes (a sequence joins, finishes, is preempted or
  cancelled) the batched cache is rebuilt once from the rows that stay plus the
  newcomers' own KV. Rebuilding copies the KV once per change, not per step.

Snapshot and restore are exact: a snapshot is the sequence's unpadded KV, the
token to feed next, its position, the token ids generated so far and the
sampler's RNG state, serialized with ``torch.save`` into bytes (so the context
manager can spill it to disk). Restoring puts those tensors back as the
sequence's own KV; it joins the batch at the next step and continues exactly
as if never interrupted.

Sampling is greedy at temperature 0, else temperature + top-p with a torch
generator per sequence seeded from ``request.seed`` (or the core's seed), so a
seeded request is reproducible and survives preemption. Prompts are rendered
with the tokenizer's chat template (``chat_template=`` overrides or supplies
one); tools are described in the system prompt and parsed from the output
(:mod:`aios_core.cores.tool_format`), as for the other local cores.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aios_core.cores.base import Snapshot
from aios_core.cores.batching import BatchingCore, EngineSeq, StepOutput
from aios_core.cores.tool_format import with_tool_instructions
from aios_core.errors import ConfigError, ContextLengthError, CoreError, InvalidSyscallError
from aios_core.syscalls import LLMRequest

log = logging.getLogger(__name__)

#: end-of-turn markers that end an answer like EOS does (GGUF conversions often list only the EOS token)
END_OF_TURN_TOKENS = ("<end_of_turn>", "<|eot_id|>", "<|im_end|>", "<|end|>", "<|endoftext|>", "<|end_of_text|>")

#: used when neither the tokenizer nor the configuration supplies a chat template
GENERIC_TEMPLATE = (
    "{{ bos_token or '' }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(eq=False)
class _SeqState:
    """A sequence's engine state. ``kv`` is its own unpadded cache while it is not a row of the batched cache."""

    next_token: int
    pos: int
    kv: list[tuple[Any, Any]] | None
    ids: list[int] = field(default_factory=list)
    decoded: str = ""
    generator: Any = None


class TransformersCore(BatchingCore):
    kind = "transformers"

    def __init__(
        self,
        name: str = "transformers",
        model: str | None = None,
        *,
        model_path: str | os.PathLike[str],
        gguf_file: str | None = None,
        max_batch: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        context_length: int | None = None,
        chat_template: str | None = None,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        """Options, as in a ``[[cores]] kind = "transformers"`` table:

        - ``model_path``: a local directory with the model and tokenizer (``save_pretrained``
          layout); nothing is downloaded. ``gguf_file``: a GGUF file in that directory (or a
          path to one) to load and dequantize instead.
        - ``device``: ``cuda``, ``cpu``, ... (``auto``: cuda when available); ``dtype``:
          ``auto``, ``float32``, ``bfloat16``, ``float16``, ``float64``.
        - ``context_length``: defaults to the model's ``max_position_embeddings``.
        - ``threads``: torch CPU threads (None leaves torch's default).
        """
        path = Path(model_path).expanduser()
        if gguf_file is not None:
            gguf = Path(gguf_file).expanduser()
            gguf = gguf if gguf.is_absolute() or gguf.parent != Path(".") else path / gguf
            if not gguf.is_file():
                raise ConfigError(f"core {name}: gguf_file {gguf} does not exist; give the path of a .gguf file")
            with gguf.open("rb") as fh:
                if fh.read(4) != b"GGUF":
                    raise ConfigError(f"core {name}: {gguf} is not a GGUF file (bad magic bytes)")
            path, gguf_file = gguf.parent, gguf.name
        elif not path.is_dir():
            raise ConfigError(
                f"core {name}: model_path {path} is not a directory; give a local directory holding the model "
                "(config.json, weights, tokenizer) or gguf_file="
            )
        super().__init__(name, model or (gguf_file or path.name), max_batch)
        self.model_path = path
        self.gguf_file = gguf_file
        self.device_name = device
        self.dtype_name = dtype
        self.context_length = context_length
        self.chat_template = chat_template
        self.seed = seed
        self.threads = threads
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None
        self._eos: set[int] = set()
        self._bos: int | None = None
        # the tokenizer is used from the loop (check_request) and the engine thread; fast tokenizers must not be shared unlocked
        self._tokenizer_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._rng = random.Random(seed)
        # the batched cache: its rows in order, the DynamicCache holding them, and its 2D attention mask
        self._rows: list[EngineSeq] = []
        self._batch_cache: Any = None
        self._batch_mask: Any = None
        self._dirty = False

    # ------------------------------------------------------------------ loading

    async def _load(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"core-{self.name}")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load_sync)

    def _load_sync(self) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ConfigError(
                f"core {self.name} needs torch and transformers: pip install 'aios-python[transformers]' ({exc})"
            ) from exc
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.device_name == "auto":
            self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self._device = torch.device(self.device_name)
        dtype: Any = "auto" if self.dtype_name == "auto" else getattr(torch, self.dtype_name, None)
        if dtype is None:
            raise ConfigError(f"core {self.name}: unknown dtype {self.dtype_name!r}; use auto, float32, bfloat16, float16 or float64")
        extra = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        where = self.model_path / self.gguf_file if self.gguf_file else self.model_path
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True, **extra)
            model = AutoModelForCausalLM.from_pretrained(self.model_path, local_files_only=True, dtype=dtype, **extra)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"core {self.name}: could not load a causal LM from {where}: {exc}") from exc
        if dtype == "auto" and self._device.type == "cpu" and model.dtype in (torch.float16, torch.bfloat16):
            model = model.float()  # half precision is slow or unsupported for many CPU kernels
        model.to(self._device)
        model.eval()
        if self.chat_template:
            tokenizer.chat_template = self.chat_template
        elif not getattr(tokenizer, "chat_template", None):
            log.warning("core %s: %s has no chat template; using a generic one (pass chat_template= for the model's own)", self.name, where)
            tokenizer.chat_template = GENERIC_TEMPLATE
        eos: set[int] = set()
        for source in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
            if isinstance(source, int):
                eos.add(source)
            elif source:
                eos.update(int(t) for t in source)
        vocab = tokenizer.get_vocab()
        eos.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
        # templates written for servers that add BOS themselves leave it out: add it when the tokenizer would
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        bos = tokenizer.bos_token_id
        self._bos = bos if bos is not None and probe and probe[0] == bos else None
        text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        if self.context_length is None:
            self.context_length = int(getattr(text_config, "max_position_embeddings", 2048))
        self._model, self._tokenizer, self._eos = model, tokenizer, eos
        log.info("core %s: loaded %s on %s (%s), context %d, eos %s", self.name, where, self._device, model.dtype, self.context_length, sorted(eos))

    async def _unload(self) -> None:
        self._model = self._tokenizer = None
        self._rows, self._batch_cache, self._batch_mask = [], None, None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # ------------------------------------------------------------------ sizing

    def _prompt_ids(self, request: LLMRequest) -> list[int]:
        if self._tokenizer is None:
            raise CoreError(f"core {self.name} is not started")
        messages = [{"role": m.role, "content": m.content or ""} for m in with_tool_instructions(request)]
        with self._tokenizer_lock:
            try:
                text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception as exc:  # noqa: BLE001 - templates raise whatever they like (e.g. "roles must alternate")
                raise InvalidSyscallError(f"the chat template of core {self.name} refused these messages: {exc}") from None
            ids = list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        if self._bos is not None and (not ids or ids[0] != self._bos):
            ids.insert(0, self._bos)
        return ids

    def count_tokens(self, request: LLMRequest) -> int:
        if self._tokenizer is None:
            return super().count_tokens(request)
        return len(self._prompt_ids(request))

    def check_request(self, request: LLMRequest) -> None:
        if self._tokenizer is None or self.context_length is None:
            return
        n = self.count_tokens(request)
        if n + request.max_tokens > self.context_length:
            raise ContextLengthError(
                f"prompt ({n} tokens) plus max_tokens ({request.max_tokens}) exceeds the context of core {self.name} "
                f"({self.context_length} tokens); shorten the prompt or lower max_tokens",
                prompt_tokens=n,
                context_length=self.context_length,
            )

    # ------------------------------------------------------------------ engine step

    async def _step(self, seqs: list[EngineSeq]) -> list[StepOutput]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._step_sync, seqs)

    def _step_sync(self, seqs: list[EngineSeq]) -> list[StepOutput]:
        import torch

        outputs: list[StepOutput] = []
        with torch.inference_mode():
            decoding = [s for s in seqs if s.prefilled and s.state is not None]
            if decoding:
                self._sync_rows(decoding)
                outputs.extend(self._decode())
            for seq in seqs:
                if not seq.prefilled:
                    outputs.append(self._prefill(seq))
        return outputs

    def _prefill(self, seq: EngineSeq) -> StepOutput:
        import torch
        from transformers import DynamicCache

        request = seq.gen.request
        ids = self._prompt_ids(request)
        seq.prompt_tokens = len(ids)
        seq.cached_tokens = 0
        cache = DynamicCache()
        input_ids = torch.tensor([ids], device=self._device)
        out = self._model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            position_ids=torch.arange(len(ids), device=self._device).unsqueeze(0),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        state = _SeqState(next_token=-1, pos=len(ids), kv=_layers(cache), generator=self._generator(request))
        seq.state = state
        seq.prefilled = True
        return self._emit(seq, out.logits[0, -1])

    def _decode(self) -> list[StepOutput]:
        import torch

        assert self._batch_cache is not None and self._batch_mask is not None
        rows = self._rows
        mask = torch.cat([self._batch_mask, torch.ones((len(rows), 1), dtype=self._batch_mask.dtype, device=self._device)], dim=1)
        input_ids = torch.tensor([[s.state.next_token] for s in rows], device=self._device)
        positions = torch.tensor([[s.state.pos] for s in rows], device=self._device)
        # the batched cache grows by this step's column in place
        out = self._model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=self._batch_cache, use_cache=True)
        self._batch_mask = mask
        outputs = []
        for i, seq in enumerate(rows):
            seq.state.pos += 1
            outputs.append(self._emit(seq, out.logits[i, -1]))
        return outputs

    def _emit(self, seq: EngineSeq, logits: Any) -> StepOutput:
        """Sample the next token of ``seq`` and turn it into text (held back while it is an incomplete character)."""
        state: _SeqState = seq.state
        token = self._sample(seq.gen.request, logits, state.generator)
        state.next_token = token
        ignore_eos = bool(seq.gen.request.extra.get("ignore_eos", False))
        if token in self._eos and not ignore_eos:
            return StepOutput(seq=seq, tokens=1, eos=True)
        state.ids.append(token)
        with self._tokenizer_lock:
            decoded = self._tokenizer.decode(state.ids, skip_special_tokens=True)
        if decoded.endswith("\ufffd") or not decoded.startswith(state.decoded):
            return StepOutput(seq=seq, tokens=1)
        piece, state.decoded = decoded[len(state.decoded) :], decoded
        return StepOutput(seq=seq, text=piece, tokens=1)

    def _sample(self, request: LLMRequest, logits: Any, generator: Any) -> int:
        import torch

        logits = logits.float()
        if request.temperature <= 0.0:
            return int(torch.argmax(logits).item())
        probs = torch.softmax(logits / request.temperature, dim=-1)
        if request.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < request.top_p
            sorted_probs = sorted_probs * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=generator).item())

    def _generator(self, request: LLMRequest) -> Any:
        import torch

        if request.temperature <= 0.0:
            return None
        generator = torch.Generator(device=self._device)
        generator.manual_seed(request.seed if request.seed is not None else self._rng.getrandbits(63))
        return generator

    # ------------------------------------------------------------------ the batched cache

    def _sync_rows(self, decoding: list[EngineSeq]) -> None:
        """Make the batched cache hold exactly ``decoding`` (rebuilt only when the membership changed)."""
        if not self._dirty and self._batch_cache is not None and self._rows == decoding:
            return
        kept = {id(s): i for i, s in enumerate(self._rows)}
        own: list[list[tuple[Any, Any]]] = []
        for seq in decoding:
            row = kept.get(id(seq))
            if seq.state.kv is None and row is not None:
                seq.state.kv = self._row_kv(row, seq.state.pos)
            own.append(seq.state.kv)
        self._rows = list(decoding)
        from transformers import DynamicCache

        layers, self._batch_mask = _left_padded(own, [s.state.pos for s in decoding], self._device)
        self._batch_cache = DynamicCache(ddp_cache_data=layers)
        for seq in decoding:
            seq.state.kv = None  # it lives in the batched cache now
        self._dirty = False

    def _row_kv(self, row: int, length: int) -> list[tuple[Any, Any]]:
        """Row ``row`` of the batched cache without its left padding."""
        assert self._batch_cache is not None
        return [(k[row : row + 1, :, k.shape[2] - length :, :], v[row : row + 1, :, v.shape[2] - length :, :]) for k, v in _layers(self._batch_cache)]

    def _own_kv(self, seq: EngineSeq) -> list[tuple[Any, Any]]:
        state: _SeqState = seq.state
        if state.kv is not None:
            return state.kv
        row = next(i for i, s in enumerate(self._rows) if s is seq)
        return self._row_kv(row, state.pos)

    # ------------------------------------------------------------------ snapshot / restore / release

    def _snapshot(self, seq: EngineSeq) -> Snapshot:
        import torch

        state: _SeqState = seq.state
        kv = [(k.detach().to("cpu").clone(), v.detach().to("cpu").clone()) for k, v in self._own_kv(seq)]
        payload = {
            "kv": kv,
            "next_token": state.next_token,
            "pos": state.pos,
            "ids": list(state.ids),
            "decoded": state.decoded,
            "rng": state.generator.get_state() if state.generator is not None else None,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return Snapshot(gen_id=seq.id, core=self.name, state={"pos": state.pos}, data=buffer.getvalue())

    def _restore(self, seq: EngineSeq, snapshot: Snapshot) -> None:
        import torch

        if snapshot.data is None:
            raise CoreError(f"snapshot of {seq.id} has no KV data; it was not taken by a transformers core", retryable=False)
        payload = torch.load(io.BytesIO(snapshot.data), map_location=self._device, weights_only=True)
        generator = None
        if payload["rng"] is not None:
            generator = torch.Generator(device=self._device)
            generator.set_state(payload["rng"])
        seq.state = _SeqState(
            next_token=int(payload["next_token"]),
            pos=int(payload["pos"]),
            kv=[(k, v) for k, v in payload["kv"]],
            ids=list(payload["ids"]),
            decoded=payload["decoded"],
            generator=generator,
        )
        seq.prefilled = True

    def _release(self, seq: EngineSeq) -> None:
        if any(s is seq for s in self._rows):
            self._dirty = True
        seq.state = None

    async def _reset(self) -> None:
        self._rows, self._batch_cache, self._batch_mask, self._dirty = [], None, None, False

    def prompt_ids(self, request: LLMRequest) -> list[int]:
        """The token ids the model sees for ``request`` (rendered with the chat template, BOS included)."""
        return self._prompt_ids(request)

    @property
    def torch_model(self) -> Any:
        """The loaded ``transformers`` model (None before start), e.g. to compare with ``generate()``."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer


def _layers(cache: Any) -> list[tuple[Any, Any]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _left_padded(own: list[list[tuple[Any, Any]]], lengths: list[int], device: Any) -> tuple[list[tuple[Any, Any]], Any]:
    """Stack per-sequence KV into one left-padded batch, with the attention mask that hides the padding."""
    import torch
    import torch.nn.functional as F

    width = max(lengths)
    mask = torch.zeros((len(lengths), width), dtype=torch.long, device=device)
    for i, n in enumerate(lengths):
        mask[i, width - n :] = 1
    layers = []
    for layer in range(len(own[0])):
        keys = [F.pad(kv[layer][0], (0, 0, width - n, 0)) for kv, n in zip(own, lengths)]
        values = [F.pad(kv[layer][1], (0, 0, width - n, 0)) for kv, n in zip(own, lengths)]
        layers.append((torch.cat(keys, dim=0), torch.cat(values, dim=0)))
    return layers, mask

