"""GAIA: question answering that needs tools (search, reading pages and attached files, computing).

The agent gets GAIA's answer-format instruction and the question, and works
in turns: it runs Python in which three tools are defined — ``search(query)``
and ``open_page(title)`` over the web, ``read_file()`` for the task's attached
file — or it answers with ``FINAL ANSWER: ...``. Offline, "the web" is a
folder of local pages (``web/`` next to the metadata); with no such folder,
search says it is unavailable. Scoring is GAIA's quasi-exact match: numbers
compared as numbers, comma/semicolon lists element by element, strings
normalised (case, spaces, punctuation).

Data: GAIA's ``metadata.jsonl`` (``--data`` pointing at it or at a GAIA
checkout with ``2023/validation/``; the test split has no answers and is
refused). Without it, an AIOS-made stand-in in the same schema, labelled so.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

from aios.bench.suites.tasks.base import (
    DATA_DIR,
    Episode,
    LoadOptions,
    StepResult,
    Suite,
    Task,
    TaskSet,
    TaskSetError,
    ToolBox,
    Verdict,
    is_standin,
    select,
)
from aios.bench.suites.tasks.code import fenced_blocks
from aios.bench.suites.tasks.repl import repl_program
from aios.bench.suites.tasks.sandbox import LocalToolBox

MAX_STEPS = 6
CELL_TIMEOUT = 10.0
#: attached files larger than this are not inlined into the sandbox
MAX_FILE_BYTES = 200_000

#: GAIA's published answer-format instruction (shortened)
SYSTEM = (
    "You are a general AI assistant. I will ask you a question. Report your thoughts, and finish your answer with the "
    "following template: FINAL ANSWER: [YOUR FINAL ANSWER]. YOUR FINAL ANSWER should be a number OR as few words as "
    "possible OR a comma separated list of numbers and/or strings. Do not use commas or units in numbers unless asked."
)

TOOLS = """You can run Python to use these tools (print their results):
- search(query) -> the most relevant web pages, with a snippet of each
- open_page(title) -> the full text of a page
- read_file() -> the content of the file attached to the question{attached}
Write code in a ```python block; you will see its output. You have {steps} turns.

Question: {question}"""

_FINAL = re.compile(r"FINAL ANSWER:\s*(.+)", re.IGNORECASE | re.DOTALL)

_TOOL_SETUP = '''
import json as _json, re as _re
_PAGES = _json.loads(__PAGES__)
_FILE = _json.loads(__FILE__)

def _words(text):
    return _re.findall(r"[a-z0-9]+", text.lower())

def search(query, k=3):
    if not _PAGES:
        return "(web search is not available offline)"
    q = set(_words(query))
    scored = []
    for title, text in _PAGES.items():
        words = _words(title + " " + text)
        score = sum(words.count(w) for w in q) + 3 * sum(1 for w in q if w in _words(title))
        scored.append((score, title))
    scored.sort(key=lambda x: -x[0])
    out = []
    for score, title in scored[:k]:
        if score > 0:
            out.append(f"{title}: {_PAGES[title][:200].strip()}")
    return "\\n".join(out) or "(no results)"

def open_page(title):
    for t, text in _PAGES.items():
        if t.lower() == str(title).lower().strip():
            return text
    matches = [t for t in _PAGES if str(title).lower().strip() in t.lower()]
    return _PAGES[matches[0]] if matches else f"(no page titled {title!r}; use search first)"

def read_file(name=None):
    if _FILE is None:
        return "(no file is attached to this question)"
    return _FILE
'''


def default_data_dir() -> Path:
    return DATA_DIR / "gaia"


def _metadata(root: Path) -> Path | None:
    for candidate in (root, root / "metadata.jsonl", root / "2023" / "validation" / "metadata.jsonl"):
        if candidate.is_file() and candidate.name.endswith(".jsonl"):
            return candidate
    return None


def _web_pages(root: Path) -> dict[str, str]:
    """Local pages standing in for the web: ``web/*.md|*.txt`` under the data root (title = first heading or name)."""
    pages: dict[str, str] = {}
    web = root / "web"
    if not web.is_dir():
        return pages
    for path in sorted(web.iterdir()):
        if path.suffix not in (".md", ".txt"):
            continue
        text = path.read_text(encoding="utf-8")
        first = text.lstrip().splitlines()[0] if text.strip() else path.stem
        title = first.lstrip("# ").strip() if first.startswith("#") else path.stem.replace("-", " ").title()
        pages[title] = text
    return pages


def _attached(folder: Path, name: str) -> str | None:
    if not name:
        return None
    path = folder / name
    if not path.is_file():
        return f"(the attached file {name} is missing from the data folder)"
    blob = path.read_bytes()
    if len(blob) > MAX_FILE_BYTES:
        return f"(the attached file {name} has {len(blob)} bytes, too large to read here)"
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError:
        return f"(the attached file {name} is binary ({path.suffix}) and cannot be read offline here)"


# --------------------------------------------------------------------------- scoring


def _normalize_number(text: str) -> float | None:
    cleaned = text.replace("$", "").replace("%", "").replace(",", "").strip()
    try:
        return float(cleaned)
    except ValueError:
        return None


def _normalize_text(text: str) -> str:
    return "".join(ch for ch in text.lower() if not ch.isspace() and ch not in string.punctuation)


def _one(answer: str, truth: str) -> bool:
    t = _normalize_number(truth)
    if t is not None:
        a = _normalize_number(answer)
        return a is not None and a == t
    return _normalize_text(answer) == _normalize_text(truth)


def gaia_score(answer: str | None, truth: str) -> bool:
    """GAIA's quasi-exact match."""
    if answer is None:
        return False
    answer, truth = answer.strip().rstrip("."), str(truth).strip()
    if _normalize_number(truth) is not None:
        return _one(answer, truth)
    if any(sep in truth for sep in (",", ";")):
        t_items = [x.strip() for x in re.split(r"[,;]", truth)]
        a_items = [x.strip() for x in re.split(r"[,;]", answer)]
        return len(t_items) == len(a_items) and all(_one(a, t) for a, t in zip(a_items, t_items))
    return _one(answer, truth)


# --------------------------------------------------------------------------- episodes


class GAIAEpisode(Episode):
    system = SYSTEM
    max_replies = MAX_STEPS

    def __init__(self, task: Task, tools: ToolBox) -> None:
        super().__init__(task)
        self.tools = tools
        self.cells: list[str] = []
        self.steps = 0
        self.setup = _TOOL_SETUP.replace("__PAGES__", repr(json.dumps(task.data["_pages"]))).replace(
            "__FILE__", repr(json.dumps(task.data["_file"]))
        )

    def first_message(self) -> str:
        name = self.task.data.get("file_name") or ""
        attached = f" (attached: {name})" if name else " (no file is attached to this question)"
        return TOOLS.format(attached=attached, steps=MAX_STEPS, question=self.task.data["Question"])

    async def step(self, reply: str) -> StepResult:
        self.replies.append(reply)
        self.steps += 1
        final = _FINAL.search(reply)
        if final:
            self.answer = final.group(1).strip().splitlines()[0].strip()
            return StepResult(None, done=True)
        code = "\n".join(b.strip() for b in fenced_blocks(reply))
        if code.strip():
            result = await self.tools.run_python(repl_program(self.cells, code, setup=self.setup), timeout=CELL_TIMEOUT)
            if result.ok:
                self.cells.append(code)
            observation = result.observation()
        else:
            observation = "Run Python with the tools in a ```python block, or answer with FINAL ANSWER: ..."
        left = MAX_STEPS - self.steps
        if left <= 0:
            return StepResult(None, done=True)
        hint = " Give your FINAL ANSWER now." if left == 1 else ""
        return StepResult(f"Observation:\n{observation}\nYou have {left} turns left.{hint}", done=False)


