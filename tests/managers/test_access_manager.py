import asyncio

import pytest
from managers_testkit import Confirmations, agent

from aios_core.errors import AccessDeniedError
from aios_core.managers.access import AccessConfig, AccessManager, Group, chain_confirmations
from aios_core.managers.audit import AuditLog, read_audit


@pytest.fixture
def audit(tmp_path):
    log = AuditLog(tmp_path / "audit.db")
    yield log
    log.close()


def _access(audit, confirm=None, **groups):
    groups = groups or {"default": Group()}
    return AccessManager(AccessConfig(groups=groups, confirm_timeout=0.5), audit, confirm=confirm)


async def test_group_policy_per_action(audit):
    access = _access(
        audit,
        default=Group(),
        restricted=Group(tools=["calculator"], cores=["sim*"], storage_paths=["{self}/work/*"], storage_read_paths=["shared/*"]),
        reader=Group(read_memory_of=["alice"]),
    )
    r = agent("rob", "restricted")
    await access.authorize(r, "tool", "calculator")
    await access.authorize(r, "llm", "sim-1")
    await access.authorize(r, "storage.write", "rob/work/a.txt")
    await access.authorize(r, "storage.read", "shared/doc.md")
    for action, resource in [("tool", "python"), ("llm", "llamacpp"), ("storage.write", "rob/a.txt"), ("storage.write", "shared/doc.md"),
                             ("memory.read", "alice"), ("nonsense", "x")]:
        with pytest.raises(AccessDeniedError):
            await access.authorize(r, action, resource)
    await access.authorize(agent("bob", "reader"), "memory.read", "alice")
    with pytest.raises(AccessDeniedError):
        await access.authorize(agent("bob", "reader"), "memory.write", "alice")
    await access.authorize(agent("alice"), "memory.write", "alice")  # own memory always


async def test_unknown_group_is_denied_with_a_helpful_message(audit):
    with pytest.raises(AccessDeniedError, match="not configured"):
        await _access(audit).authorize(agent("x", "ghosts"), "tool", "calculator")


async def test_every_decision_is_audited_with_reason(audit):
    access = _access(audit)
    await access.authorize(agent("alice"), "tool", "calculator")
    with pytest.raises(AccessDeniedError):
        await access.authorize(agent("bob"), "memory.read", "alice", detail={"op": "get"})
    audit.flush()
    records = read_audit(audit.path)
    assert [(r.agent, r.action, r.resource, r.decision) for r in records] == [
        ("alice", "tool", "calculator", "allow"),
        ("bob", "memory.read", "alice", "deny"),
    ]
    assert "may not read the memory" in records[1].reason
    assert records[1].detail == {"op": "get"}
    assert records[1].time > 0


async def test_irreversible_action_without_any_confirmation_hook_is_denied(audit):
    access = _access(audit, confirm=None)
    with pytest.raises(AccessDeniedError, match="no confirmation hook"):
        await access.authorize(agent("alice"), "tool", "shell", irreversible=True)
    # the denial is durable before the error reaches the caller
    rec = read_audit(audit.path)[-1]
    assert (rec.decision, rec.irreversible) == ("deny", True)


@pytest.mark.parametrize("answer, allowed", [(True, True), (False, False), (None, False)])
async def test_confirmation_answers(audit, answer, allowed):
    confirm = Confirmations(answer)
    access = _access(audit, confirm=confirm)
    if allowed:
        await access.authorize(agent("alice"), "tool", "python", irreversible=True, detail={"code": "print(1)"})
    else:
        with pytest.raises(AccessDeniedError):
            await access.authorize(agent("alice"), "tool", "python", irreversible=True)
    assert confirm.asked and confirm.asked[0][:2] == ("alice", "tool")
    assert read_audit(audit.path)[-1].decision == ("allow" if allowed else "deny")


async def test_confirmation_that_never_answers_denies_after_the_timeout(audit):
    async def slow(agent, action, detail):
        await asyncio.sleep(30)
        return True

    with pytest.raises(AccessDeniedError, match="not confirmed within"):
        await _access(audit, confirm=slow).authorize(agent("alice"), "tool", "python", irreversible=True)


async def test_confirmation_hook_that_raises_denies(audit):
    def broken(agent, action, detail):
        raise RuntimeError("terminal went away")

    with pytest.raises(AccessDeniedError, match="confirmation hook failed"):
        await _access(audit, confirm=broken).authorize(agent("alice"), "tool", "python", irreversible=True)


async def test_preapproved_and_may_confirm(audit):
    confirm = Confirmations(True)
    access = _access(
        audit,
        confirm=confirm,
        trusted=Group(preapproved=["tool:python"]),
        locked=Group(may_confirm=False),
    )
    await access.authorize(agent("t", "trusted"), "tool", "python", irreversible=True)
    assert confirm.asked == []  # preapproved: nobody is asked
    with pytest.raises(AccessDeniedError, match="may not confirm"):
        await access.authorize(agent("l", "locked"), "tool", "python", irreversible=True)
    assert confirm.asked == []


async def test_chained_confirmations_take_the_first_answer():
    calls = []

    def no_opinion(agent, action, detail):
        calls.append("first")
        return None

    async def yes(agent, action, detail):
        calls.append("second")
        return True

    chained = chain_confirmations(None, no_opinion, yes)
    assert await chained("a", "tool", {}) is True
    assert calls == ["first", "second"]
    assert chain_confirmations(None, None) is None
