"""Getting code out of a chat model's reply.

Chat models answer with prose around fenced code, or with bare code, and a
reply cut off by ``max_tokens`` ends mid-statement. The same extraction is
applied to every setup and framework, so it cannot favour either side. It is
the usual "sanitize" step of chat-model code benchmarks: take the fenced
block (or the code-looking part of the reply) and drop trailing lines until
what is left parses.
"""

from __future__ import annotations

import ast
import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^(from |import |def |class |@|async def )")


def fenced_blocks(text: str, languages: tuple[str, ...] = ("python", "py", "")) -> list[str]:
    """Fenced blocks in ``text`` whose language tag is one of ``languages`` (an unclosed last block counts)."""
    return [body for lang, body in _FENCE.findall(text) if lang.lower() in languages]


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def trim_to_parsable(code: str) -> str:
    """The longest prefix of whole lines that parses (a reply cut off by max_tokens ends mid-statement)."""
    lines = code.rstrip().splitlines()
    while lines and not parses("\n".join(lines)):
        lines.pop()
    return "\n".join(lines)


def python_code(reply: str, must_define: str | None = None) -> str:
    """The Python code of a reply: a fenced block (preferring one that defines ``must_define``), else the code part."""
    blocks = fenced_blocks(reply)
    if blocks:
        if must_define:
            for block in blocks:
                if re.search(rf"^\s*def {re.escape(must_define)}\s*\(", block, re.MULTILINE):
                    return trim_to_parsable(block)
        return trim_to_parsable(blocks[0])
    lines = reply.splitlines()
    for i, line in enumerate(lines):
        if _CODE_START.match(line):
            return trim_to_parsable("\n".join(lines[i:]))
    return trim_to_parsable(reply)


def defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name for node in tree.body)


def indent_body(code: str) -> str:
    """A function body given without indentation gets four spaces (it follows the prompt's signature)."""
    lines = code.splitlines()
    if lines and all(not line.strip() or line.startswith((" ", "\t")) for line in lines):
        return code
    return "\n".join(("    " + line) if line.strip() else line for line in lines)