class GAIA(Suite):
    name = "gaia"
    description = "GAIA with and without AIOS: tool-using question answering (offline stand-in unless --data)"
    details = """Up to 6 turns of Python with search / open_page / read_file tools, then
    ``FINAL ANSWER: ...``, scored by GAIA's quasi-exact match. Offline, the shipped
    stand-in (fictional facts, local pages as the web) runs; ``--data`` points at
    GAIA's validation metadata."""
    default_max_tokens = 256
    default_limit = 8

    def load(self, options: LoadOptions) -> TaskSet:
        root = Path(options.path) if options.path else default_data_dir()
        meta = _metadata(root)
        if meta is None:
            raise TaskSetError(f"no GAIA metadata.jsonl under {root} (expected metadata.jsonl or 2023/validation/metadata.jsonl)")
        data_root = meta.parent.parent.parent if meta.parent.name in ("validation", "test") else meta.parent
        pages = _web_pages(data_root)
        tasks = []
        for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row: dict[str, Any] = json.loads(line)
            if "Question" not in row or "task_id" not in row:
                raise TaskSetError(f"{meta}:{n} is not in GAIA's schema (needs task_id, Question, Final answer)")
            answer = row.get("Final answer")
            if answer in (None, "", "?"):
                raise TaskSetError(f"{meta} has no answers (GAIA's test split); use the validation split to score")
            row = {**row, "_pages": pages, "_file": _attached(meta.parent, row.get("file_name") or "")}
            tasks.append(Task("gaia", row["task_id"], row))
        if not tasks:
            raise TaskSetError(f"{meta} has no questions")
        standin = is_standin(data_root)
        chosen = select(tasks, options, self.default_limit)
        name = "GAIA-format stand-in (fictional facts, local pages as the web)" if standin else f"GAIA ({meta.parent.name} split)"
        return TaskSet("gaia", name, official=not standin, source=str(meta), total=len(tasks), tasks=tuple(chosen))

    def episode(self, task: Task, tools: ToolBox) -> Episode:
        return GAIAEpisode(task, tools)

    async def score(self, episode: Episode, sandbox: LocalToolBox) -> Verdict:
        truth = episode.task.data["Final answer"]
        if episode.answer is None:
            return Verdict(False, "no FINAL ANSWER")
        ok = gaia_score(episode.answer, truth)
        return Verdict(ok, "correct" if ok else f"answered {episode.answer[:80]!r}")
