"""Fixtures for the manager tests: real managers on a temporary data directory, cheap embeddings."""

from __future__ import annotations

import pytest
from managers_testkit import Confirmations

from aios_core.managers.audit import read_audit
from aios_core.managers.embeddings import HashingEmbedder
from aios_core.managers.factory import ManagersConfig, build_managers


@pytest.fixture
def confirm() -> Confirmations:
    return Confirmations()


@pytest.fixture
def embedder() -> HashingEmbedder:
    return HashingEmbedder(dim=128)


@pytest.fixture
def make_managers(tmp_path, confirm, embedder):
    """Build managers; keyword sections (memory=..., access=...) override the defaults. Closed after the test."""
    built = []

    def build(plugin_tools=None, **sections):
        sections.setdefault("storage", {"synchronous": "NORMAL"})
        cfg = ManagersConfig.model_validate(sections)
        managers = build_managers(cfg, data_dir=tmp_path / "data", plugin_tools=plugin_tools or {}, confirm=confirm, embedder=embedder)
        built.append(managers)
        return managers

    yield build
    import asyncio

    for managers in built:
        try:
            asyncio.run(managers.aclose())
        except RuntimeError:
            pass


@pytest.fixture
def audit_of(tmp_path):
    """Read the audit log of managers built by make_managers (after flushing it)."""

    def read(managers, **filters):
        managers.audit.flush()
        return read_audit(managers.audit.path, **filters)

    return read

