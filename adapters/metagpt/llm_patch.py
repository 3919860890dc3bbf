"""Installing the kernel-routed methods on ``BaseLLM`` and on every provider class below it.

Providers override the abstract methods of ``BaseLLM`` (and OpenAI overrides
``acompletion_text`` too), so replacing them on the base alone would catch
nothing. Each class of the tree gets the replacement of every method it
defines itself, now and when a provider class is defined after patching (a
user's own provider, registered with ``@register_provider``). The human
"provider" (``HumanProvider``: a person typing answers) is not a model and is
left alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aios.adapters.metagpt.llm_calls import Calls, code_arguments, is_chat_completion, to_chat_completion, to_tool_choice, to_tool_specs
from aios.adapters.shared.class_tree import ClassTreePatch

from aios_core.patching import Patcher

#: the methods that reach a provider's API, and the two that read its response objects
ROUTED = (
    "acompletion_text",
    "acompletion",
    "_achat_completion",
    "_achat_completion_stream",
    "_achat_completion_function",
    "aask_code",
    "completion",
    "get_choice_text",
    "get_choice_function_arguments",
)


def _routed(name: str, original: Any, calls: Calls) -> Callable[..., Any]:
    """The replacement of ``name`` (``original`` is the class's own, for response types that are not ours)."""
    if name == "acompletion_text":

        async def acompletion_text(self: Any, messages: list[dict], stream: bool = False, timeout: Any = None) -> str:
            if stream:
                return await calls.stream_text(self, messages)
            return (await calls.complete(self, messages)).content or ""

        return acompletion_text

    if name in ("acompletion", "_achat_completion"):

        async def acompletion(self: Any, messages: list[dict], timeout: Any = None, **_: Any) -> Any:
            return to_chat_completion(await calls.complete(self, messages))

        return acompletion

    if name == "_achat_completion_stream":

        async def achat_completion_stream(self: Any, messages: list[dict], timeout: Any = None, **_: Any) -> str:
            return await calls.stream_text(self, messages)

        return achat_completion_stream

    if name in ("aask_code", "_achat_completion_function"):
        from metagpt.provider.constant import GENERAL_FUNCTION_SCHEMA

        async def ask_for_tool_call(self: Any, messages: Any, timeout: Any = None, **kwargs: Any) -> Any:
            tools = kwargs.get("tools") or [{"type": "function", "function": GENERAL_FUNCTION_SCHEMA}]
            fields: dict[str, Any] = {"tools": to_tool_specs(tools)}
            if "tool_choice" in kwargs:
                fields["tool_choice"] = to_tool_choice(kwargs["tool_choice"])
            response = await calls.complete(self, self.format_msg(messages), **fields)
            return code_arguments(response) if name == "aask_code" else to_chat_completion(response)

        return ask_for_tool_call

    if name == "completion":
        # a few providers have a blocking variant; it blocks its caller on the kernel, never the kernel

        def completion(self: Any, messages: list[dict], timeout: Any = None, **_: Any) -> Any:
            response = calls.route.complete(calls.identity(), calls.request(self, messages))
            calls.account(self, response)
            return to_chat_completion(response)

        return completion

    if name == "get_choice_text":

        def get_choice_text(self: Any, rsp: Any) -> str:
            if is_chat_completion(rsp):
                return rsp.choices[0].message.content or "" if rsp.choices else ""
            return original(self, rsp)  # type: ignore[no-any-return]

        return get_choice_text

    if name == "get_choice_function_arguments":

        def get_choice_function_arguments(self: Any, rsp: Any) -> dict:
            if is_chat_completion(rsp) and rsp.choices and rsp.choices[0].message.tool_calls:
                import json

                return json.loads(rsp.choices[0].message.tool_calls[0].function.arguments, strict=False)  # type: ignore[no-any-return]
            return original(self, rsp)  # type: ignore[no-any-return]

        return get_choice_function_arguments

    raise KeyError(name)


def install(patcher: Patcher, calls: Calls) -> None:
    """Route every model provider class of MetaGPT (present and future) through ``calls``."""
    from metagpt.provider.base_llm import BaseLLM
    from metagpt.provider.human_provider import HumanProvider

    def install_on(cls: type) -> None:
        if issubclass(cls, HumanProvider):
            return
        for name in ROUTED:
            original = cls.__dict__.get(name)
            if original is None:
                continue
            replacement = _routed(name, original, calls)
            functools.update_wrapper(replacement, original, updated=())  # not the original's __dict__ (tenacity's retry handles)
            replacement.__aios_routed__ = True  # type: ignore[attr-defined]
            patcher.replace(cls, name, replacement)

    ClassTreePatch(patcher, BaseLLM, install_on, include_root=True).apply()
