"""MINT: multi-turn problem solving with a Python tool and environment feedback.

Each task is an episode of at most 5 turns. In a turn the agent either runs
Python (a ```python block, or ``<execute>``) and sees its output, or proposes
an answer (``<solution> ... </solution>``), at most twice; a wrong answer is
answered with "Your answer is wrong.", and every observation says how many
steps and proposals are left (MINT's setting without an LLM feedback
provider, i.e. tool use plus binary feedback). Success is judged during the
episode, by MINT's rules per task type (:mod:`aios.bench.suites.tasks.mint_check`).

The agent's code runs as its tool: a sandboxed subprocess without AIOS, the
kernel's ``python`` tool with AIOS. Variables persist between the agent's
cells, as in MINT's Python REPL (earlier cells are replayed silently), and a
cell's last expression is echoed like an interactive interpreter does.

Data: MINT's processed test prompts (``<subset>/test_prompts.json``, one JSON
object per line). By default from ``../shared/data/mint`` next to the
repository (``AIOS_MINT_DATA`` or ``--data`` point at another copy or at a
MINT checkout's ``data/processed``). Without it, a small AIOS-made stand-in in
the same schema is used and labelled as such.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from aios.bench.suites.tasks import mint_check
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
)
from aios.bench.suites.tasks.code import fenced_blocks
from aios.bench.suites.tasks.repl import repl_program
from aios.bench.suites.tasks.sandbox import LocalToolBox

SUBSETS = ("gsm8k", "hotpotqa", "humaneval", "math", "mbpp", "mmlu", "theoremqa")
CODE_SUBSETS = ("humaneval", "mbpp")
MAX_STEPS = 5
MAX_PROPOSALS = 2
CELL_TIMEOUT = 10.0
#: MINT's limit for running a code solution against its tests
CHECK_TIMEOUT = 10.0

PROTOCOL = """You are a helpful assistant solving a task. You can use a Python environment.

In each turn, first think step by step inside <thought> ... </thought>. Then do ONE of:
1) run Python code and see its output, written as:
```python
print("Hello World!")
```
2) give your final answer, written as: The answer is <solution> YOUR_ANSWER </solution>.

You have {steps} turns to run code or answer, and you may answer at most {proposals} times.

{example}
---

Task:
{task}"""

EXAMPLE_REASONING = """Example:
Task: What is the sum of the squares of 3 and 4?
Assistant: <thought> Compute 3**2 + 4**2 with Python. </thought>
```python
print(3**2 + 4**2)
```
Observation:
25
Assistant: <thought> The result is 25. </thought> The answer is <solution> 25 </solution>.
"""

EXAMPLE_CODE = """Example:
Task: Write a function double(x) that returns 2 * x.
Assistant: <thought> Write the function and test it. </thought>
```python
def double(x):
    return 2 * x
print(double(4))
```
Observation:
8
Assistant: <thought> It works. </thought> The answer is <solution>
def double(x):
    return 2 * x
</solution>.
"""

INVALID = (
    "I don't understand your input.\n"
    "If you want to run code, write it in a ```python code block.\n"
    "If you want to give an answer, write <solution> YOUR_ANSWER </solution>.\n"
    "For example: The answer to the question is <solution> 42 </solution>."
)

_SOLUTION = re.compile(r"<solution>(.*?)</solution>", re.DOTALL)
_EXECUTE = re.compile(r"<execute>(.*?)</execute>", re.DOTALL)


def default_data_dir() -> Path:
    """``AIOS_MINT_DATA``, else ``../shared/data/mint`` next to the repository."""
    env = os.environ.get("AIOS_MINT_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "shared" / "data" / "mint"  # bench/suites/tasks/ -> beside the repository


def _subset_file(root: Path, subset: str) -> Path | None:
    for candidate in (root / subset / "test_prompts.json", root / "data" / "processed" / subset / "test_prompts.json"):
        if candidate.is_file():
            return candidate
    return None


def _read(path: Path, subset: str) -> list[Task]:
    tasks = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskSetError(f"{path}:{n} is not JSON ({exc.msg}); MINT files have one JSON object per line") from None
        if "prompt" not in row or "reference" not in row:
            raise TaskSetError(f"{path}:{n} lacks 'prompt' or 'reference': not MINT's test_prompts schema")
        tasks.append(Task("mint", f"{subset}/{row.get('id', n - 1)}", {**row, "subset": subset}))
    return tasks


def task_prompt(task: Task) -> str:
    data, subset = task.data, task.data["subset"]
    prompt = data["prompt"]
    if subset == "humaneval":
        return "Complete the following code:\n\n" + prompt
    if subset == "mbpp":
        return prompt.replace('"""', "").strip()
    if subset == "theoremqa":
        return "Answer the following question with a number, a list of numbers or True or False. " + prompt.strip()
    return prompt.strip()


