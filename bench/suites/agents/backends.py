"""The model behind both setups: one server for "without AIOS", one kernel core for "with AIOS".

``--model local``: the embedded Gemma 3 270M GGUF. Without AIOS it is served
by llama-cpp-python's OpenAI-compatible server (a separate process, one
request at a time; see :mod:`aios.bench.suites.agents.llama_server`); with AIOS by the
kernel's llamacpp core (continuous batching). Both get the same GGUF, the
same context size, the same threads and the same chat template.

``--model sim``: the sim core on real time, served without AIOS by
:class:`~bench.agents.sim_server.SimServer` (serial) and with AIOS by the
kernel (batched). Seconds instead of minutes: for tests and dry runs.
"""

from __future__ import annotations

import abc
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from aios_core.cores.base import LLMCore
from aios.bench.suites.agents.base import Endpoint
from aios.bench.suites.agents.sim_server import SimServer, free_port

#: sim costs for real-time runs: fast enough for CI, slow enough that queueing shows
SIM_REALTIME_COSTS = {"t0": 0.002, "a": 0.00002, "b": 0.0006}


class Backend(abc.ABC):
    key: str

    @abc.abstractmethod
    def start_native(self) -> Endpoint:
        """Start the "without AIOS" server and return where agents find it."""

    @abc.abstractmethod
    def stop_native(self) -> None: ...

    @abc.abstractmethod
    def make_core(self) -> LLMCore:
        """A fresh core for the "with AIOS" kernel."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]: ...


class LocalBackend(Backend):
    key = "local"

    def __init__(self, *, n_ctx: int, n_threads: int, max_batch: int, seed: int, model_path: str | None, log_dir: Path) -> None:
        from aios_core.cores.model_files import DEFAULT_MODEL_NAME, default_model_path

        self.model_path = Path(model_path) if model_path else default_model_path()
        self.model_name = DEFAULT_MODEL_NAME if model_path is None else self.model_path.stem
        self.n_ctx, self.n_threads, self.max_batch, self.seed = n_ctx, n_threads, max_batch, seed
        self.log_dir = log_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start_native(self, timeout: float = 300.0) -> Endpoint:
        port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"llama-server-{port}.log"
        self._log = self.log_path.open("wb")
        argv = [
            sys.executable, "-m", "aios.bench.suites.agents.llama_server",
            "--model", str(self.model_path), "--model_alias", self.model_name,
            "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", str(self.n_ctx), "--n_batch", "512",
            "--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads),
            "--interrupt_requests", "False",  # queue concurrent requests (the default would cut running streams short)
            "--seed", str(self.seed),
        ]
        self._proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama-cpp-python's server exited with {self._proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{url}/models", timeout=2.0).status_code == 200:
                    return Endpoint(base_url=url, model=self.model_name)
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop_native()
        raise RuntimeError(f"llama-cpp-python's server did not answer within {timeout:g} s; see {self.log_path}")

    def stop_native(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def make_core(self) -> LLMCore:
        from aios_core.cores.llamacpp import LlamaCppCore

        return LlamaCppCore(
            model_path=self.model_path if self.model_name != "gemma-3-270m" else None,
            n_ctx=self.n_ctx, max_batch=self.max_batch, n_threads=self.n_threads, seed=self.seed,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "gguf": str(self.model_path),
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "aios_max_batch": self.max_batch,
            "native_server": "llama-cpp-python server (python -m llama_cpp.server), one request at a time",
        }


class SimBackend(Backend):
    key = "sim"

    def __init__(self, *, max_batch: int, seed: int, costs: dict[str, float] | None = None) -> None:
        self.max_batch, self.seed = max_batch, seed
        self.costs = dict(costs or SIM_REALTIME_COSTS)
        self._server: SimServer | None = None

    def _core(self, max_batch: int) -> Any:
        from aios_core.cores.sim import SimCore

        return SimCore(max_batch=max_batch, seed=self.seed, prefix_cache=0, **self.costs)

    def start_native(self) -> Endpoint:
        self._server = SimServer(self._core(1), model="sim")
        return Endpoint(base_url=self._server.start(), model="sim")

    def stop_native(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def make_core(self) -> LLMCore:
        return self._core(self.max_batch)  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        return {
            "model": "sim",
            "costs": self.costs,
            "aios_max_batch": self.max_batch,
            "native_server": "bench sim server (OpenAI-compatible), one request at a time",
        }
