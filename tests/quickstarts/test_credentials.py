"""Framework model clients construct without credentials while patched; a real key is left alone and never sent.

Without AIOS, ``OpenAIChatCompletionClient(model="gpt-4o")`` and
``ChatOpenAI(model="gpt-4o-mini")`` refuse to exist without ``OPENAI_API_KEY``.
Patched, the kernel answers their calls, so they get a placeholder. A key the
user configured stays exactly as configured, and the attack that matters, a
real key reaching the provider's endpoint, is checked against a local stand-in
for that endpoint that must receive nothing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from aios.adapters.shared.served_models import PLACEHOLDER_API_KEY, ModelNotServedError

import aios
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.patching import _adapter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "adapters"))
from openai_stub_server import StubOpenAI  # noqa: E402

pytestmark = pytest.mark.frameworks

REAL_KEY = "sk-users-real-key-must-never-leave"


@pytest.fixture
def kernel(tmp_path):
    k = Kernel(cores=[SimCore(t0=0.0005, a=0.0, b=0.0)], data_dir=tmp_path / "data", entry_point_plugins=False, auto_register_agents=True)
    k.start()
    yield k
    k.stop()


@pytest.fixture
def no_keys(monkeypatch):
    for name in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_API_VERSION", "AZURE_OPENAI_AD_TOKEN", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def patched_autogen(kernel):
    pytest.importorskip("autogen_ext.models.openai")
    aios.patch("autogen", kernel)
    yield kernel
    aios.unpatch("autogen")


@pytest.fixture
def patched_langchain(kernel):
    pytest.importorskip("langchain_openai")
    aios.patch("langchain", kernel)
    yield kernel
    aios.unpatch("langchain")


def test_autogen_clients_need_no_credentials_while_patched_and_need_them_again_after(no_keys, kernel):
    pytest.importorskip("autogen_ext.models.openai")
    import openai
    from autogen_ext.models.openai import AzureOpenAIChatCompletionClient, OpenAIChatCompletionClient

    with pytest.raises(openai.OpenAIError):
        OpenAIChatCompletionClient(model="gpt-4o")  # what a new user hit before AIOS supplied the model
    aios.patch("autogen", kernel)
    try:
        client = OpenAIChatCompletionClient(model="gpt-4o")
        assert client._client.api_key == PLACEHOLDER_API_KEY
        AzureOpenAIChatCompletionClient(azure_deployment="chat", model="gpt-4o")  # key, endpoint and version all missing
        from autogen_core.models import UserMessage

        result = asyncio.run(client.create([UserMessage(content="hello", source="user")]))
        assert result.content and client.total_usage().completion_tokens > 0
    finally:
        aios.unpatch("autogen")
    with pytest.raises(openai.OpenAIError):
        OpenAIChatCompletionClient(model="gpt-4o")  # unpatched: exactly as before


def test_a_real_key_is_left_alone_and_never_sent(monkeypatch, patched_autogen, patched_langchain):
    from autogen_core.models import UserMessage
    from autogen_ext.models.openai import OpenAIChatCompletionClient
    from langchain_openai import ChatOpenAI

    with StubOpenAI() as provider:
        monkeypatch.setenv("OPENAI_API_KEY", REAL_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", provider.base_url)  # where the key would go if anything escaped
        client = OpenAIChatCompletionClient(model="gpt-4o")
        model = ChatOpenAI(model="gpt-4o-mini")
        explicit = ChatOpenAI(model="gpt-4o-mini", api_key="sk-given-in-code")
        assert client._client.api_key == REAL_KEY and model.openai_api_key.get_secret_value() == REAL_KEY
        assert explicit.openai_api_key.get_secret_value() == "sk-given-in-code"
        asyncio.run(client.create([UserMessage(content="hello", source="user")]))
        model.invoke("hello")
        explicit.invoke("hello")
        assert provider.requests == []
    assert len(patched_autogen.agents.all()) >= 2  # the calls were the kernel's, under the clients' agents


def test_langchain_openai_models_need_no_credentials_while_patched(no_keys, patched_langchain):
    from langchain_openai import AzureChatOpenAI, ChatOpenAI

    model = ChatOpenAI(model="gpt-4o-mini")
    assert model.openai_api_key.get_secret_value() == PLACEHOLDER_API_KEY
    AzureChatOpenAI(azure_deployment="chat")
    assert model.bind_tools([]).invoke("hello").content


def test_langchain_without_the_patch_still_needs_a_key(no_keys):
    pytest.importorskip("langchain_openai")
    import openai
    from langchain_openai import ChatOpenAI

    with pytest.raises(openai.OpenAIError):
        ChatOpenAI(model="gpt-4o-mini")


FRAMEWORK_MODULES = {"autogen": "autogen_ext.models.openai", "langchain": "langchain_openai", "metagpt": "metagpt", "open-interpreter": "interpreter"}


@pytest.mark.parametrize("framework", sorted(FRAMEWORK_MODULES))
def test_a_model_the_kernel_does_not_serve_is_one_clear_error(kernel, framework):
    pytest.importorskip(FRAMEWORK_MODULES[framework])
    with pytest.raises(ModelNotServedError) as error:
        aios.patch(framework, kernel, model="gpt-4o")
    message = str(error.value)
    assert "serves no model 'gpt-4o'" in message and "sim" in message and "[[cores]]" in message and "model_path" in message
    assert not _adapter(framework).patched  # nothing half-patched is left behind


METAGPT_CONFIG_PROBE = textwrap.dedent(
    """
    import os

    import aios

    aios.patch("metagpt")
    from metagpt.config2 import config

    print("CONFIG", config.llm.api_type.value, config.llm.model, config.llm.api_key, os.environ.get("OPENAI_API_KEY"))
    """
)


@pytest.mark.parametrize("users_own", [False, True])
def test_metagpt_imports_without_a_config_and_a_users_own_config_wins(tmp_path, users_own):
    pytest.importorskip("metagpt")
    from quickstart_runner import clean_environment

    env = clean_environment(tmp_path, "")
    env["OPENAI_API_KEY"] = REAL_KEY
    if users_own:
        own = Path(env["HOME"]) / ".metagpt"
        own.mkdir()
        (own / "config2.yaml").write_text("llm:\n  api_type: openai\n  model: users-model\n  api_key: sk-users-metagpt-key\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "probe.py").write_text(METAGPT_CONFIG_PROBE)
    proc = subprocess.run([sys.executable, "probe.py"], cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("CONFIG "))
    if users_own:
        assert line == f"CONFIG openai users-model sk-users-metagpt-key {REAL_KEY}"
    else:
        assert line == f"CONFIG open_llm sim {PLACEHOLDER_API_KEY} {REAL_KEY}"  # the kernel's model; the env key untouched
    assert not (work / "config").exists()  # nothing written next to the program
    assert sorted(p.name for p in Path(env["HOME"]).iterdir()) == ([".metagpt"] if users_own else [])
