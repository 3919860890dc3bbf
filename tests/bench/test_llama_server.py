"""The llama-server baseline: its build cache key, binary lookup, command line, chat template and setup order."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from aios.bench.suites.agents import llama_cpp_server as ls
from aios.bench.suites.modes import round_order

REPO = Path(__file__).resolve().parents[2]


def test_cache_key_matches_the_build_script(tmp_path):
    """The bench looks where the script installs: same flags, same version, same hash (drift in either breaks this)."""
    env = {**os.environ, "AIOS_LLAMA_SERVER_CACHE": str(tmp_path)}
    out = subprocess.run(["bash", str(REPO / "scripts" / "build_llama_server.sh"), "--print-dir"], env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == tmp_path / ls.cache_key()


def test_setup_and_server_build_share_one_flag_file():
    """The wheel and llama-server are compiled with the same portable flags: both scripts source llama_flags.sh."""
    flags = (REPO / "scripts" / "llama_flags.sh").read_text()
    assert f'CMAKE_ARGS="{ls.CMAKE_ARGS}"' in flags and f"LLAMA_VERSION={ls.LLAMA_VERSION}" in flags
    for script in ("setup.sh", "build_llama_server.sh"):
        text = (REPO / "scripts" / script).read_text()
        assert "source scripts/llama_flags.sh" in text
        assert "-DGGML_NATIVE" not in text, f"{script} repeats the flags instead of sourcing them"


def test_cache_key_changes_with_flags_and_version():
    base = ls.cache_key()
    assert ls.cache_key(cmake_args=ls.CMAKE_ARGS.replace("AVX2=ON", "AVX2=OFF")) != base
    assert ls.cache_key(version="0.3.37") != base
    assert ls.cache_key(server_args=ls.SERVER_CMAKE_ARGS + " -DLLAMA_CURL=ON") != base
    assert ls.cache_key(patches=ls.patches_hash(Path("/nonexistent"))) != base  # a build without the patches


def test_both_builds_apply_the_same_patches():
    """The wheel and llama-server run the same kernels: both scripts fetch the sdist through the one function
    that patches it, the patches are part of both keys, and each patch names files of the vendored llama.cpp
    (that they apply is checked by every set-up, which builds from the patched tree)."""
    flags = (REPO / "scripts" / "llama_flags.sh").read_text()
    assert "llama_sdist_patched()" in flags and f"LLAMA_PATCH_DIR={ls.PATCH_DIR.as_posix()}" in flags
    for script in ("setup.sh", "build_llama_server.sh"):
        text = (REPO / "scripts" / script).read_text()
        assert "llama_sdist_patched " in text and "$LLAMA_PATCHES_HASH" in text, script
    patches = sorted((REPO / ls.PATCH_DIR).glob("*.patch"))
    assert patches
    for patch in patches:
        targets = [line.split()[1] for line in patch.read_text().splitlines() if line.startswith("+++ ")]
        assert targets and all(t.startswith("b/vendor/llama.cpp/") for t in targets), patch.name


def test_missing_binary_names_the_build_command(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_LLAMA_SERVER_CACHE", str(tmp_path))
    monkeypatch.delenv("AIOS_LLAMA_SERVER", raising=False)
    with pytest.raises(ls.LlamaServerMissing, match=r"bash scripts/build_llama_server\.sh") as info:
        ls.find_binary("llama-server")
    assert str(tmp_path / ls.cache_key()) in str(info.value) and "--build" in str(info.value)


def test_binary_found_in_the_cache_and_through_the_override(tmp_path, monkeypatch):
    monkeypatch.setenv("AIOS_LLAMA_SERVER_CACHE", str(tmp_path))
    monkeypatch.delenv("AIOS_LLAMA_BATCHED_BENCH", raising=False)
    cached = tmp_path / ls.cache_key() / "llama-batched-bench"
    cached.parent.mkdir()
    cached.write_text("#!/bin/sh\n")
    with pytest.raises(ls.LlamaServerMissing):  # present but not executable
        ls.find_binary("llama-batched-bench")
    cached.chmod(0o755)
    assert ls.find_binary("llama-batched-bench") == cached
    # a binary built under other flags is never picked up
    other = tmp_path / "0123456789ab" / "llama-server"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    monkeypatch.delenv("AIOS_LLAMA_SERVER", raising=False)
    with pytest.raises(ls.LlamaServerMissing):
        ls.find_binary("llama-server")
    monkeypatch.setenv("AIOS_LLAMA_SERVER", str(other))
    assert ls.find_binary("llama-server") == other
    monkeypatch.setenv("AIOS_LLAMA_SERVER", str(tmp_path / "nope"))
    with pytest.raises(ls.LlamaServerMissing, match="AIOS_LLAMA_SERVER"):
        ls.find_binary("llama-server")
    with pytest.raises(ValueError, match="unknown llama.cpp binary"):
        ls.find_binary("llama-cli")


def _binary(path: Path, build_flags: str | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    if build_flags is not None:
        (path.parent / "BUILD_FLAGS").write_text(build_flags)
    return path


def test_the_record_names_the_binary_that_runs_not_the_checkouts_build(tmp_path, monkeypatch):
    """$AIOS_LLAMA_SERVER may be a stock build: the JSON must not claim the checkout's patches for it."""
    monkeypatch.setenv("AIOS_LLAMA_SERVER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AIOS_LLAMA_SERVER", raising=False)
    assert ls.build_record() is None  # nothing built here
    flags = f"{ls.LLAMA_VERSION}\n{ls.CMAKE_ARGS}\n{ls.SERVER_CMAKE_ARGS}\n"
    cached = _binary(tmp_path / "cache" / ls.cache_key() / "llama-server", flags + f"patches {ls.patches_hash()}\n")
    assert ls.build_record() == {"binary": str(cached), "cache_key": ls.cache_key(), "version": ls.LLAMA_VERSION,
                                 "patches": ls.patches_hash()}
    # a build from before patches were recorded applied none
    stock = _binary(tmp_path / "cache" / "2a8916c3f8c1" / "llama-server", flags)
    monkeypatch.setenv("AIOS_LLAMA_SERVER", str(stock))
    assert ls.build_record() == {"binary": str(stock), "cache_key": "2a8916c3f8c1", "version": ls.LLAMA_VERSION,
                                 "patches": "none"}
    # a binary built elsewhere: unknown, not this checkout's
    elsewhere = _binary(tmp_path / "opt" / "llama-server", None)
    monkeypatch.setenv("AIOS_LLAMA_SERVER", str(elsewhere))
    assert ls.build_record() == {"binary": str(elsewhere), "cache_key": None, "version": None, "patches": None}
    server = ls.LlamaServer(ls.ServerConfig(model_path=Path("/m/g.gguf"), slots=2, n_ctx=4096, threads=1, seed=0))
    server.argv = [str(stock), "--port", "1"]
    assert server.describe()["build"]["patches"] == "none"
    # a suite describes its backend before any server starts: the binary that will run is named there too
    from aios.bench.suites.agents.backends import LocalBackend

    monkeypatch.setenv("AIOS_LLAMA_SERVER", str(stock))
    backend = LocalBackend(n_ctx=4096, n_threads=1, max_batch=2, seed=0, model_path=str(tmp_path / "m.gguf"), log_dir=tmp_path)
    described = backend.describe()
    assert described["batched_server"]["build"]["patches"] == "none"
    assert described["aios_llama_cpp_patches"] == ls.patches_hash()


