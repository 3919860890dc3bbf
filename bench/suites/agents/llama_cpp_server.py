"""llama.cpp's own ``llama-server``: the baseline an expert runs instead of an agent OS.

``llama-server`` serves ``-np`` slots with continuous batching, a prompt cache
per slot, a host-RAM prompt cache and (``--kv-unified``) one KV buffer shared
by all slots. It is what a CPU user puts behind 16 agents, so it is the
baseline every real-engine comparison reports first.

The binaries come from ``scripts/build_llama_server.sh``: built from the very
llama.cpp source vendored in the pinned llama-cpp-python sdist, with the same
portable CMake flags and the same patches (``scripts/patches/llama.cpp``) as
the wheel, into a cache keyed by flags, version and patches
(``~/.cache/aios/llama-server/<key>/``). :func:`find_binary` finds them
(``$AIOS_LLAMA_SERVER`` / ``$AIOS_LLAMA_BATCHED_BENCH`` override); when they
are missing, :class:`LlamaServerMissing` names the exact build command.

Like for like with the kernel's llamacpp core: the same GGUF, the core's chat
template (``--jinja --chat-template-file``), the same threads, seed and KV
cells, ``--swa-full`` as the core (a sliding-window model's prompt cache can
only be reused with the full cache), greedy through the request.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from aios.bench.suites.agents.child_process import end_process

log = logging.getLogger(__name__)

#: keep in step with scripts/llama_flags.sh (a test compares the keys)
LLAMA_VERSION = "0.3.36"
CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF "
    "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
)
#: keep in step with scripts/build_llama_server.sh
SERVER_CMAKE_ARGS = (
    "-DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_TOOLS=ON "
    "-DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DBUILD_SHARED_LIBS=OFF"
)
#: the patches to the vendored llama.cpp that the wheel and these binaries are built with (part of the key)
PATCH_DIR = Path("scripts") / "patches" / "llama.cpp"
BINARIES = ("llama-server", "llama-batched-bench")
ENV_OVERRIDES = {"llama-server": "AIOS_LLAMA_SERVER", "llama-batched-bench": "AIOS_LLAMA_BATCHED_BENCH"}
BUILD_COMMAND = "nice bash scripts/build_llama_server.sh"


class LlamaServerMissing(RuntimeError):
    """The llama.cpp binaries are not built here; the message names the command that builds them."""


class LlamaServerFailed(RuntimeError):
    """llama-server exited or did not become ready; the message names its log."""


def patches_hash(root: Path | None = None) -> str:
    """The hash of the patches both builds apply to the vendored llama.cpp (``scripts/patches/llama.cpp``), as
    ``scripts/llama_flags.sh`` computes it; that of no patch outside a source checkout."""
    root = root or _repo_root()
    files = sorted((root / PATCH_DIR).glob("*.patch")) if root else []
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]


def wheel_record() -> dict[str, str]:
    """The llama-cpp-python wheel set-up builds: its pinned version and the patches of this checkout."""
    return {"version": LLAMA_VERSION, "patches": patches_hash()}


def cache_key(
    cmake_args: str = CMAKE_ARGS, server_args: str = SERVER_CMAKE_ARGS, version: str = LLAMA_VERSION, patches: str | None = None
) -> str:
    """The cache directory's name: a hash of everything that changes the binaries (as the build script computes it)."""
    patches = patches_hash() if patches is None else patches
    return hashlib.sha256(f"{cmake_args} {server_args} {version} {patches}".encode()).hexdigest()[:12]


