"""A kernel server on a loopback port over a fast sim core, for the attacker tests (imported by name)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from aios_core.config import load_config
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.server.app import BackgroundServer
from aios_core.server.settings import ServerSettings


class LiveKernel:
    def __init__(self, server: BackgroundServer) -> None:
        self.server = server
        self.kernel = server.kernel
        self.url = server.url
        self.port = server.server.port
        self.admin = {"Authorization": f"Bearer {server.admin_token}"}
        self.http = httpx.Client(base_url=self.url, timeout=30.0)

    def register(self, name: str, **options: Any) -> dict[str, str]:
        response = self.http.post("/v1/agents", json={"name": name, **options}, headers=self.admin)
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    def on_loop(self, fn: Any, *args: Any) -> Any:
        return self.server.call_soon(fn, *args)


@contextlib.contextmanager
def live_kernel(data_dir: Path, *, scheduler: str = "fifo", settings: ServerSettings | None = None) -> Iterator[LiveKernel]:
    options: dict[str, Any] = {"managers": {"embeddings": {"kind": "hashing", "dim": 32}, "storage": {"synchronous": "NORMAL"}}}
    config = load_config(data_dir=data_dir, entry_point_plugins=False, **options)
    kernel = Kernel(config, cores=[SimCore(t0=0.0005, a=0.0, b=0.0)], scheduler=scheduler)
    server = BackgroundServer(kernel, settings=settings or ServerSettings(grace_seconds=1.0)).start()
    live = LiveKernel(server)
    try:
        yield live
    finally:
        live.http.close()
        server.stop()
