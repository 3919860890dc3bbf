"""A real kernel server on a loopback port (uvicorn in a background thread) over fast sim cores."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from aios_core.config import load_config
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.server.app import BackgroundServer
from aios_core.server.settings import ServerSettings


class Live:
    """A started server plus helpers to register agents and read the kernel from the test thread."""

    def __init__(self, server: BackgroundServer) -> None:
        self.server = server
        self.url = server.url
        self.admin = server.admin_token
        self.kernel = server.kernel
        #: one pooled client: a fresh httpx call builds an SSL context each time, which dominates a test's run time
        self.http = httpx.Client(base_url=self.url, timeout=30.0)

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}

    def register(self, name: str, **options: Any) -> str:
        response = self.http.post("/v1/agents", json={"name": name, **options}, headers=self.admin_headers)
        assert response.status_code == 201, response.text
        return response.json()["token"]  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        response = self.http.get("/v1/kernel/stats", headers=self.admin_headers)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def on_loop(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.server.call_soon(fn, *args)

    def core_running(self) -> int:
        return sum(self.on_loop(lambda: [c.running() for c in self.kernel.cores.values()]))

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        """Wait for a condition observed from outside the server (another thread/process owns it)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.stop()
        self.http.close()


def _start(data_dir, *, cores: list[Any] | None = None, settings: ServerSettings | None = None, scheduler: str = "fifo", **options: Any) -> Live:
    cores = cores if cores is not None else [SimCore(t0=0.001, a=0.0, b=0.0)]
    # cheap embeddings: storage writes embed text for vector search
    options.setdefault("managers", {"embeddings": {"kind": "hashing", "dim": 64}, "storage": {"synchronous": "NORMAL"}})
    config = load_config(data_dir=data_dir, entry_point_plugins=False, **options)
    kernel = Kernel(config, cores=cores, scheduler=scheduler)
    return Live(BackgroundServer(kernel, settings=settings or ServerSettings(grace_seconds=2.0)).start())


@pytest.fixture
def live_server(tmp_path) -> Any:
    """Factory: ``live_server(cores=..., settings=ServerSettings(...), scheduler=..., data_dir=...)`` -> :class:`Live`."""
    started: list[Live] = []

    def start(*, data_dir=None, **options: Any) -> Live:
        live = _start(data_dir or tmp_path / "data", **options)
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


@pytest.fixture
def server(live_server) -> Live:
    return live_server()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory) -> Any:
    """One server for a module's many small bad-input cases (each registers its own agent token)."""
    live = _start(tmp_path_factory.mktemp("shared") / "data")
    yield live
    live.stop()
