"""LangChain's OpenAI chat models constructed without credentials while the kernel answers them.

``ChatOpenAI(model="gpt-4o-mini")`` (and ``init_chat_model("openai:...")``,
which constructs one) builds its ``openai`` SDK clients in a pydantic
validator and fails without ``OPENAI_API_KEY``, before any call could be
routed. While LangChain is patched its generation methods go to the kernel, so
the key would never be sent: the constructor of langchain-openai's base class
fills in a placeholder key (and, for ``AzureChatOpenAI``, a placeholder
endpoint and API version) when none is configured. A key passed to the model
or set in the environment is left exactly as it is.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from aios.adapters.shared.served_models import PLACEHOLDER_API_KEY, PLACEHOLDER_ENDPOINT, credentials_missing

from aios_core.patching import Patcher

log = logging.getLogger(__name__)

#: the class whose constructor every OpenAI chat model of langchain-openai goes through
OPENAI_BASE = ("langchain_openai.chat_models.base", "BaseChatOpenAI")
PLACEHOLDER_AZURE_API_VERSION = "2024-10-21"

#: keyword names (field names and aliases) under which the settings can be given
_KEY_NAMES = ("api_key", "openai_api_key")
_AZURE_CREDENTIALS = ("api_key", "openai_api_key", "azure_ad_token", "azure_ad_token_provider", "azure_ad_async_token_provider")
_AZURE_ENDPOINT = ("azure_endpoint", "base_url", "openai_api_base")
_AZURE_VERSION = ("api_version", "openai_api_version")


def _is_azure(cls: type) -> bool:
    return any(c.__name__ == "AzureChatOpenAI" for c in cls.__mro__)


def placeholder_settings(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments ``cls`` lacks to be built without any configuration."""
    filled: dict[str, Any] = {}
    if _is_azure(cls):
        if credentials_missing(given, _AZURE_CREDENTIALS, ("AZURE_OPENAI_API_KEY", "OPENAI_API_KEY", "AZURE_OPENAI_AD_TOKEN")):
            filled["api_key"] = PLACEHOLDER_API_KEY
        if credentials_missing(given, _AZURE_ENDPOINT, ("AZURE_OPENAI_ENDPOINT", "OPENAI_API_BASE")):
            filled["azure_endpoint"] = PLACEHOLDER_ENDPOINT
        if credentials_missing(given, _AZURE_VERSION, ("OPENAI_API_VERSION",)):
            filled["api_version"] = PLACEHOLDER_AZURE_API_VERSION
        return filled
    if credentials_missing(given, _KEY_NAMES, ("OPENAI_API_KEY",)):
        filled["api_key"] = PLACEHOLDER_API_KEY
    return filled


def is_openai_base(cls: type) -> bool:
    return (cls.__module__, cls.__qualname__) == OPENAI_BASE


def install_on(patcher: Patcher, cls: type) -> None:
    """Give ``cls`` (langchain-openai's ``BaseChatOpenAI``) a constructor that fills in missing credentials."""
    inherited = cls.__init__

    @functools.wraps(inherited)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        filled = placeholder_settings(type(self), kwargs)
        if filled:
            log.debug("langchain: %s configured for a kernel-served %s (never sent)", ", ".join(sorted(filled)), type(self).__name__)
            kwargs.update(filled)
        inherited(self, *args, **kwargs)

    __init__.__aios_adapter__ = "langchain"  # type: ignore[attr-defined]
    patcher.replace(cls, "__init__", __init__)
