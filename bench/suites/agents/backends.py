"""The model behind the three setups: two servers "without AIOS", one kernel core "with AIOS".

``--model local``: the embedded Gemma 3 270M GGUF. Without AIOS it is served
by llama-cpp-python's OpenAI-compatible server (``native``: a separate
process, one request at a time; see :mod:`aios.bench.suites.agents.llama_server`)
and by llama.cpp's own ``llama-server`` (``llama_server``: ``-np`` slots,
continuous batching, its prompt caches as shipped; see
:mod:`aios.bench.suites.agents.llama_cpp_server`), the baseline that counts;
with AIOS by the kernel's llamacpp core (continuous batching). All get the
same GGUF, the same context size, the same threads and the same chat template.

``--model sim``: the sim core on real time, served without AIOS by
:class:`~bench.agents.sim_server.SimServer` (serial, and batched with a
prefix cache as the stand-in for llama-server) and with AIOS by the kernel
(batched). Seconds instead of minutes: for tests and dry runs.

:class:`AIOSServe` runs ``aios serve`` as its own process (what a user
deploys), for studies whose clients speak HTTP to every setup alike.
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
from aios.bench.suites.agents.base import Endpoint
from aios.bench.suites.agents.child_process import end_process
from aios.bench.suites.agents.sim_server import SimServer, free_port

from aios_core.cores.base import LLMCore
from aios_core.errors import ConfigError

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
    def start_batched(self, slots: int) -> Endpoint:
        """Start the batching engine an expert runs without AIOS (llama-server, ``slots`` at once)."""

    @abc.abstractmethod
    def stop_batched(self) -> None: ...

    @abc.abstractmethod
    def cold_batched(self) -> None:
        """Empty the batching engine's prompt caches before a round, as AIOS's cores are emptied: the rounds of a
        task suite send the same prompts, and a warm engine would skip the prefill its previous round did."""

    @abc.abstractmethod
    def make_core(self) -> LLMCore:
        """A fresh core for the "with AIOS" kernel."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]: ...


class LocalBackend(Backend):
    key = "local"

    def __init__(
        self, *, n_ctx: int, n_threads: int, max_batch: int, seed: int, model_path: str | None, log_dir: Path,
        llama_server_args: tuple[str, ...] = (),
    ) -> None:
        from aios_core.cores.model_files import DEFAULT_MODEL_NAME, default_model_path

        self.model_path = Path(model_path) if model_path else default_model_path()
        self.model_name = DEFAULT_MODEL_NAME if model_path is None else self.model_path.stem
        self.n_ctx, self.n_threads, self.max_batch, self.seed = n_ctx, n_threads, max_batch, seed
        self.log_dir = log_dir
        self.llama_server_args = llama_server_args
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._llama_server: Any = None

    def start_batched(self, slots: int) -> Endpoint:
        from aios.bench.suites.agents.llama_cpp_server import LlamaServer, ServerConfig

        config = ServerConfig(
            model_path=self.model_path, slots=slots, n_ctx=self.n_ctx, threads=self.n_threads, seed=self.seed, alias=self.model_name,
            extra_args=self.llama_server_args,
        )
        self._llama_server = LlamaServer(config, log_dir=self.log_dir)
        return Endpoint(base_url=self._llama_server.start(), model=self.model_name)

    def stop_batched(self) -> None:
        if self._llama_server is not None:
            self._llama_server.stop()
            self._llama_server = None

    def cold_batched(self) -> None:
        # llama-server empties a slot only through an API that needs --slot-save-path, and not its host-RAM
        # prompt cache: a fresh process on the same port is the one sure way
        if self._llama_server is not None:
            self._llama_server.restart()

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
        end_process(self._proc, self._log)
        self._proc, self._log = None, None

    def make_core(self) -> LLMCore:
        from aios_core.cores.llamacpp import LlamaCppCore

        return LlamaCppCore(
            model_path=self.model_path if self.model_name != "gemma-3-270m" else None,
            n_ctx=self.n_ctx, max_batch=self.max_batch, n_threads=self.n_threads, seed=self.seed,
        )

    def describe(self) -> dict[str, Any]:
        from aios.bench.suites.agents.llama_cpp_server import build_record, patches_hash

        return {
            "model": self.model_name,
            "gguf": str(self.model_path),
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "aios_max_batch": self.max_batch,
            # the wheel scripts/setup.sh installs is built with this checkout's patches to llama.cpp
            "aios_llama_cpp_patches": patches_hash(),
            "native_server": "llama-cpp-python server (python -m llama_cpp.server), one request at a time",
            # described before the server starts too (a suite records its environment first): the binary it will run
            "batched_server": self._llama_server.describe() if self._llama_server is not None
            else {"server": "llama.cpp llama-server", "build": build_record()},
        }


