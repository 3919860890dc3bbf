"""Credentials framework clients get while the kernel serves them, and the error for a model it does not serve.

A framework names a hosted model (``gpt-4o``) and needs credentials for it;
patched, its calls are answered by the kernel instead. The adapters decide
from here whether the kernel serves the call (then placeholder credentials are
enough, and a real key is never sent) and, when the user asked for a kernel
model by name that no core serves, raise :class:`ModelNotServedError`
naming what is served and how to add a model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from aios_core.errors import UnknownComponentError
from aios_core.port import KernelPort

#: what a framework client is given as its API key when none is configured: the kernel answers its calls,
#: so the key is never sent anywhere (it only satisfies the client's constructor)
PLACEHOLDER_API_KEY = "aios-kernel-served-no-key-needed"
#: the endpoint framework clients are given when none is configured (never contacted while patched)
PLACEHOLDER_ENDPOINT = "https://kernel-served.aios.invalid"

HOW_TO_ADD = (
    "add a core serving it to aios.toml, e.g. [[cores]] kind = \"llamacpp\" model = \"NAME\" model_path = \"/path/to/model.gguf\" "
    "(or kind = \"openai\" base_url = \"http://host:8000/v1\" model = \"NAME\" for an OpenAI-compatible server), "
    "or leave model unset to use the kernel's default model"
)


class ModelNotServedError(UnknownComponentError):
    """A framework was told to use a kernel model that no core of the kernel serves."""

    code = "model_not_served"


def first_model(kernel: KernelPort, chosen: str | None = None) -> str | None:
    """The model a framework's configuration should name: ``chosen`` (``aios.patch(..., model=)``), else the kernel's first."""
    if chosen:
        return chosen
    served = kernel.served_models()
    return served[0] if served else None


def require_served(kernel: KernelPort, model: str | None, framework: str) -> None:
    """Raise :class:`ModelNotServedError` when ``model`` (an explicit choice) is not served by ``kernel``.

    None means "the kernel's default model" and always passes; so does a
    kernel that cannot list its models (the call itself will then fail with
    the kernel's own error).
    """
    if model is None:
        return
    served = kernel.served_models()
    if not served or model in served:
        return
    raise ModelNotServedError(
        f"aios.patch({framework!r}, model={model!r}): the kernel serves no model {model!r}; it serves: "
        f"{', '.join(served)}. To use another model, {HOW_TO_ADD}.",
        model=model,
        served=served,
    )


def credentials_missing(given: Mapping[str, Any], keys: Iterable[str], env: Iterable[str]) -> bool:
    """Whether none of ``keys`` has a value in ``given`` and none of the ``env`` variables is set.

    Only then do adapters supply a placeholder: a key the user configured
    stays exactly as it was (and is never sent while the kernel serves the calls).
    """
    return not any(given.get(key) is not None for key in keys) and not any(os.environ.get(name) for name in env)
