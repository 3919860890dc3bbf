"""The embedded model on both sides: the same prompt gives the same tokens, and a tiny comparison runs."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from aios.bench.suites.agents.backends import LocalBackend
from aios.bench.suites.run import Options, compare

pytestmark = pytest.mark.model


async def test_server_and_core_see_the_same_prompt_and_decode_the_same_text(tmp_path):
    backend = LocalBackend(n_ctx=2048, n_threads=1, max_batch=2, seed=0, model_path=None, log_dir=tmp_path)
    endpoint = await asyncio.to_thread(backend.start_native)
    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "def add(a, b):"}]
    try:
        async with httpx.AsyncClient(timeout=600) as client:
            r = await client.post(
                f"{endpoint.base_url}/chat/completions",
                json={"model": endpoint.model, "messages": messages, "temperature": 0, "max_completion_tokens": 12, "seed": 0},
            )
        served = r.json()
    finally:
        backend.stop_native()
    from aios_core.kernel import Kernel

    async with Kernel(cores=[backend.make_core()], data_dir=tmp_path / "k", entry_point_plugins=False) as kernel:
        response = await kernel.agent("parity").achat(messages, temperature=0, max_tokens=12, seed=0)
    assert served["usage"]["prompt_tokens"] == response.usage.prompt_tokens
    assert served["usage"]["completion_tokens"] == 12  # max_completion_tokens is honoured as max_tokens
    assert served["choices"][0]["message"]["content"] == response.content

    result = await compare(Options(suite="humaneval", framework="sdk", agents=2, model="local", rounds=1, limit=2, max_tokens=16, progress=False, n_ctx=4096))
    for r in result["rounds"]:
        assert r["errors"] == 0 and r["completion_tokens"] > 0
