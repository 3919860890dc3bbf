"""Fenced code blocks of the documentation pages, and what the tests do with each.

A block's fate is set by an HTML comment on the line right above it (blank
lines between are allowed), invisible on the rendered site:

* a ``python`` block runs, in page order, all blocks of a page sharing one namespace;
* a block with a ``title="name"`` attribute (e.g. ``toml title="aios.toml"``) is
  written to that file in the page's working directory before later blocks run;
* ``<!-- docs-test: run -->`` above a ``bash`` block runs it with ``bash -e``;
* ``<!-- docs-test: skip: <reason> -->`` keeps any block from running; the reason is required
  and shown when the test reports what it skipped;
* a line ``--8<-- "path"`` inside a block (pymdownx.snippets) stands for that file of the
  repository, as on the site, so a page can quote a real source file and run it.

Everything else (``bash`` without ``run``, ``console``, ``text``, ``json``) is illustration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
ROOT = Path(__file__).resolve().parents[2]
SNIPPET = re.compile(r'^--8<--\s+"(?P<path>[^"]+)"\s*$')
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<action>run|skip)(?::\s*(?P<reason>.*?))?\s*-->\s*$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    title: str | None = None
    action: str | None = None  # "run" or "skip"
    reason: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        if self.action == "skip":
            return False
        return self.lang == "python" or (self.lang in ("bash", "sh", "shell") and self.action == "run")

    @property
    def writes_file(self) -> bool:
        return self.title is not None and self.action != "skip"


def blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence, info = match.group("indent"), match.group("fence"), match.group("info").strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            line = lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip()
            snippet = SNIPPET.match(line.strip())
            if snippet is not None:
                body.extend((ROOT / snippet.group("path")).read_text(encoding="utf-8").splitlines())
            else:
                body.append(line)
            i += 1
        i += 1
        action = reason = None
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        directive = DIRECTIVE.match(lines[j]) if j >= 0 else None
        if directive is not None:
            action, reason = directive.group("action"), directive.group("reason")
        lang = info.split()[0].lstrip("{.").rstrip("}") if info else ""
        title = TITLE.search(info)
        found.append(Block(page, start + 1, lang, "\n".join(body) + "\n", title.group("title") if title else None, action, reason))
    return found
