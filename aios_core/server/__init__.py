"""The kernel as a service: ``aios serve`` (HTTP syscalls, OpenAI-compatible API), the remote SDK client, ``aios top``/``ps``.

Submodules import FastAPI/uvicorn lazily from here: ``aios_core.server.remote``
(the client) needs only httpx, so agents can connect without the server extra.
"""
