"""No block of six or more identical lines stands twice in the kernel or the adapters.

Catches: a copy of a function body (a sync twin of an async method, a second adapter's copy of the first's
patch logic) coming back instead of a shared helper. Lines are compared with whitespace folded; blank
lines, comments, imports and lone punctuation are passed over, so only code that does something counts.
Same-shape boilerplate with other names (the error classes, pydantic fields) is not identical and may stay.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = 6
TRIVIAL = {"(", ")", "[", "]", "{", "}", "),", "],", "},", '"""', "'''", "else:", "try:", "finally:", "pass", "return", "raise"}


def _code_lines(path: Path) -> list[tuple[str, int]]:
    kept: list[tuple[str, int]] = []
    in_import = False
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.strip()
        if in_import:
            in_import = not text.endswith(")")
            continue
        if text.startswith("import ") or (text.startswith("from ") and " import " in text):
            in_import = text.endswith("(")
            continue
        if not text or text.startswith("#") or text in TRIVIAL:
            continue
        kept.append((re.sub(r"\s+", " ", text), number))
    return kept


def twins(root: Path, folders: tuple[str, ...]) -> list[str]:
    places: dict[tuple[str, ...], list[tuple[str, int]]] = defaultdict(list)
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            lines = _code_lines(path)
            for i in range(len(lines) - RUN + 1):
                places[tuple(text for text, _ in lines[i : i + RUN])].append((str(path.relative_to(root)), lines[i][1]))
    pairs: list[tuple[str, int, str, int, str]] = []
    for run, where in places.items():
        apart: list[tuple[str, int]] = []
        for file, line in where:
            if not any(file == f and abs(line - n) < RUN for f, n in apart):
                apart.append((file, line))
        if len(apart) < 2:
            continue
        (fa, la), (fb, lb) = apart[0], apart[1]
        # a longer twin shows as several overlapping windows: report it once
        if not any(fa == pa and fb == pb and abs(la - qa) < RUN and abs(lb - qb) < RUN for pa, qa, pb, qb, _ in pairs):
            pairs.append((fa, la, fb, lb, run[0][:50]))
    return sorted(f"{fa}:{la} ~ {fb}:{lb} ({text}...)" for fa, la, fb, lb, text in pairs)


def test_the_kernel_and_the_adapters_have_no_twins() -> None:
    assert twins(ROOT, ("aios_core", "adapters")) == []


def test_the_finder_finds_a_twin(tmp_path: Path) -> None:
    body = "\n".join(f"    total = total + {i} * factor" for i in range(RUN))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(f"def f(total, factor):\n{body}\n    return total\n")
    (tmp_path / "pkg" / "b.py").write_text(f"def g(total, factor):\n{body}\n    return total\n")
    assert len(twins(tmp_path, ("pkg",))) == 1
    (tmp_path / "pkg" / "b.py").write_text(f"def g(total, factor):\n{body.replace('factor', 'scale')}\n    return total\n")
    assert twins(tmp_path, ("pkg",)) == []  # same shape, other names: not a twin
