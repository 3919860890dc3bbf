"""A process that used the default kernel exits cleanly, and ``aios.unpatch()`` stops the kernel it started.

At exit (and when the last framework is unpatched) the default kernel stops:
calls in flight get the grace period to finish, then their callers get a
SyscallCancelledError, instead of being dropped with the daemon thread (and,
on the llama.cpp core, failing on a thread pool that is already shut down,
with tracebacks on stderr). Nothing may be printed on stderr.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest
from quickstart_runner import clean_environment, read_records

import aios
from aios_core import patching

SIM = 'entry_point_plugins = false\n\n[[cores]]\nkind = "sim"\nt0 = 0.01\na = 0.0\nb = 0.0\n'

#: a program that leaves one streamed call in flight (in a daemon thread) when its main thread ends
IN_FLIGHT_AT_EXIT = textwrap.dedent(
    """
    import sys
    import threading

    import aios
    import aios_core.patching

    aios_core.patching.STOP_GRACE = float(sys.argv[2])
    alice = aios.default_kernel().agent("alice")
    started = threading.Event()

    def long_call():
        try:
            tokens = int(sys.argv[1])
            for piece in alice.stream("Tell me everything.", max_tokens=tokens, extra={"sim_tokens": tokens}):
                started.set()
                if piece.response is not None:
                    print("finished", piece.response.usage.completion_tokens, flush=True)
        except aios.AIOSError as exc:
            print("cancelled", type(exc).__name__, exc, flush=True)
        finally:
            started.set()

    threading.Thread(target=long_call, daemon=True).start()
    started.wait()
    """
)


def _run(tmp_path, tokens: int, grace: float) -> tuple[subprocess.CompletedProcess[str], list[dict]]:
    """Run the program; its process and the syscalls the kernel recorded as finished (the recorder plugin's file)."""
    env = clean_environment(tmp_path, "", core_options="t0 = 0.01\na = 0.0\nb = 0.0")
    script = tmp_path / "in_flight.py"
    script.write_text(IN_FLIGHT_AT_EXIT)
    proc = subprocess.run([sys.executable, str(script), str(tokens), str(grace)], env=env, capture_output=True, text=True, timeout=120, check=False)
    return proc, read_records(env)


def test_a_call_in_flight_at_exit_finishes_within_the_grace_period(tmp_path):
    proc, records = _run(tmp_path, tokens=5, grace=60.0)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert [(r["agent"], r["error"]) for r in records] == [("alice", None)]  # the kernel let it finish before stopping


def test_a_call_still_running_after_the_grace_period_is_cancelled_with_a_clear_error(tmp_path):
    proc, records = _run(tmp_path, tokens=8000, grace=0.05)  # 8000 sim steps of 10 ms: far past the grace period
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert [r["agent"] for r in records] == ["alice"]
    assert records[0]["error"].startswith("SyscallCancelledError: the kernel is stopping"), records


#: a program whose own (non-daemon) thread keeps using the kernel after the main thread ended, next to an idle pool
WORKER_AFTER_MAIN = textwrap.dedent(
    """
    import concurrent.futures
    import threading

    import aios

    pool = concurrent.futures.ThreadPoolExecutor(2)  # an idle worker stays behind: exit must not wait for it
    pool.submit(print, "pool ready").result()
    alice = aios.default_kernel().agent("alice")

    def work():
        for _ in range(3):
            alice.chat("One more step.", max_tokens=4)

    threading.Thread(target=work).start()
    """
)


def test_the_programs_own_threads_finish_their_calls_and_an_idle_pool_does_not_hold_up_exit(tmp_path):
    env = clean_environment(tmp_path, "", core_options="t0 = 0.01\na = 0.0\nb = 0.0")
    script = tmp_path / "worker.py"
    script.write_text(WORKER_AFTER_MAIN)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert [(r["agent"], r["error"]) for r in read_records(env)] == [("alice", None)] * 3  # the kernel outlived main


@pytest.fixture
def sim_default_kernel(tmp_path, monkeypatch):
    """The process's default kernel, started on the sim core (stopped and forgotten afterwards)."""
    config = tmp_path / "aios.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n' + SIM)
    monkeypatch.setenv("AIOS_CONFIG", str(config))
    monkeypatch.delenv("AIOS_URL", raising=False)
    monkeypatch.setattr(patching, "STOP_GRACE", 0.05)
    # a default kernel another test left behind is set aside, not stopped
    monkeypatch.setattr(patching, "_default_kernel", None)
    monkeypatch.setattr(patching, "_default_is_ours", False)
    kernel = patching.default_kernel()
    yield kernel
    patching.stop_default_kernel()
    kernel.stop()


def test_unpatch_with_nothing_left_patched_stops_the_default_kernel_and_cancels_its_calls(sim_default_kernel):
    kernel = sim_default_kernel
    started, outcome = threading.Event(), []

    def long_call() -> None:
        try:
            for _ in kernel.agent("bob").stream("Go on.", max_tokens=8000, extra={"sim_tokens": 8000}):
                started.set()
        except aios.SyscallCancelledError as exc:
            outcome.append(exc)
        finally:
            started.set()

    worker = threading.Thread(target=long_call)
    worker.start()
    started.wait()
    aios.unpatch()
    worker.join(30)
    assert not kernel.running and patching._default_kernel is None
    assert len(outcome) == 1 and "the kernel is stopping" in str(outcome[0])
    assert patching.default_kernel() is not kernel  # the next patch starts a fresh one


@pytest.mark.frameworks
def test_the_default_kernel_runs_while_a_framework_still_uses_it(sim_default_kernel):
    pytest.importorskip("autogen_agentchat")
    kernel = sim_default_kernel
    aios.patch("autogen")
    try:
        aios.unpatch("langchain")  # not patched: AutoGen still routes to the default kernel
        assert kernel.running and patching._default_kernel is kernel
    finally:
        aios.unpatch("autogen")
    assert not kernel.running and patching._default_kernel is None


def test_a_kernel_given_as_default_is_left_to_its_owner(make_kernel, monkeypatch):
    monkeypatch.setattr(patching, "_default_kernel", None)
    monkeypatch.setattr(patching, "_default_is_ours", False)
    mine = make_kernel().start()
    try:
        aios.set_default_kernel(mine)
        aios.unpatch()
        assert mine.running and patching.default_kernel() is mine
    finally:
        mine.stop()
