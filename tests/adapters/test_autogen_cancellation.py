"""AutoGen's CancellationToken cancels a model call that is a kernel syscall, for create and create_stream.

Catches: the adapter no longer linking the token to the syscall (the call would then run to its end, here
~13 s of sim time, instead of being cancelled within the wait below), and a cancelled call left running in
the kernel.
"""

from __future__ import annotations

import asyncio

import pytest
from autogen_core import CancellationToken
from autogen_core.models import UserMessage
from autogen_ext.models.openai import OpenAIChatCompletionClient

import aios
from aios_core.cores.sim import SimCore

pytestmark = pytest.mark.frameworks


@pytest.mark.parametrize("kind", ["create", "create_stream"])
async def test_the_token_cancels_the_kernel_call(kind, make_kernel):
    # every call would take max_tokens (256) steps of 50 ms: far longer than the test waits
    kernel = make_kernel(cores=[SimCore(t0=0.05, a=0.0, b=0.0, default_tokens=(10**6, 10**6))], auto_register_agents=True)
    async with kernel:
        with aios.patched("autogen", kernel):
            client = OpenAIChatCompletionClient(model="gpt-4o-mini", api_key="sk-unused")
            token = CancellationToken()
            messages = [UserMessage(content="hi", source="user")]
            if kind == "create":
                task = asyncio.ensure_future(client.create(messages, cancellation_token=token))
            else:
                async def consume() -> list:
                    return [item async for item in client.create_stream(messages, cancellation_token=token)]

                task = asyncio.ensure_future(consume())
            pool = kernel.pools["sim"]
            for _ in range(200):  # until the syscall runs on the core
                if pool.running:
                    break
                await asyncio.sleep(0.01)
            assert pool.running == 1
            token.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
            for _ in range(200):  # the kernel lets go of the cancelled call
                if not pool.running:
                    break
                await asyncio.sleep(0.01)
            assert pool.running == 0 and pool.completed == 0
