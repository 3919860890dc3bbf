"""The plugin's tools: a JSON schema for each one's arguments, and the side-effect class access control acts on.

``note_add``, ``note_read``, ``note_list`` and ``notes_clear`` want the calling
agent's context (``wants_context=True``): the tool manager passes it as
``_ctx`` and it tells whose notebook to use, so an agent can never reach
another agent's notes by naming them in its arguments.
"""

from __future__ import annotations

from typing import Any

from aios_core.tool import Tool
from aios_notes.notebook import Notebook

TITLE = {"type": "string", "minLength": 1, "maxLength": 80, "description": "title of the note"}


def text_stats(text: str) -> dict[str, int]:
    return {"words": len(text.split()), "characters": len(text), "lines": text.count("\n") + 1 if text else 0}


def make_tools(notebook: Notebook) -> list[Tool]:
    """The five tools, bound to ``notebook``."""

    def note_add(title: str, body: str, _ctx: Any) -> dict[str, object]:
        return notebook.add(_ctx.agent.name, title, body)

    def note_read(title: str, _ctx: Any) -> str:
        return notebook.read(_ctx.agent.name, title)

    def note_list(_ctx: Any) -> list[str]:
        return notebook.titles(_ctx.agent.name)

    def notes_clear(_ctx: Any) -> dict[str, int]:
        return {"deleted": notebook.clear(_ctx.agent.name)}

    return [
        Tool(
            name="text_stats",
            description="Count the words, characters and lines of a text.",
            parameters={
                "type": "object",
                "properties": {"text": {"type": "string", "description": "the text to measure"}},
                "required": ["text"],
                "additionalProperties": False,
            },
            func=text_stats,
            side_effect="none",
            timeout=5.0,
            max_concurrency=8,
        ),
        Tool(
            name="note_add",
            description="Keep a note under a title in your notebook (replaces a note with the same title).",
            parameters={
                "type": "object",
                "properties": {"title": TITLE, "body": {"type": "string", "description": "the note's text"}},
                "required": ["title", "body"],
                "additionalProperties": False,
            },
            func=note_add,
            side_effect="write",
            wants_context=True,
            timeout=5.0,
        ),
        Tool(
            name="note_read",
            description="Read the note with this title from your notebook.",
            parameters={"type": "object", "properties": {"title": TITLE}, "required": ["title"], "additionalProperties": False},
            func=note_read,
            side_effect="read",
            wants_context=True,
            timeout=5.0,
        ),
        Tool(
            name="note_list",
            description="List the titles of the notes in your notebook.",
            parameters={"type": "object", "properties": {}, "additionalProperties": False},
            func=note_list,
            side_effect="read",
            wants_context=True,
            timeout=5.0,
        ),
        Tool(
            name="notes_clear",
            description="Delete every note in your notebook. This cannot be undone.",
            parameters={"type": "object", "properties": {}, "additionalProperties": False},
            func=notes_clear,
            side_effect="irreversible",
            wants_context=True,
            timeout=5.0,
        ),
    ]
