"""Rendering a conversation with the model's own chat template.

A GGUF carries its chat template as Jinja source under
``tokenizer.chat_template``; rendering it exactly as Hugging Face does (sandboxed
Jinja, ``trim_blocks``/``lstrip_blocks``, ``raise_exception``) is the only way
to give the model the prompt format it was trained on. Templates differ in what
they accept: Gemma's has no system role (it folds the system message into the
first user turn) and insists that user and assistant turns alternate. When a
template rejects a conversation, the messages are normalised (later system
messages become user turns, consecutive turns of one role are merged) and
rendered again, so agent frameworks that send two user messages in a row still
work; nothing is dropped.

Some GGUFs (e.g. converted base checkpoints such as the default Gemma 3 270M)
ship without a template. For the architectures listed in
:data:`FAMILY_TEMPLATES` the family's published format is used; for others the
core must be given ``chat_template=``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from aios_core.errors import ConfigError, InvalidSyscallError
from aios_core.syscalls import Message

#: The Gemma 3 instruction format (https://ai.google.dev/gemma/docs/core/prompt-structure):
#: no system role, so the system text opens the first user turn followed by a blank line;
#: the assistant speaks as "model"; turns alternate strictly; contents are trimmed.
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages and messages[0]['role'] == 'system' -%}
{%- set preamble = messages[0]['content'] + '\\n\\n' -%}
{%- set turns = messages[1:] -%}
{%- else -%}
{%- set preamble = '' -%}
{%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
{%- endif -%}
{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' }}
{%- if loop.first %}{{ preamble }}{% endif -%}
{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<start_of_turn>model\\n' }}
{%- endif -%}
"""

#: templates for GGUF architectures whose files often lack ``tokenizer.chat_template``
FAMILY_TEMPLATES: dict[str, str] = {"gemma3": GEMMA3_TEMPLATE}


class TemplateRejected(Exception):
    """The template itself refused the conversation (its ``raise_exception``)."""


def _raise_exception(message: str) -> None:
    raise TemplateRejected(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, separators=separators, sort_keys=sort_keys)


def _environment() -> ImmutableSandboxedEnvironment:
    # the settings transformers uses for chat templates, so templates render the same way
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _as_dicts(messages: Sequence[Message]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content or ""}
        if m.name:
            item["name"] = m.name
        out.append(item)
    return out


def normalize_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alternating turns for strict templates: keep a leading system message, make later ones user turns, merge runs."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "system" and i > 0:
            role = "user"
        if out and out[-1]["role"] == role:
            out[-1] = {**out[-1], "content": f"{out[-1]['content']}\n\n{m['content']}"}
        else:
            out.append({**m, "role": role})
    return out


@dataclass
class ChatTemplate:
    """A compiled chat template plus the special-token strings it refers to."""

    source: str
    bos_token: str = ""
    eos_token: str = ""
    #: where the template came from: "gguf", "family:<arch>" or "option"
    origin: str = "gguf"
    _compiled: jinja2.Template = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self._compiled = _environment().from_string(self.source)
        except jinja2.TemplateError as exc:
            raise ConfigError(f"the chat template ({self.origin}) is not valid Jinja: {exc}") from exc

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        return self._compiled.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages``; InvalidSyscallError when the template cannot express them."""
        dicts = _as_dicts(messages)
        try:
            return self._render(dicts, add_generation_prompt)
        except TemplateRejected:
            pass
        except jinja2.TemplateError as exc:
            raise InvalidSyscallError(f"the model's chat template failed on this conversation: {exc}") from exc
        try:
            return self._render(normalize_turns(dicts), add_generation_prompt)
        except (TemplateRejected, jinja2.TemplateError) as exc:
            raise InvalidSyscallError(
                f"the model's chat template rejects this conversation even with merged turns: {exc}; "
                "start with a user message (after an optional system message)"
            ) from exc

    def system_prefix(self, system: str) -> str:
        """The rendered text that depends only on the system message: what requests sharing it have in common.

        Found as the common start of two renderings that differ only in the
        user message, so it is right for any template, including ones that
        fold the system text into the first user turn.
        """
        a = self.render([Message(role="system", content=system), Message(role="user", content="\x01a")])
        b = self.render([Message(role="system", content=system), Message(role="user", content="\x02b")])
        n = 0
        for x, y in zip(a, b):
            if x != y:
                break
            n += 1
        return a[:n]


def template_for_model(metadata_template: str | None, architecture: str, *, bos_token: str, eos_token: str, override: str | None = None) -> ChatTemplate:
    """The template to use: an explicit ``override``, else the GGUF's own, else the architecture family's."""
    if override:
        return ChatTemplate(override, bos_token, eos_token, origin="option")
    if metadata_template:
        return ChatTemplate(metadata_template, bos_token, eos_token, origin="gguf")
    family = FAMILY_TEMPLATES.get(architecture)
    if family is not None:
        return ChatTemplate(family, bos_token, eos_token, origin=f"family:{architecture}")
    raise ConfigError(
        f"the GGUF has no tokenizer.chat_template and AIOS knows no template for architecture {architecture!r}; "
        "pass the model's Jinja chat template as the core option chat_template="
    )