class MINTEpisode(Episode):
    max_replies = MAX_STEPS

    def __init__(self, task: Task, tools: ToolBox, judge: LocalToolBox) -> None:
        super().__init__(task)
        self.tools, self.judge = tools, judge
        self.steps = 0
        self.proposals = 0
        self.cells: list[str] = []
        self.success = False

    def first_message(self) -> str:
        example = EXAMPLE_CODE if self.task.data["subset"] in CODE_SUBSETS else EXAMPLE_REASONING
        return PROTOCOL.format(steps=MAX_STEPS, proposals=MAX_PROPOSALS, example=example, task=task_prompt(self.task))

    def _turn_info(self) -> str:
        steps_left, proposals_left = MAX_STEPS - self.steps, MAX_PROPOSALS - self.proposals
        text = f"You have {steps_left} steps left and {proposals_left} chances to propose solution left."
        if steps_left <= 1:
            text += "\nYou should take the last step to propose a solution."
        return text

    async def _judge(self, answer: str) -> bool:
        data, subset = self.task.data, self.task.data["subset"]
        if subset in CODE_SUBSETS:
            result = await self.judge.run_python(mint_check.code_program(answer, data["reference"]), timeout=CHECK_TIMEOUT)
            return result.ok
        if subset == "mmlu":
            return mint_check.multiple_choice_success(answer, str(data["reference"]), data["prompt"])
        if subset == "theoremqa":
            return mint_check.theoremqa_success(answer, data["reference"], data.get("answer_type"))
        return mint_check.reasoning_success(answer, data["reference"])

    async def step(self, reply: str) -> StepResult:
        self.replies.append(reply)
        self.steps += 1
        solutions = [s.strip() for s in _SOLUTION.findall(reply)]
        if solutions and any(solutions):
            self.proposals += 1
            self.answer = "\n".join(s for s in solutions if s)
            if await self._judge(self.answer):
                self.success = True
                return StepResult(None, done=True)
            observation = "Your answer is wrong."
        else:
            code = "\n".join(b.strip() for b in _EXECUTE.findall(reply)) or "\n".join(b.strip() for b in fenced_blocks(reply))
            if code.strip():
                result = await self.tools.run_python(repl_program(self.cells, code), timeout=CELL_TIMEOUT)
                if result.ok:
                    self.cells.append(code)
                observation = result.observation()
            else:
                observation = INVALID
        if self.proposals >= MAX_PROPOSALS or self.steps >= MAX_STEPS:
            return StepResult(None, done=True)
        return StepResult(f"Observation:\n{observation}\n{self._turn_info()}", done=False)


class MINT(Suite):
    name = "mint"
    description = "MINT with and without AIOS: multi-turn problem solving with Python tool use"
    details = """Up to 5 turns of Python tool use with the environment's feedback, at most
    2 proposed answers (MINT's protocol without an LLM feedback provider). Data:
    MINT's processed test prompts (``../shared/data/mint``, ``AIOS_MINT_DATA`` or
    ``--data``); AlfWorld is not included."""
    default_max_tokens = 256
    default_limit = 14

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--subsets", default="", help="comma-separated MINT subsets (default: all available)")

    def __init__(self) -> None:
        self._judge = LocalToolBox(parallel=2)

    def load(self, options: LoadOptions) -> TaskSet:
        subsets = options.subsets or SUBSETS
        unknown = [s for s in subsets if s not in SUBSETS]
        if unknown:
            raise TaskSetError(f"unknown MINT subset(s) {', '.join(unknown)}; available: {', '.join(SUBSETS)} (AlfWorld is not supported)")
        root = Path(options.path) if options.path else default_data_dir()
        official = all(_subset_file(root, s) for s in subsets) and not is_standin(root)
        if options.path and not all(_subset_file(root, s) for s in subsets):
            missing = [s for s in subsets if not _subset_file(root, s)]
            raise TaskSetError(f"{root} has no MINT data for {', '.join(missing)} (expected <subset>/test_prompts.json or data/processed/<subset>/...)")
        if not official:
            root = DATA_DIR / "mint"
        per_subset = {s: _read(_subset_file(root, s), s) for s in subsets if _subset_file(root, s)}  # type: ignore[arg-type]
        if not per_subset:
            raise TaskSetError(f"no MINT tasks under {root}")
        # interleave subsets so that a small --limit still covers every kind of task
        order: list[Task] = []
        longest = max(len(v) for v in per_subset.values())
        for i in range(longest):
            order += [tasks[i] for tasks in per_subset.values() if i < len(tasks)]
        chosen = order if options.full else order[: options.limit if options.limit is not None else self.default_limit]
        if options.limit is not None and options.limit < 1:
            raise TaskSetError("--limit must be at least 1")
        name = (
            f"MINT ({', '.join(per_subset)}; processed test prompts, AlfWorld excluded)"
            if official
            else f"MINT-format stand-in ({', '.join(per_subset)})"
        )
        return TaskSet("mint", name, official=official, source=str(root), total=len(order), tasks=tuple(chosen))

    def episode(self, task: Task, tools: ToolBox) -> Episode:
        return MINTEpisode(task, tools, self._judge)

    async def score(self, episode: Episode, sandbox: LocalToolBox) -> Verdict:
        assert isinstance(episode, MINTEpisode)
        if episode.success:
            return Verdict(True, f"solved in {episode.steps} turn(s)")
        if episode.proposals == 0:
            return Verdict(False, f"no answer proposed in {episode.steps} turn(s)")
        return Verdict(False, f"wrong answer after {episode.proposals} proposal(s)")
