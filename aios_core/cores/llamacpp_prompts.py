"""A loaded model's text side: chat template, tokenizer, and the tokens that end a turn.

Apart from the engine loop because none of it touches the KV cache or a
decode: the core asks it for a request's prompt tokens (admission, token
counts, prefix affinity: the same request is asked for many times, so the
tokens are cached per request object), for how many of them depend only on
the system message (what is published to the prefix cache), and whether a
token ends the model's turn.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import llama_cpp as L
import numpy as np

from aios_core.cores.chat_template import ChatTemplate, template_for_model
from aios_core.cores.llamacpp_prefix import common_prefix
from aios_core.cores.llamacpp_runtime import model_meta, special_text
from aios_core.cores.tool_format import with_tool_instructions
from aios_core.errors import AIOSError
from aios_core.syscalls import LLMRequest, Message

__all__ = ["PromptFormat"]

#: requests whose prompt tokens are kept (a request is asked for again at every admission attempt)
PROMPT_CACHE_SIZE = 512
#: system messages whose prefix tokens are kept
SYSTEM_PREFIX_CACHE_SIZE = 256


class PromptFormat:
    """How requests become tokens for one loaded model (made in the engine thread when the model loads)."""

    def __init__(self, model: Any, vocab: Any, template_override: str | None = None) -> None:
        template_src = L.llama_model_chat_template(model, None)
        self.arch = model_meta(model, "general.architecture") or ""
        bos = L.llama_vocab_bos(vocab)
        eos = L.llama_vocab_eos(vocab)
        self.vocab = vocab
        self.bos_text = special_text(vocab, bos) if bos >= 0 else ""
        self.template: ChatTemplate = template_for_model(
            template_src.decode("utf-8", errors="replace") if template_src else None,
            self.arch,
            bos_token=self.bos_text,
            eos_token=special_text(vocab, eos) if eos >= 0 else "",
            override=template_override,
        )
        self.n_vocab: int = L.llama_vocab_n_tokens(vocab)
        self.add_bos = bool(L.llama_vocab_get_add_bos(vocab))
        self.turn_markers = self._find_turn_markers()
        # found here, in the engine thread while the model loads: the scan of the vocabulary (~0.2 s for
        # Gemma's 262k tokens) would otherwise block the kernel's loop at the first request that asks
        self.end_tokens = np.fromiter(
            sorted({t for t in range(self.n_vocab) if L.llama_vocab_is_eog(vocab, t)} | set(self.turn_markers)), dtype=np.int64
        )
        self._prompts: OrderedDict[int, tuple[LLMRequest, list[int]]] = OrderedDict()
        self._system_prefixes: OrderedDict[str, list[int]] = OrderedDict()

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos, True)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_bos, True)
        return list(buf[:n])

    def render_tokens(self, text: str) -> list[int]:
        """Tokens of text the chat template rendered: templates usually write the BOS text themselves, so the token is
        added only when the model wants one and it is missing."""
        add_bos = self.add_bos and not (self.bos_text and text.startswith(self.bos_text))
        return self.tokenize(text, add_bos)

    def prompt(self, request: LLMRequest) -> list[int]:
        """The request's prompt tokens (rendered with the chat template; cached per request object)."""
        key = id(request)
        hit = self._prompts.get(key)
        if hit is not None and hit[0] is request:
            self._prompts.move_to_end(key)
            return hit[1]
        tokens = self.render_tokens(self.template.render(with_tool_instructions(request)))
        self._prompts[key] = (request, tokens)
        while len(self._prompts) > PROMPT_CACHE_SIZE:
            self._prompts.popitem(last=False)
        return tokens

    def system_prefix_len(self, request: LLMRequest, tokens: np.ndarray) -> int:
        """How many leading prompt tokens depend only on the system message (0 without one)."""
        messages = with_tool_instructions(request)
        if messages[0].role != "system" or not messages[0].content:
            return 0
        system = messages[0].content
        ptoks = self._system_prefixes.get(system)
        if ptoks is None:
            try:
                ptoks = self.render_tokens(self.template.system_prefix(system))
            except AIOSError:
                ptoks = []
            self._system_prefixes[system] = ptoks
            while len(self._system_prefixes) > SYSTEM_PREFIX_CACHE_SIZE:
                self._system_prefixes.popitem(last=False)
        else:
            self._system_prefixes.move_to_end(system)
        return min(common_prefix(np.asarray(ptoks, dtype=np.int32), tokens), tokens.shape[0] - 1)

    def ends(self, token: int) -> bool:
        """Whether the model's turn ends with ``token`` (end of generation, or the start of another turn)."""
        return bool(L.llama_vocab_is_eog(self.vocab, token)) or token in self.turn_markers

    def _find_turn_markers(self) -> frozenset[int]:
        """Control tokens the chat template writes around turns (e.g. Gemma's <start_of_turn>).

        A model that emits one of these has finished its turn and is starting
        to write the next speaker's: the generation ends there, as it does at
        end-of-generation tokens. (Base checkpoints often close a turn this way
        instead of with <end_of_turn>.) Control tokens a template does not use,
        such as tool-call markers, are not affected.
        """
        probe = [Message(role="system", content="s"), Message(role="user", content="u"), Message(role="assistant", content="a"), Message(role="user", content="v")]
        try:
            tokens = self.render_tokens(self.template.render(probe))
        except AIOSError:
            return frozenset()
        return frozenset(t for t in tokens if L.llama_vocab_is_control(self.vocab, t))
