"""One plugin host per process: ``aios.patch`` and the default kernel use the host built from the configuration.

Mutation this catches: ``aios_core.patching`` building a second ``PluginHost()``
of its own (as it did), which loads what ``disabled_plugins`` switched off, so
a disabled adapter could still be patched in.
"""

from __future__ import annotations

import pytest

import aios
from aios_core import patching, plugins
from aios_core.errors import UnknownComponentError


@pytest.fixture
def fresh_process_host(monkeypatch, tmp_path):
    """The process host rebuilt from this test's environment, and put back afterwards."""
    monkeypatch.setattr(plugins, "_process_host", None)
    monkeypatch.setenv("AIOS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AIOS_CORES", '[{"kind": "sim"}]')
    monkeypatch.setenv("AIOS_ENTRY_POINT_PLUGINS", "false")
    yield
    patching.set_default_kernel(None)


def test_a_disabled_adapter_cannot_be_patched(fresh_process_host, monkeypatch, make_kernel):
    monkeypatch.setenv("AIOS_DISABLED_PLUGINS", '["aios.adapters.langchain.plugin"]')
    kernel = make_kernel().start()
    try:
        with pytest.raises(UnknownComponentError, match="no adapter named 'langchain'"):
            aios.patch("langchain", kernel)
    finally:
        if "langchain" in patching._host().names("adapters"):  # only when the mutation let it through
            aios.unpatch("langchain")
        kernel.stop()
    assert "langchain" not in plugins.process_host().names("adapters")
    assert "autogen" in plugins.process_host().names("adapters")


def test_the_default_kernel_is_built_on_the_process_host(fresh_process_host):
    kernel = patching.default_kernel()
    try:
        assert kernel.plugins is plugins.process_host() is patching._host()
    finally:
        kernel.stop()