class SimBackend(Backend):
    key = "sim"

    def __init__(self, *, max_batch: int, seed: int, costs: dict[str, float] | None = None) -> None:
        self.max_batch, self.seed = max_batch, seed
        self.costs = dict(costs or SIM_REALTIME_COSTS)
        self._server: SimServer | None = None
        self._batched: SimServer | None = None

    def _core(self, max_batch: int, prefix_cache: int = 0) -> Any:
        from aios_core.cores.sim import SimCore

        return SimCore(max_batch=max_batch, seed=self.seed, prefix_cache=prefix_cache, **self.costs)

    def start_batched(self, slots: int) -> Endpoint:
        # the stand-in for llama-server: the same engine batching up to `slots` requests, with a prefix cache
        self._batched = SimServer(self._core(slots, prefix_cache=max(1, slots)), model="sim", serial=False)
        return Endpoint(base_url=self._batched.start(), model="sim")

    def stop_batched(self) -> None:
        if self._batched is not None:
            self._batched.stop()
            self._batched = None

    def cold_batched(self) -> None:
        if self._batched is not None:
            self._batched.clear_cache()

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
            "batched_server": "bench sim server batching every request it has (stand-in for llama-server), with a prefix cache",
        }


class AIOSServe:
    """``aios serve`` in its own process with a given kernel configuration; agents are registered over HTTP.

    The admin token is fixed through ``AIOS_SERVER_ADMIN_TOKEN`` (a fresh random
    one per start) so the harness can register agents; the per-agent rate limit
    is off (a benchmark's agents are not abusive clients).
    """

    def __init__(self, config: dict[str, Any], *, work_dir: Path, label: str = "aios serve") -> None:
        self.config, self.work_dir, self.label = config, work_dir, label
        self.port = free_port()
        self.admin_token = "aios-bench-" + os.urandom(16).hex()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def _toml(self) -> str:
        import json as _json

        def value(v: Any) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, (int, float)):
                return repr(v)
            if isinstance(v, (list, tuple)):
                return "[" + ", ".join(value(x) for x in v) + "]"
            if isinstance(v, dict):  # an inline table (scheduler_options)
                return "{" + ", ".join(f"{_json.dumps(str(k))} = {value(x)}" for k, x in v.items()) + "}"
            return _json.dumps(str(v))  # a TOML basic string is a JSON string

        lines = [f"{k} = {value(v)}" for k, v in self.config.items() if k != "cores"]
        for core in self.config.get("cores", []):
            lines.append("[[cores]]")
            lines += [f"{k} = {value(v)}" for k, v in core.items()]
        return "\n".join(lines) + "\n"

    def _serve_argv(self) -> list[str]:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.work_dir / f"aios-{self.port}.toml"
        config_path.write_text(self._toml())
        return [sys.executable, "-m", "aios_core.cli", "serve", "--config", str(config_path), "--port", str(self.port), "--no-confirm"]

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIOS_")}
        env.update(AIOS_SERVER_ADMIN_TOKEN=self.admin_token, AIOS_SERVER_RATE_PER_AGENT="0", AIOS_SERVER_MAX_CONCURRENT_PER_AGENT="0", PYTHONUNBUFFERED="1")
        return env

    def check(self, timeout: float = 120.0) -> None:
        """``aios serve --check`` on this configuration, with the environment :meth:`start` gives it.

        A study calls this before its first round, so an option the kernel refuses stops it at once
        rather than after the baselines' rounds.
        """
        argv = [*self._serve_argv(), "--check"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=self._env(), cwd=self.work_dir, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"`aios serve --check` did not finish within {timeout:g} s") from None
        if done.returncode != 0:
            said = " ".join((done.stdout + done.stderr).split()).removeprefix("error: ") or f"exit status {done.returncode}"
            raise ConfigError(f"aios serve refused the configuration: {said}")

    def start(self, timeout: float = 300.0) -> str:
        argv = self._serve_argv()
        self.log_path = self.work_dir / f"aios-serve-{self.port}.log"
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=self._env(), cwd=self.work_dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"aios serve exited with {self._proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.root}/readyz", timeout=2.0).status_code == 200:
                    return self.base_url
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"aios serve did not become ready within {timeout:g} s; see {self.log_path}")

    async def register(self, client: httpx.AsyncClient, names: list[str]) -> dict[str, str]:
        """Register the agents; returns each one's token (its API key)."""
        tokens: dict[str, str] = {}
        for name in names:
            r = await client.post(f"{self.root}/v1/agents", json={"name": name}, headers={"Authorization": f"Bearer {self.admin_token}"})
            r.raise_for_status()
            tokens[name] = r.json()["token"]
        return tokens

    async def end(self, client: httpx.AsyncClient, names: list[str]) -> None:
        """End the agents (their tokens, snapshots and scheduling history go)."""
        for name in names:
            r = await client.delete(f"{self.root}/v1/agents/{name}", headers={"Authorization": f"Bearer {self.admin_token}"})
            r.raise_for_status()

    def stats(self) -> dict[str, Any]:
        r = httpx.get(f"{self.root}/v1/kernel/stats", headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=10.0)
        return r.json() if r.status_code == 200 else {}

    def stop(self) -> None:
        end_process(self._proc, self._log, grace=60)
        self._proc, self._log = None, None

    def describe(self) -> dict[str, Any]:
        return {"server": "aios serve", "config": self.config}
