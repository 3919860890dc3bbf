"""AutoGen's OpenAI and Azure OpenAI clients constructed without credentials while the kernel answers them.

``OpenAIChatCompletionClient(model="gpt-4o")`` builds an ``openai.AsyncOpenAI``
in its constructor, which refuses to exist without an API key
(``OpenAIError: Missing credentials``), long before any call could be routed.
While AutoGen is patched every ``create`` goes to the kernel, so the key would
never be sent: the two module functions AutoGen builds its SDK clients with
are wrapped to fill in a placeholder key (and, for Azure, a placeholder
endpoint and API version) when the user configured none. A key given to the
client or set in the environment is left exactly as it is.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aios.adapters.shared.served_models import PLACEHOLDER_API_KEY, PLACEHOLDER_ENDPOINT, credentials_missing

from aios_core.patching import Patcher

log = logging.getLogger(__name__)

#: the module holding the factories, and the API version Azure clients get when none is configured
CLIENT_MODULE = "autogen_ext.models.openai._openai_client"
PLACEHOLDER_AZURE_API_VERSION = "2024-10-21"


def openai_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """What an ``AsyncOpenAI`` config lacks to be constructed: a key, unless one is configured."""
    if credentials_missing(config, ("api_key",), ("OPENAI_API_KEY",)):
        return {"api_key": PLACEHOLDER_API_KEY}
    return {}


def azure_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """What an ``AsyncAzureOpenAI`` config lacks: credentials, endpoint and API version, each only if unset."""
    filled: dict[str, Any] = {}
    credentials = ("api_key", "azure_ad_token", "azure_ad_token_provider")
    if credentials_missing(config, credentials, ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN")):
        filled["api_key"] = PLACEHOLDER_API_KEY
    if credentials_missing(config, ("azure_endpoint", "base_url"), ("AZURE_OPENAI_ENDPOINT",)):
        filled["azure_endpoint"] = PLACEHOLDER_ENDPOINT
    if credentials_missing(config, ("api_version",), ("OPENAI_API_VERSION",)):
        filled["api_version"] = PLACEHOLDER_AZURE_API_VERSION
    return filled


def _with_defaults(original: Callable[[Mapping[str, Any]], Any], defaults: Callable[[Mapping[str, Any]], dict[str, Any]]) -> Any:
    @functools.wraps(original)
    def build(config: Mapping[str, Any]) -> Any:
        filled = defaults(config)
        if filled:
            log.debug("autogen: %s configured for a kernel-served client (never sent)", ", ".join(sorted(filled)))
            config = {**config, **filled}
        return original(config)

    build.__aios_adapter__ = "autogen"  # type: ignore[attr-defined]
    return build


def install(patcher: Patcher) -> None:
    """Wrap AutoGen's SDK-client factories (restored exactly by ``patcher``)."""
    try:
        module = importlib.import_module(CLIENT_MODULE)
    except ImportError:  # autogen-ext without its openai extra: no OpenAI clients to construct
        return
    for name, defaults in (("_openai_client_from_config", openai_defaults), ("_azure_openai_client_from_config", azure_defaults)):
        original = getattr(module, name, None)
        if original is None:  # a future AutoGen renamed it: construction then needs credentials, as without AIOS
            log.warning("autogen: %s.%s not found; model clients need credentials to be constructed", CLIENT_MODULE, name)
            continue
        patcher.replace(module, name, _with_defaults(original, defaults))
