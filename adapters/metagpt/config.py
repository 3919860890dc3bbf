"""MetaGPT's configuration, supplied in-process when the user has none: the kernel is the provider.

MetaGPT builds its global ``Config`` while it is imported (``metagpt.config2``
runs ``Config.default()``, which merges the environment,
``$METAGPT_ROOT/config/config2.yaml`` and ``~/.metagpt/config2.yaml``) and
refuses to import without an ``llm`` section ("llm Field required"). A user
who adopts AIOS to supply the model should not have to write a provider
configuration they will not use. While patched, the project-level read
(the lowest-priority file) is given an ``llm`` section naming the kernel's
model with a placeholder key when that file has none; a user's own file that
has one (either file) wins as before, and nothing is written to disk. The
environment (``OPENAI_API_KEY`` included) is not read or changed here, and no
key in it is ever sent: the kernel answers every call.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aios.adapters.shared.served_models import PLACEHOLDER_API_KEY, PLACEHOLDER_ENDPOINT, first_model, require_served

from aios_core.patching import Patcher

log = logging.getLogger(__name__)

#: the class whose reads get the kernel's section (MetaGPT's global configuration)
CONFIG_CLASS = ("metagpt.config2", "Config")


def kernel_llm_section(model: str | None) -> dict[str, Any]:
    """The ``llm`` section that makes MetaGPT's OpenAI-compatible provider a stand-in for the kernel (never contacted)."""
    return {
        "api_type": "open_llm",  # a self-hosted OpenAI-style model: MetaGPT counts its tokens without a price list
        "model": model or "aios-kernel-default",
        "api_key": PLACEHOLDER_API_KEY,
        "base_url": f"{PLACEHOLDER_ENDPOINT}/v1",
    }


def install(patcher: Patcher, kernel: Any, model: str | None) -> None:
    """Before MetaGPT's configuration is imported: supply ``llm`` naming the kernel's model where no file does.

    ``model`` is ``aios.patch("metagpt", model=...)`` (it must be served by
    ``kernel``), else the kernel's first model is named. Must run before
    ``metagpt.config2`` is imported (importing it is what fails); when it was
    imported already, the user's files configured it and nothing is needed.
    """
    require_served(kernel, model, "metagpt")
    model = first_model(kernel, model)
    from metagpt.const import METAGPT_ROOT
    from metagpt.utils.yaml_model import YamlModel

    project_file = Path(METAGPT_ROOT) / "config" / "config2.yaml"
    section = kernel_llm_section(model)
    original = YamlModel.__dict__["read_yaml"].__func__

    def read_yaml(cls: type, file_path: Path, encoding: str = "utf-8") -> dict[str, Any]:
        data = original(cls, file_path, encoding)
        if (cls.__module__, cls.__qualname__) != CONFIG_CLASS or Path(file_path) != project_file:
            return data  # type: ignore[no-any-return]
        if isinstance(data, dict) and data.get("llm"):
            return data
        # the lowest-priority file: ~/.metagpt/config2.yaml read after it still overrides this section
        log.info("metagpt: no llm configured in %s; the AIOS kernel's model %s stands in (no key needed)", project_file, section["model"])
        return {**(data or {}), "llm": dict(section)}

    read_yaml.__doc__ = original.__doc__
    patcher.replace(YamlModel, "read_yaml", classmethod(read_yaml))
