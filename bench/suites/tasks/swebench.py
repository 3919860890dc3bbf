"""SWE-Bench-Lite: patch a repository so that an issue is fixed and its tests pass.

The agent reads the issue and the relevant source files and replies with a
unified diff. If the diff does not apply, it is told why and may try once
more. The instance is resolved when its diff applies and, with the
instance's ``test_patch`` applied as well, every ``FAIL_TO_PASS`` and
``PASS_TO_PASS`` test passes (pytest, in a sandboxed subprocess).

Files shown to the agent: the whole (small) repository for the stand-in; for
official instances, the files the reference patch edits (SWE-bench's "oracle"
retrieval setting), read from a local clone at ``base_commit``.

Data: SWE-bench Lite instances as JSON/JSONL (``--data``; e.g. the test
split exported from the Hugging Face dataset) with clones of their
repositories under ``AIOS_SWEBENCH_REPOS`` (``<owner>__<name>``). Official
instances run their tests in this Python environment, not in SWE-bench's
per-instance Docker images, so their result is an approximation and labelled
so. Without data, an AIOS-made stand-in in the same schema runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path

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
from aios.bench.suites.tasks.sandbox import LocalToolBox

APPLY_TIMEOUT = 30.0
TEST_TIMEOUT = 120.0

INSTRUCTION = """You will fix an issue in a repository.

Issue:
{problem}

Repository files:
{files}
Reply with a unified diff that fixes the issue, in one ```diff block, with paths relative to the repository root
(--- a/path and +++ b/path lines)."""

_DIFF_START = re.compile(r"^(diff --git |--- a/|--- )", re.MULTILINE)


def default_data_dir() -> Path:
    return DATA_DIR / "swebench"


def _repos_dir() -> Path | None:
    env = os.environ.get("AIOS_SWEBENCH_REPOS")
    return Path(env) if env else None


def _rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        return data if isinstance(data, list) else data.get("instances", [])
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _instances_file(root: Path) -> Path | None:
    if root.is_file():
        return root
    for pattern in ("*.jsonl", "*.json"):
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
    return None


def extract_patch(reply: str) -> str | None:
    """The unified diff in a reply: a ```diff/```patch block, else the text from its first diff header."""
    blocks = fenced_blocks(reply, languages=("diff", "patch", ""))
    for block in blocks:
        if _DIFF_START.search(block):
            return block.rstrip("\n") + "\n"
    m = _DIFF_START.search(reply)
    if m:
        return reply[m.start():].split("```")[0].rstrip("\n") + "\n"
    return None


def edited_files(patch: str) -> list[str]:
    return sorted(set(re.findall(r"^\+\+\+ b/(\S+)", patch, re.MULTILINE)))


def tests_of(value: str | list[str]) -> list[str]:
    return json.loads(value) if isinstance(value, str) else list(value)


def _listing(files: dict[str, str]) -> str:
    return "".join(f"--- {path} ---\n{text}\n" for path, text in sorted(files.items()))


class SWEEpisode(Episode):
    max_replies = 2

    def __init__(self, task: Task, judge: LocalToolBox) -> None:
        super().__init__(task)
        self.judge = judge

    def first_message(self) -> str:
        shown = {p: t for p, t in self.task.data["_files"].items() if p in self.task.data["_shown"]}
        return INSTRUCTION.format(problem=self.task.data["problem_statement"].strip(), files=_listing(shown))

    async def step(self, reply: str) -> StepResult:
        self.replies.append(reply)
        patch = extract_patch(reply)
        if patch is None:
            if len(self.replies) >= self.max_replies:
                return StepResult(None, done=True)
            return StepResult("I found no diff in your reply. Reply with a unified diff in a ```diff block.", done=False)
        self.answer = patch
        result = await self.judge.run_shell("git apply --check model.diff", files={**self.task.data["_files"], "model.diff": patch}, timeout=APPLY_TIMEOUT)
        if result.ok or len(self.replies) >= self.max_replies:
            return StepResult(None, done=True)
        why = "\n".join(result.stderr.strip().splitlines()[-5:])
        return StepResult(f"Your patch does not apply:\n{why}\nReply with a corrected unified diff.", done=False)


