"""``ignore_eos``: a request that must generate exactly max_tokens (what benchmarks need for token parity).

llama-server takes ``ignore_eos`` in its request body; the kernel's OpenAI endpoint takes the same field and
the llama.cpp core masks its end-of-generation tokens and turn markers. Catches: the option dropped by the
endpoint, the mask not applied (an end token chosen anyway), or the mask applied to every request.
"""

from __future__ import annotations

import importlib
import uuid

import numpy as np
import pytest

from aios_core.cores.llamacpp_sampling import TokenChooser
from aios_core.server.openai_api import ChatCompletionBody, to_llm_request
from aios_core.syscalls import LLMRequest, Message


def test_a_banned_token_is_never_chosen_and_the_next_best_is() -> None:
    logits = np.array([0.1, 3.0, 2.0, -1.0], dtype=np.float32)
    free = TokenChooser(None, 4, temperature=0.0, top_p=1.0, seed=0, grammar=None)
    masked = TokenChooser(None, 4, temperature=0.0, top_p=1.0, seed=0, grammar=None, banned=np.array([1]))
    assert free.choose(logits.copy(), 0) == 1
    assert masked.choose(logits.copy(), 0) == 2
    # an empty ban list is no ban
    assert TokenChooser(None, 4, temperature=0.0, top_p=1.0, seed=0, grammar=None, banned=np.array([], dtype=np.int64)).banned is None


def test_the_openai_endpoint_passes_ignore_eos_to_the_core() -> None:
    body = ChatCompletionBody(model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=5, ignore_eos=True)
    assert to_llm_request(body, default_max_tokens=16).extra["ignore_eos"] is True
    plain = ChatCompletionBody(model="default", messages=[{"role": "user", "content": "hi"}])
    assert "ignore_eos" not in to_llm_request(plain, default_max_tokens=16).extra


@pytest.mark.model
async def test_the_core_masks_end_tokens_only_when_asked() -> None:
    importlib.import_module("llama_cpp")
    from aios_core.cores.base import Generation
    from aios_core.cores.llamacpp import LlamaCppCore

    core = LlamaCppCore(n_ctx=1024, max_batch=2, n_threads=1, prefix_slots=0)
    await core.start()
    try:
        request = LLMRequest(messages=[Message(role="user", content="Say hi.")], max_tokens=9, extra={"ignore_eos": True})
        banned = core._banned(request)
        assert banned is not None
        ends = {core._llama.prompts.tokenize(m, False)[0] for m in ("<start_of_turn>", "<end_of_turn>", "<eos>")}
        assert ends <= set(banned.tolist())
        assert core._banned(request.model_copy(update={"extra": {}})) is None
        n, finish = 0, None
        async for chunk in core.generate(Generation(id=uuid.uuid4().hex, request=request)):
            n += chunk.tokens
            finish = chunk.finish_reason or finish
        assert (n, finish) == (9, "length")
    finally:
        await core.stop()