def _argv(options: set[str], template: Path | None = Path("/t/gemma.jinja"), **kw) -> list[str]:
    config = ls.ServerConfig(model_path=Path("/m/gemma.gguf"), slots=16, n_ctx=32768, threads=1, seed=7, chat_template_file=template, **kw)
    return ls.server_argv("/bin/llama-server", config, 8123, options=options)


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_server_argv_mirrors_the_core_options():
    argv = _argv({"--kv-unified", "--swa-full", "--jinja", "--no-webui"})
    assert _value(argv, "-m") == "/m/gemma.gguf" and _value(argv, "--port") == "8123"
    assert _value(argv, "-np") == "16" and _value(argv, "-c") == "32768"
    assert _value(argv, "-t") == "1" and _value(argv, "-tb") == "1" and _value(argv, "--seed") == "7"
    assert "--kv-unified" in argv and "--swa-full" in argv and "--no-webui" in argv
    assert "--jinja" in argv and _value(argv, "--chat-template-file") == "/t/gemma.jinja"
    assert _value(argv, "--host") == "127.0.0.1"


def test_llama_server_keeps_its_own_micro_batch_and_extra_arguments_come_last():
    # as shipped, not the core's 63: the study measures llama-server as an expert runs it, and the variant with
    # --llama-server-arg puts its value after the study's own, where llama.cpp's parser lets the last one win
    argv = _argv({"--jinja"}, extra_args=("-ub", "63"))
    assert _value(argv, "-b") == "512" and _value(argv, "-ub") == "512"
    assert argv[-2:] == ["-ub", "63"]


