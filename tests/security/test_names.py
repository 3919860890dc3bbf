"""Agent names with '/' never cross into another agent's files (issue 12, item 2).

The rule (aios_core.managers.access): a storage pattern's owner part ends at
its first '/' outside '{self}' and '[...]', and must match the owner's whole
name. The attack: agent 'alice/x' under the default policy '{self}/*' read and
overwrote owner 'alice''s 'x/plan.txt' ('alice/x/*' was split as owner 'alice',
path 'x/*').
"""

from __future__ import annotations

import asyncio
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios_core.agents import AgentRecord
from aios_core.errors import AccessDeniedError
from aios_core.managers.access import AccessConfig, AccessManager, Group, owned_match, split_owner
from aios_core.managers.audit import read_audit
from aios_core.managers.embeddings import HashingEmbedder
from aios_core.managers.factory import ManagersConfig, build_managers

# the characters an agent name may hold (NAME_PATTERN), with '/' and ':' made frequent
NAME_CHARS = string.ascii_letters[:6] + string.digits[:3] + "_.:@+-" + "////"
names = st.text(NAME_CHARS, min_size=1, max_size=12).filter(lambda n: n.strip("/") != "")
paths = st.lists(st.text(string.ascii_lowercase[:4] + "._-", min_size=1, max_size=5).filter(lambda p: p not in (".", "..")), min_size=1, max_size=4).map(
    "/".join
)


def _agent(name: str, group: str = "default") -> AgentRecord:
    return AgentRecord(name=name, group=group, program=name)


def _literal(name: str) -> str:
    """An owner name written in a pattern: '/' as '[/]' (the documented escape)."""
    return name.replace("/", "[/]")


def _managers(data_dir):
    cfg = ManagersConfig.model_validate({"storage": {"synchronous": "NORMAL"}})
    return build_managers(cfg, data_dir=data_dir, plugin_tools={}, embedder=HashingEmbedder(dim=32))


async def test_alice_x_cannot_read_or_overwrite_alices_x_folder(tmp_path):
    """The reported attack, through the storage manager: refused, audited, alice's file unchanged."""
    m = _managers(tmp_path / "data")
    try:
        alice, intruder = _agent("alice"), _agent("alice/x")
        await m.storage.write(alice, "x/plan.txt", "alice's plan")
        with pytest.raises(AccessDeniedError):
            await m.storage.read(intruder, "x/plan.txt", owner="alice")
        with pytest.raises(AccessDeniedError):
            await m.storage.write(intruder, "x/plan.txt", "overwritten", owner="alice")
        with pytest.raises(AccessDeniedError):
            await m.storage.list(intruder, "x", owner="alice")
        assert (await m.storage.read(alice, "x/plan.txt")).data == "alice's plan"
        assert [v.version for v in await m.storage.store.versions("alice", "x/plan.txt")] == [1]
        # alice/x keeps its own space, and alice has no claim on it either
        await m.storage.write(intruder, "plan.txt", "mine")
        with pytest.raises(AccessDeniedError):
            await m.storage.read(alice, "plan.txt", owner="alice/x")
        m.audit.flush()
        assert len([r for r in read_audit(m.audit.path, agent="alice/x") if r.decision == "deny"]) == 3
    finally:
        await m.aclose()


@settings(max_examples=300, deadline=None)
@given(agent=names, owner=names, path=paths, action=st.sampled_from(["storage.read", "storage.write"]))
def test_default_policy_grants_exactly_the_agents_own_files(agent, owner, path, action):
    access = AccessManager(AccessConfig())
    allowed, _ = access.policy(_agent(agent), action, f"{owner}/{path}", owner=owner)
    assert allowed == (owner == agent)


@settings(max_examples=300, deadline=None)
@given(agent=names, owner=names, path=paths)
def test_an_agent_that_is_a_prefix_of_another_name_reaches_neither_way(agent, owner, path):
    """The shapes the attack needs, generated on purpose: owner 'a', agent 'a/b' and path 'b/...', and back."""
    longer = f"{agent}/{owner}"
    access = AccessManager(AccessConfig())
    assert not access.policy(_agent(longer), "storage.write", f"{agent}/{owner}/{path}", owner=agent)[0]
    assert not access.policy(_agent(agent), "storage.write", f"{longer}/{path}", owner=longer)[0]


@settings(max_examples=300, deadline=None)
@given(named=names, agent=names, owner=names, path_glob=st.sampled_from(["*", "docs/*", "*.md", "a/*/b"]), path=paths)
def test_a_pattern_naming_an_owner_grants_that_owner_only(named, agent, owner, path_glob, path):
    """Any owner written literally (its '/' as '[/]') grants that one owner, whatever the agent's or owner's name."""
    pattern = f"{_literal(named)}/{path_glob}"
    assert split_owner(pattern) == (_literal(named), path_glob)
    if owned_match(owner, path, [pattern], agent):
        assert owner == named


@settings(max_examples=200, deadline=None)
@given(agent=names, owner=names, path=paths, extra=st.sampled_from(["", "work/", "*/", "{self}/"]))
def test_self_in_any_position_never_moves_the_owner_split(agent, owner, path, extra):
    group = Group(storage_paths=[f"{{self}}/{extra}*"], storage_read_paths=[])
    access = AccessManager(AccessConfig(groups={"default": group}))
    if access.policy(_agent(agent), "storage.write", f"{owner}/{path}", owner=owner)[0]:
        assert owner == agent


@settings(max_examples=25, deadline=None)
@given(intruder=names, victim=names, path=paths)
def test_refused_cross_owner_calls_change_nothing_stored(intruder, victim, path):
    if intruder == victim:
        return

    async def attempt(data_dir: Path) -> None:
        m = _managers(data_dir)
        try:
            victim_rec, intruder_rec = _agent(victim), _agent(intruder)
            await m.storage.write(victim_rec, path, "original")
            before = [(f.path, f.version) for f in await m.storage.store.list(victim)]
            for call in (
                m.storage.write(intruder_rec, path, "defaced", owner=victim),
                m.storage.delete(intruder_rec, path, owner=victim),
                m.storage.rollback(intruder_rec, path, version=1, owner=victim),
                m.storage.read(intruder_rec, path, owner=victim),
            ):
                with pytest.raises(AccessDeniedError):
                    await call
            assert [(f.path, f.version) for f in await m.storage.store.list(victim)] == before
            assert (await m.storage.store.read(victim, path)).data == "original"
        finally:
            await m.aclose()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(attempt(Path(tmp)))


def test_the_documented_patterns_keep_their_meaning():
    access = AccessManager(AccessConfig(groups={"default": Group(storage_read_paths=["*/reports/*", "shared/*", "team[/]lead/*"])}))
    me = _agent("team/alice")
    assert access.policy(me, "storage.read", "bob/reports/q3.md", owner="bob")[0]
    assert access.policy(me, "storage.read", "team/bob/reports/q3.md", owner="team/bob")[0]
    assert not access.policy(me, "storage.read", "team/bob/reports/q3.md", owner="team")[0]  # path 'bob/reports/...' is no report
    assert access.policy(me, "storage.read", "shared/doc.md", owner="shared")[0]
    assert access.policy(me, "storage.read", "team/lead/plan.md", owner="team/lead")[0]
    assert not access.policy(me, "storage.read", "team/lead/plan.md", owner="team")[0]
    assert access.policy(me, "storage.write", "team/alice/x", owner="team/alice")[0]
    assert not access.policy(me, "storage.write", "team/alice/x", owner="team")[0]