class SWEBenchLite(Suite):
    name = "swebench"
    description = "SWE-Bench-Lite with and without AIOS: repository patching (offline stand-in unless --data)"
    details = """The agent reads an issue and the source files and replies with a unified diff
    (one retry if it does not apply); resolved when the instance's FAIL_TO_PASS and
    PASS_TO_PASS tests pass. Offline, the shipped stand-in (four small repositories)
    runs; ``--data`` with ``AIOS_SWEBENCH_REPOS`` runs official instances (tests in
    this environment, not SWE-bench's Docker images: an approximation, labelled so)."""
    default_max_tokens = 384
    default_limit = 4

    def __init__(self) -> None:
        self._judge = LocalToolBox(parallel=2)

    def load(self, options: LoadOptions) -> TaskSet:
        root = Path(options.path) if options.path else default_data_dir()
        path = _instances_file(root)
        if path is None:
            raise TaskSetError(f"no SWE-bench instances (.jsonl/.json) at {root}")
        standin = is_standin(path.parent)
        tasks = []
        for row in _rows(path):
            missing = [k for k in ("instance_id", "problem_statement", "test_patch", "FAIL_TO_PASS", "PASS_TO_PASS") if k not in row]
            if missing:
                raise TaskSetError(f"{path}: an instance lacks {', '.join(missing)}: not SWE-bench's schema")
            files = self._files(row, path.parent, standin)
            shown = [p for p in files if not p.startswith("tests/")] if standin else edited_files(row.get("patch", ""))
            tasks.append(Task("swebench", row["instance_id"], {**row, "_files": files, "_shown": shown}))
        chosen = select(tasks, options, self.default_limit)
        name = (
            "SWE-bench-Lite-format stand-in (4 small repositories)"
            if standin
            else "SWE-bench Lite (official instances; tests run in this environment, not SWE-bench's Docker images)"
        )
        return TaskSet("swebench", name, official=not standin, source=str(path), total=len(tasks), tasks=tuple(chosen))

    @staticmethod
    def _files(row: dict, folder: Path, standin: bool) -> dict[str, str]:
        if standin:
            repo = folder / "repos" / f"{row['instance_id']}.json"
            return json.loads(repo.read_text(encoding="utf-8"))["files"]  # type: ignore[no-any-return]
        repos = _repos_dir()
        clone = repos / row["repo"].replace("/", "__") if repos else None
        if clone is None or not clone.is_dir():
            raise TaskSetError(
                f"instance {row['instance_id']} needs a clone of {row['repo']}: set AIOS_SWEBENCH_REPOS to a folder holding "
                f"{row['repo'].replace('/', '__')} (git clone https://github.com/{row['repo']})"
            )
        import subprocess

        out = {}
        for rel in edited_files(row.get("patch", "")):
            shown = subprocess.run(["git", "-C", str(clone), "show", f"{row['base_commit']}:{rel}"], capture_output=True, text=True)
            if shown.returncode == 0:
                out[rel] = shown.stdout
        return out

    def episode(self, task: Task, tools: ToolBox) -> Episode:
        return SWEEpisode(task, self._judge)

    async def score(self, episode: Episode, sandbox: LocalToolBox) -> Verdict:
        data = episode.task.data
        if not episode.answer:
            return Verdict(False, "no patch")
        f2p, p2p = tests_of(data["FAIL_TO_PASS"]), tests_of(data["PASS_TO_PASS"])
        tests = " ".join(shlex.quote(t) for t in f2p + p2p)
        files = {"model.diff": episode.answer, "test.diff": data["test_patch"]}
        if data.get("_files") and is_standin_task(data):
            files.update(data["_files"])
            fetch = ""
        else:
            clone = _repos_dir() / data["repo"].replace("/", "__")  # type: ignore[operator]
            fetch = f"git -C {shlex.quote(str(clone))} archive {shlex.quote(data['base_commit'])} | tar -x && "
        python = shlex.quote(sys.executable)
        command = (
            f"{fetch}git apply model.diff || exit 3; git apply test.diff || exit 4; "
            f"{python} -m pytest -q -rA -p no:cacheprovider {tests}"
        )
        result = await sandbox.run_shell(command, files=files, timeout=TEST_TIMEOUT)
        if result.returncode == 3:
            return Verdict(False, "the patch does not apply")
        if result.returncode == 4:
            return Verdict(False, "the instance's test patch does not apply on top of the agent's patch")
        if result.timed_out:
            return Verdict(False, f"the tests did not finish within {TEST_TIMEOUT:g} s")
        passed = set(re.findall(r"^PASSED (\S+)", result.stdout, re.MULTILINE))
        missing = [t for t in f2p + p2p if t not in passed]
        if not missing:
            return Verdict(True, "resolved")
        return Verdict(False, f"{len(missing)} required test(s) not passing: {', '.join(missing[:3])}")


def is_standin_task(data: dict) -> bool:
    return data.get("base_commit") == "aios-standin"