def test_server_argv_leaves_out_what_this_version_lacks():
    argv = _argv({"--jinja"})
    assert "--kv-unified" not in argv and "--swa-full" not in argv and "--no-webui" not in argv
    with pytest.raises(ls.LlamaServerFailed, match="--jinja"):
        _argv(set())
    assert "--jinja" not in _argv(set(), template=None)


def test_supports_reads_the_help_text(tmp_path):
    fake = tmp_path / "llama-server"
    fake.write_text("#!/bin/sh\necho '  -kvu, --kv-unified    use one KV buffer'\necho '  --jinja'\n")
    fake.chmod(0o755)
    assert ls.supports(fake, "--kv-unified") and ls.supports(fake, "--jinja")
    assert not ls.supports(fake, "--swa-full") and not ls.supports(fake, "--kv")


def test_chat_template_file_is_the_core_template(tmp_path):
    from aios_core.cores.chat_template import GEMMA3_TEMPLATE

    path = ls.write_chat_template(tmp_path)
    assert path.read_text() == GEMMA3_TEMPLATE


def test_round_order_rotates_every_setup_through_every_position():
    setups = ("native", "llama_server", "aios")
    orders = [round_order(setups, i) for i in range(3)]
    assert orders == [("native", "llama_server", "aios"), ("llama_server", "aios", "native"), ("aios", "native", "llama_server")]
    for position in range(3):
        assert {o[position] for o in orders} == set(setups)
    assert round_order(setups, 3) == orders[0]
    assert [round_order(("native", "aios"), i) for i in range(2)] == [("native", "aios"), ("aios", "native")]
    with pytest.raises(ValueError):
        round_order((), 0)


needs_binary = pytest.mark.skipif(
    not (ls.cache_dir() / "llama-server").exists() and not os.environ.get("AIOS_LLAMA_SERVER"),
    reason="llama-server is not built (bash scripts/build_llama_server.sh)",
)


@needs_binary
@pytest.mark.model
def test_llama_server_sees_the_same_prompt_tokens_and_text_as_the_core(tmp_path):
    """Same GGUF, same template, greedy: llama-server and the kernel's core read the same tokens and write the same text."""
    import asyncio

    import httpx

    from aios_core.cores.llamacpp import LlamaCppCore
    from aios_core.cores.model_files import default_model_path
    from aios_core.kernel import Kernel

    messages = [{"role": "system", "content": "You continue lists."}, {"role": "user", "content": "Continue the list: 5, 6, 7,"}]
    server = ls.LlamaServer(ls.ServerConfig(model_path=default_model_path(), slots=2, n_ctx=2048), log_dir=tmp_path)
    server.start()
    try:
        body = {"model": "gemma-3-270m", "messages": messages, "max_tokens": 12, "temperature": 0.0, "seed": 0}
        reply = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120).json()
    finally:
        server.stop()

    async def core_reply():
        kernel = Kernel(cores=[LlamaCppCore(max_batch=2, n_ctx=2048, n_threads=1)], entry_point_plugins=False)
        await kernel.astart()
        try:
            return await kernel.agent("same").achat(messages, max_tokens=12)
        finally:
            await kernel.astop()

    mine = asyncio.run(core_reply())
    assert reply["usage"]["prompt_tokens"] == mine.usage.prompt_tokens
    assert reply["usage"]["completion_tokens"] == mine.usage.completion_tokens == 12
    assert reply["choices"][0]["message"]["content"] == mine.content


