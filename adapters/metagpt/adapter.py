"""``aios.patch("metagpt")``: MetaGPT 0.8's models, roles and teams through the AIOS kernel.

Options (``aios.patch("metagpt", kernel, **options)``): ``model`` (kernel model
or core for every call; default: the kernel's default, or the model named in
MetaGPT's config when the kernel serves one by that name), ``max_tokens`` (upper
bound on what MetaGPT asks per call, default 1024), ``timeout`` (seconds per
syscall), ``priority`` and ``group`` (of the agents the adapter registers).

MetaGPT is imported only when patching. It reads its configuration when it is
imported (``config/config2.yaml`` under ``METAGPT_PROJECT_ROOT`` or the current
directory, then ``~/.metagpt/config2.yaml``) and refuses to import without an
``llm`` section; the adapter never writes either file. The ``llm`` section
still chooses MetaGPT's behaviour (``stream``, ``temperature``, ``max_token``),
but its endpoint and key are never used while patched: the kernel answers.
MetaGPT's per-call ``timeout`` (``llm.timeout``, 600 s) is not applied to the
syscalls: time queued behind other agents would count against it; the
``timeout`` option sets a limit that does.
"""

from __future__ import annotations

import importlib

from aios.adapters.shared.adapter import RoutedAdapter
from aios.adapters.shared.route import Route, RouteOptions

from aios_core.errors import AIOSError
from aios_core.patching import Patcher
from aios_core.port import KernelPort

SUPPORTED = ">=0.8,<0.9"

#: MetaGPT's own import order: its pydantic models refer to each other and are completed when
#: metagpt.roles is imported, so importing the environment (or context) first fails; the provider
#: package registers every provider class, so that all of them get patched
_IMPORT_ORDER = ("metagpt.roles", "metagpt.actions", "metagpt.provider", "metagpt.team", "metagpt.environment.base_env")


def import_metagpt() -> None:
    """Import what the adapter patches, turning MetaGPT's configuration failures into an actionable error."""
    try:
        for module in _IMPORT_ORDER:
            importlib.import_module(module)
    except Exception as exc:  # MetaGPT validates its config at import and raises plain errors
        raise AIOSError(
            f"aios.patch('metagpt'): importing MetaGPT failed: {exc!r}. If this is about its configuration: MetaGPT reads config/config2.yaml under "
            "$METAGPT_PROJECT_ROOT (or the current directory) and ~/.metagpt/config2.yaml when it is imported, and needs "
            "an `llm:` section with api_type, model and a non-empty api_key (any placeholder: under AIOS the kernel "
            "answers and the key is never sent)."
        ) from exc


class MetaGPTAdapter(RoutedAdapter):
    name = "metagpt"
    distribution = "metagpt"
    supported = SUPPORTED
    description = "MetaGPT 0.8: BaseLLM providers answered by the kernel; roles as agents, team runs as programs"

    def prepare(self, patcher: Patcher, kernel: KernelPort, options: RouteOptions) -> None:
        """Give MetaGPT an in-process llm section when it has none (its import needs one), then import it."""
        from aios.adapters.metagpt import config

        config.install(patcher, kernel, options.model)
        import_metagpt()

    def install(self, patcher: Patcher, route: Route) -> None:
        from aios.adapters.metagpt import llm_patch
        from aios.adapters.metagpt.llm_calls import Calls
        from aios.adapters.metagpt.scopes import Scopes

        llm_patch.install(patcher, Calls(route, kernel_model=route.kernel_model))
        Scopes(route).install(patcher)


#: one per process: it holds the patch state of MetaGPT's (process-wide) classes
ADAPTER = MetaGPTAdapter()