def cache_root() -> Path:
    explicit = os.environ.get("AIOS_LLAMA_SERVER_CACHE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "aios" / "llama-server"


def cache_dir() -> Path:
    return cache_root() / cache_key()


def _repo_root() -> Path | None:
    """The checkout holding scripts/build_llama_server.sh (an editable install), if any."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "scripts" / "build_llama_server.sh").is_file():
            return parent
    return None


def find_binary(name: str = "llama-server") -> Path:
    """The binary to run: ``$AIOS_LLAMA_SERVER`` (or ``$AIOS_LLAMA_BATCHED_BENCH``), else the build cache.

    Raises :class:`LlamaServerMissing` naming the build command when neither exists.
    """
    if name not in ENV_OVERRIDES:
        raise ValueError(f"unknown llama.cpp binary {name!r}; expected one of {', '.join(BINARIES)}")
    override = os.environ.get(ENV_OVERRIDES[name])
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise LlamaServerMissing(f"${ENV_OVERRIDES[name]} points to {path}, which is not an executable file")
        return path
    path = cache_dir() / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    root = _repo_root()
    where = f"cd {root} && " if root else ""
    raise LlamaServerMissing(
        f"{name} is not built for this llama.cpp version and flag set (looked in {path.parent}). Build it once "
        f"(15-25 minutes on 2 cores, offline apart from the PyPI sdist):\n    {where}{BUILD_COMMAND}\n"
        f"or pass --build to the benchmark, or point ${ENV_OVERRIDES[name]} at a binary."
    )


def build_record(binary: Path | None = None) -> dict[str, Any] | None:
    """What the llama.cpp binary that runs was built from, read from the ``BUILD_FLAGS`` beside it.

    Read from the binary, not computed from this checkout: ``$AIOS_LLAMA_SERVER`` can point at another build
    (stock llama.cpp, what a user downloads), and a benchmark's JSON must name the engine that actually ran.
    ``patches`` is the patches' hash, ``"none"`` for a build made before the build script recorded patches
    (which applied none), ``None`` when the binary has no ``BUILD_FLAGS`` (built elsewhere: unknown).
    ``None`` when no binary is built here.
    """
    try:
        binary = binary or find_binary("llama-server")
    except LlamaServerMissing:
        return None
    record: dict[str, Any] = {"binary": str(binary), "cache_key": None, "version": None, "patches": None}
    if binary.parent.parent == cache_root():
        record["cache_key"] = binary.parent.name
    flags = binary.parent / "BUILD_FLAGS"
    if flags.is_file():
        lines = flags.read_text().splitlines()
        record["version"] = lines[0] if lines else None
        found = [line.split(" ", 1)[1] for line in lines if line.startswith("patches ")]
        record["patches"] = found[0] if found else "none"
    return record


def build(timeout: float = 3600.0) -> Path:
    """Run the build script (when asked with ``--build``); returns the cache directory."""
    root = _repo_root()
    if root is None:
        raise LlamaServerMissing("scripts/build_llama_server.sh is not available: this is not a source checkout of AIOS")
    subprocess.run(["nice", "bash", str(root / "scripts" / "build_llama_server.sh")], check=True, timeout=timeout)
    return cache_dir()


@lru_cache(maxsize=8)
def help_text(binary: str) -> str:
    """``llama-server --help`` (cached per binary): which options this version knows."""
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
    return out.stdout + out.stderr


def supports(binary: str | Path, option: str) -> bool:
    return re.search(rf"(^|[\s,]){re.escape(option)}([\s,=]|$)", help_text(str(binary)), re.MULTILINE) is not None


def write_chat_template(directory: Path, architecture: str = "gemma3", bos_token: str = "<bos>", eos_token: str = "<eos>") -> Path:
    """The kernel core's chat template as a Jinja file for ``--chat-template-file`` (both sides render alike)."""
    from aios_core.cores.chat_template import template_for_model

    template = template_for_model(None, architecture, bos_token=bos_token, eos_token=eos_token)
    path = directory / f"{architecture}-chat-template.jinja"
    path.write_text(template.source)
    return path


@dataclass(frozen=True)
class ServerConfig:
    """What the server is started with; every field mirrors an option of the kernel's llamacpp core."""

    model_path: Path
    slots: int
    #: KV cells in all: with --kv-unified one buffer all slots share (as the core's n_ctx), else -c is split over -np
    n_ctx: int
    threads: int = 1
    seed: int = 0
    n_batch: int = 512
    #: llama-server's own default micro-batch, kept as shipped. The core computes micro-batches of 63 tokens
    #: (see aios_core.cores.llamacpp, "Micro-batches under 64 tokens"); the agents study's
    #: ``--llama-server-arg=-ub --llama-server-arg=63`` measures llama-server with that setting too.
    n_ubatch: int = 512
    alias: str = "gemma-3-270m"
    chat_template_file: Path | None = None
    extra_args: tuple[str, ...] = ()


def server_argv(binary: str | Path, config: ServerConfig, port: int, *, options: set[str] | None = None) -> list[str]:
    """The command line; ``options`` are the optional flags this version supports (default: asked from ``--help``).

    ``-c`` is the KV cells in all, as the core's ``n_ctx``. With ``--kv-unified``
    the slots share them as the core's sequences do; a version without it divides
    ``-c`` by ``-np`` (each slot gets ``n_ctx / slots``), still the same cells in all.
    """
    known = options if options is not None else {o for o in ("--kv-unified", "--swa-full", "--jinja", "--no-webui") if supports(binary, o)}
    argv = [
        str(binary), "-m", str(config.model_path), "--alias", config.alias,
        "--host", "127.0.0.1", "--port", str(port),
        "-np", str(config.slots), "-c", str(config.n_ctx),
        "-t", str(config.threads), "-tb", str(config.threads),
        "-b", str(config.n_batch), "-ub", str(config.n_ubatch),
        "--seed", str(config.seed),
    ]
    if "--kv-unified" in known:
        argv.append("--kv-unified")
    if "--swa-full" in known:
        argv.append("--swa-full")
    if "--no-webui" in known:
        argv.append("--no-webui")
    if config.chat_template_file is not None:
        if "--jinja" not in known:
            raise LlamaServerFailed(f"{binary} does not know --jinja; it cannot take the core's chat template")
        argv += ["--jinja", "--chat-template-file", str(config.chat_template_file)]
    return argv + list(config.extra_args)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    """One llama-server process: :meth:`start` returns its OpenAI base URL, :meth:`stop` ends it."""

    config: ServerConfig
    binary: Path | None = None
    log_dir: Path | None = None
    port: int = 0
    argv: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = None
    _log: Any = None
    _tmp: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 300.0) -> str:
        binary = self.binary or find_binary("llama-server")
        self._tmp = Path(tempfile.mkdtemp(prefix="aios-llama-server-"))
        config = self.config
        if config.chat_template_file is None:
            from dataclasses import replace

            config = replace(config, chat_template_file=write_chat_template(self._tmp))
        self.port = self.port or free_port()
        self.argv = server_argv(binary, config, self.port)
        log_dir = self.log_dir or self._tmp
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"llama-server-{self.port}.log"
        self._log = self.log_path.open("wb")
        log.info("starting %s", " ".join(self.argv))
        self._proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LlamaServerFailed(f"llama-server exited with {self._proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2.0).status_code == 200:
                    return self.base_url
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise LlamaServerFailed(f"llama-server did not become ready within {timeout:g} s; see {self.log_path}")

    def restart(self, timeout: float = 300.0) -> str:
        """A fresh process on the same port: every slot and its host-RAM prompt cache empty.

        A benchmark round must not reuse what the previous round computed for the same prompts (AIOS's cores are
        emptied alike). One short request then builds the compute graphs, so first-use costs stay out of the round
        as they do for a kernel that keeps running; its prompt shares nothing with a task's.
        """
        self.stop()
        url = self.start(timeout)
        body = {"model": self.config.alias, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        httpx.post(f"{url}/chat/completions", json=body, timeout=timeout).raise_for_status()
        return url

    def kill(self) -> None:
        """End the process abruptly (the scale-out study's engine failure)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def stop(self) -> None:
        end_process(self._proc, self._log)
        self._proc, self._log = None, None
        if self._tmp is not None and self.log_dir is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def describe(self) -> dict[str, Any]:
        binary = Path(self.argv[0]) if self.argv else self.binary
        return {"server": "llama.cpp llama-server", "argv": self.argv, "llama_cpp_python": LLAMA_VERSION,
                "build": build_record(binary)}