def test_batched_bench_command_and_output():
    from aios.bench.studies.cores import batched_bench_argv, parse_batched_bench

    argv = batched_bench_argv("/b/llama-batched-bench", Path("/m.gguf"), n_ctx=4096, prompt_tokens=30, tokens=64, levels=[1, 8], threads=1)
    assert _value(argv, "-npp") == "30" and _value(argv, "-ntg") == "64" and _value(argv, "-npl") == "1,8"
    assert _value(argv, "-t") == "1" and _value(argv, "--output-format") == "jsonl" and _value(argv, "-c") == "4096"
    output = "\n".join([
        "llama_model_loader: loaded meta data",
        '{"n_kv_max": 4096, "pp": 30, "tg": 64, "pl": 1, "n_kv": 94, "t_pp": 0.1, "speed_pp": 300.0, "t_tg": 1.2, "speed_tg": 53.3, "t": 1.3, "speed": 72.3}',
        '{"n_kv_max": 4096, "pp": 30, "tg": 64, "pl": 8, "n_kv": 752, "t_pp": 0.8, "speed_pp": 300.0, "t_tg": 5.4, "speed_tg": 94.8, "t": 6.2, "speed": 121.3}',
        "{not json",
    ])
    rows = parse_batched_bench(output)
    assert set(rows) == {1, 8} and rows[8]["speed_tg"] == 94.8 and rows[1]["t_tg"] == 1.2


@pytest.mark.parametrize("applies", [True, False], ids=["patch-applies", "patch-fails"])
def test_a_patch_that_does_not_apply_stops_the_build(tmp_path, applies):
    """``llama_sdist_patched`` runs inside ``$(...)``, where ``set -e`` does not reach: a patch that fails must still
    stop the script, or an unpatched tree would be built and cached under the patched key. Offline: a stand-in
    ``python`` whose ``pip download`` does nothing, and a small tarball named like the sdist."""
    import tarfile

    repo = tmp_path / "repo"
    (repo / "scripts" / "patches" / "llama.cpp").mkdir(parents=True)
    (repo / "scripts" / "llama_flags.sh").write_text((REPO / "scripts" / "llama_flags.sh").read_text())
    target = "vendor/llama.cpp/ops.cpp" if applies else "vendor/llama.cpp/missing.cpp"
    (repo / "scripts" / "patches" / "llama.cpp" / "0001-x.patch").write_text(
        f"--- a/{target}\n+++ b/{target}\n@@ -1 +1 @@\n-old\n+new\n"
    )
    sdist = tmp_path / "sdist"
    tree = sdist / f"llama_cpp_python-{ls.LLAMA_VERSION}" / "vendor" / "llama.cpp"
    tree.mkdir(parents=True)
    (tree / "ops.cpp").write_text("old\n")
    download = tmp_path / "download"
    download.mkdir()
    with tarfile.open(download / f"llama_cpp_python-{ls.LLAMA_VERSION}.tar.gz", "w:gz") as tar:
        tar.add(sdist / f"llama_cpp_python-{ls.LLAMA_VERSION}", arcname=f"llama_cpp_python-{ls.LLAMA_VERSION}")
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\nexit 0\n")
    fake_python.chmod(0o755)
    script = f'set -euo pipefail\nsource scripts/llama_flags.sh\nsrc=$(llama_sdist_patched {fake_python} {download})\necho "built from $src"\n'
    out = subprocess.run(["bash", "-c", script], cwd=repo, capture_output=True, text=True, timeout=60)
    patched = download / f"llama_cpp_python-{ls.LLAMA_VERSION}" / "vendor" / "llama.cpp" / "ops.cpp"
    if applies:
        assert out.returncode == 0 and "built from" in out.stdout and patched.read_text() == "new\n", out.stderr
    else:
        assert out.returncode != 0 and "built from" not in out.stdout, out.stdout
        assert "could not apply" in out.stderr and "0001-x.patch" in out.stderr
