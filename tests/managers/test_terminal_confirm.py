"""The terminal confirmation prompt of ``aios serve`` / ``aios run``, driven through a pipe."""

from __future__ import annotations

import io
import os
import select
import threading
from types import SimpleNamespace

import pytest
from managers_testkit import agent
from rich.console import Console

from aios_core import terminal_confirm
from aios_core.errors import AccessDeniedError
from aios_core.managers.access import AccessConfig, AccessManager, Group
from aios_core.managers.audit import AuditLog, read_audit
from aios_core.terminal_confirm import TerminalConfirm


@pytest.fixture
def terminal():
    r, w = os.pipe()
    reader = os.fdopen(r, "r")
    out = io.StringIO()
    yield reader, w, out
    reader.close()
    try:
        os.close(w)
    except OSError:
        pass


def _ask(confirm: TerminalConfirm, answer_after: float | None, w: int, text: bytes = b"y\n") -> bool | None:
    if answer_after is not None:
        threading.Timer(answer_after, lambda: os.write(w, text)).start()
    return confirm("alice", "tool", {"resource": "python", "group": "default", "arguments": {"code": "print(1)"}})


@pytest.mark.parametrize("typed, expected", [(b"y\n", True), (b"YES\n", True), (b"n\n", False), (b"\n", False), (b"sure\n", False)])
def test_the_answer_typed_decides(terminal, typed, expected):
    reader, w, out = terminal
    confirm = TerminalConfirm(timeout=5, stream=reader, console=Console(file=out, width=200))
    assert _ask(confirm, 0.05, w, typed) is expected
    assert "alice" in out.getvalue() and "python" in out.getvalue() and "print(1)" in out.getvalue()


class VirtualWait:
    """``select``/``time`` for the prompt's module on a virtual clock: a wait that finds nothing to read moves
    the clock on by its timeout instead of sleeping, and a wait without a timeout fails instead of hanging."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def select(self, rlist, wlist, xlist, timeout=None):
        ready = select.select(rlist, wlist, xlist, 0)
        if any(ready):
            return ready
        if timeout is None:
            raise AssertionError("the prompt waited for an answer without a deadline")
        self.now += timeout
        return ready


def test_no_answer_in_time_is_no_answer(terminal, monkeypatch):
    reader, w, out = terminal
    clock = VirtualWait()
    monkeypatch.setattr(terminal_confirm, "select", SimpleNamespace(select=clock.select))
    monkeypatch.setattr(terminal_confirm, "time", SimpleNamespace(monotonic=clock.monotonic))
    confirm = TerminalConfirm(timeout=0.2, stream=reader, console=Console(file=out))
    assert _ask(confirm, None, w) is None and "no answer" in out.getvalue()
    assert clock.now == pytest.approx(0.2)  # catches: the prompt waits past its timeout (or with none) for an answer


def test_what_was_typed_before_the_question_is_not_consent(terminal):
    reader, w, out = terminal
    os.write(w, b"y\ny\n")  # typed ahead, before anything was asked
    confirm = TerminalConfirm(timeout=0.2, stream=reader, console=Console(file=out))
    assert _ask(confirm, None, w) is None


async def test_the_access_manager_allows_and_audits_what_the_person_confirmed(terminal, tmp_path):
    reader, w, out = terminal
    log = AuditLog(tmp_path / "audit.db")
    access = AccessManager(AccessConfig(groups={"default": Group()}, confirm_timeout=5), log,
                           confirm=TerminalConfirm(timeout=4, stream=reader, console=Console(file=out)))
    threading.Timer(0.1, lambda: os.write(w, b"y\n")).start()
    await access.authorize(agent("alice"), "tool", "python", irreversible=True)
    threading.Timer(0.1, lambda: os.write(w, b"n\n")).start()
    with pytest.raises(AccessDeniedError, match="refused"):
        await access.authorize(agent("bob"), "tool", "shell", irreversible=True)
    log.close()
    decisions = [(r.agent, r.decision) for r in read_audit(tmp_path / "audit.db")]
    assert decisions == [("alice", "allow"), ("bob", "deny")]
