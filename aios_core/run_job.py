"""What ``aios run`` does: several agents share one model through the kernel, and you see how it went.

Each agent is a small program of two dependent LLM calls (a question, then a
follow-up asked in the same conversation, so the second prompt carries the
first answer) and all agents run at once. The table shows, per agent, its
answers and where its time went (queueing vs. generating); the totals show
what the scheduler and the batching core achieved (batch size, prefix-cache
hits, snapshots).

The default model is a *base* checkpoint (Gemma 3 270M): it continues text,
it does not follow instructions, so a chat template alone makes it repeat the
instructions back. The job therefore prompts it the way base models are
prompted: a few-shot frame of worked question/answer turns that every agent
shares (the core computes that common prefix once), then the agent's own
short factual question. Answers are cut at the end of their first line, and
an answer that only repeats the prompt is marked as an echo, never shown as an
answer. A larger GGUF (``aios run --model-path FILE``) answers better through
the same frame.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aios_core.kernel import Kernel


@dataclass(frozen=True)
class Question:
    text: str
    #: words any correct answer contains (lower case); shown as a check mark, never substituted for the answer
    accept: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    role: str
    first: Question
    follow_up: Question


#: short factual questions a 270M base model can continue correctly inside the frame; a follow-up per agent
TASKS: tuple[Task, ...] = (
    Task("geographer", Question("What is the capital of Italy?", ("rome",)), Question("What is the capital of Japan?", ("tokyo",))),
    Task("naturalist", Question("What do bees make?", ("honey",)), Question("What color is grass?", ("green",))),
    Task("astronomer", Question("Which planet do we live on?", ("earth",)), Question("What shines in the sky during the day?", ("sun",))),
    Task("linguist", Question("What is the opposite of hot?", ("cold",)), Question("What is the opposite of up?", ("down",))),
    Task("calendar", Question("How many days are in a week?", ("seven", "7")), Question("Which month comes after January?", ("february",))),
    Task("cook", Question("What is frozen water called?", ("ice",)), Question("What do bakers bake?", ("bread", "cakes", "cake"))),
    Task("colorist", Question("What color is snow?", ("white",)), Question("What color is coal?", ("black",))),
    Task("zoologist", Question("What animal says moo?", ("cow",)), Question("What animal barks?", ("dog",))),
)

#: the frame every agent shares (instructions, then worked examples as turns): the core's prefix cache computes it once
SYSTEM = "Short questions, each answered with a word or a short phrase."
EXAMPLES: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris."),
    ("What color is the sky on a clear day?", "Blue."),
    ("How many legs does a spider have?", "Eight."),
    ("What is the opposite of night?", "Day."),
)
#: generation stops where the examples' answers stop (a base model does not end its turn by itself: it would go on
#: with unrelated tokens), at a line's end, or where it starts the next question of the pattern; the answers asked
#: for are words, so a period never occurs inside one
STOP = [".", "\n", "Q:"]

_ANSWER_PREFIX = re.compile(r"^\s*(?:A|Answer)\s*:\s*", re.IGNORECASE)
_WORDS = re.compile(r"[a-z0-9]+")


def frame(question: str, history: tuple[tuple[str, str], ...] = ()) -> list[dict[str, str]]:
    """The few-shot messages for ``question``: the shared examples, the agent's earlier turns, then the question."""
    messages = [{"role": "system", "content": SYSTEM}]
    for q, a in (*EXAMPLES, *history):
        messages += [{"role": "user", "content": f"Q: {q}"}, {"role": "assistant", "content": a}]
    messages.append({"role": "user", "content": f"Q: {question}"})
    return messages


def clean_answer(text: str) -> str:
    """The answer's first non-empty line, without an ``A:`` the model may have written before it."""
    for line in (text or "").splitlines():
        line = _ANSWER_PREFIX.sub("", line).strip()
        if line:
            return line
    return ""


def _words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def is_echo(answer: str, question: str) -> bool:
    """Whether ``answer`` only repeats prompt text (the instructions, an example or the question) instead of answering.

    A base model that does not pick up the frame copies it; such text must
    never be presented as the agent's answer. An empty answer counts as an echo
    (nothing was answered).
    """
    words = _words(answer)
    if not words:
        return True
    said = " ".join(words)
    prompt_lines = [SYSTEM, question, *(q for q, _ in EXAMPLES)]
    for line in prompt_lines:
        line_words = " ".join(_words(line))
        # the answer is (a run of) a prompt line, or contains a whole prompt line
        if (len(words) >= 3 and said in line_words) or line_words in said:
            return True
    return False


def is_correct(answer: str, question: Question) -> bool:
    words = set(_words(answer))
    return any(accept in words for accept in question.accept)


@dataclass
class AgentOutcome:
    agent: str
    questions: list[str]
    answers: list[str]
    echoes: list[bool]
    correct: list[bool]
    calls: int
    completion_tokens: int
    waiting: float
    service: float
    turnaround: float
    preemptions: int
    error: str | None = None
    #: the model's raw text per call (before the first line was taken), for --verbose inspection
    raw: list[str] = field(default_factory=list)


async def _one_agent(kernel: Kernel, name: str, task: Task, max_tokens: int) -> AgentOutcome:
    agent = kernel.agent(name)
    loop = asyncio.get_running_loop()
    start = loop.time()
    outcome = AgentOutcome(name, [], [], [], [], 0, 0, 0.0, 0.0, 0.0, 0)
    history: tuple[tuple[str, str], ...] = ()
    try:
        for question in (task.first, task.follow_up):
            call = agent.llm_syscall(frame(question.text, history), max_tokens=max_tokens, stop=STOP)
            response = await kernel.acall(call)
            outcome.calls += 1
            outcome.waiting += call.timing.waiting or 0.0
            outcome.service += call.timing.service
            outcome.completion_tokens += response.usage.completion_tokens
            outcome.preemptions += call.timing.preemptions
            answer = clean_answer(response.content or "")
            echo = is_echo(answer, question.text)
            outcome.raw.append(response.content or "")
            outcome.questions.append(question.text)
            outcome.answers.append(answer)
            outcome.echoes.append(echo)
            outcome.correct.append(not echo and is_correct(answer, question))
            # the follow-up sees the first turn as it was answered (an echo stays out of the conversation)
            history = (*history, (question.text, f"{answer}." if not echo else "(no answer)."))
    except Exception as exc:  # noqa: BLE001 - reported in the table, the other agents carry on
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.turnaround = loop.time() - start
    return outcome


def _model_line(kernel: Kernel) -> str:
    """Which model answered, and where its weights came from."""
    parts = []
    for core in kernel.cores.values():
        path = getattr(core, "model_path", None)
        if core.kind == "llamacpp" and path is None:
            parts.append(f"{core.model} (Gemma 3 270M Q4_K_M, a base checkpoint, embedded)")
        elif path is not None:
            parts.append(f"{core.model} ({path})")
        else:
            parts.append(f"{core.model} ({core.kind} core)")
    return ", ".join(parts)


async def run_job(kernel: Kernel, *, agents: int = 6, max_tokens: int = 24) -> dict[str, Any]:
    """Run ``agents`` concurrent agents on a started kernel; return per-agent outcomes and totals."""
    tasks = [TASKS[i % len(TASKS)] for i in range(agents)]
    t0 = time.perf_counter()
    outcomes = await asyncio.gather(*[_one_agent(kernel, f"{task.role}-{i}", task, max_tokens) for i, task in enumerate(tasks)])
    makespan = time.perf_counter() - t0
    stats = kernel.stats()
    cores = [c for pool in stats["pools"].values() for c in pool["cores"]]
    tokens = sum(o.completion_tokens for o in outcomes)
    return {
        "outcomes": outcomes,
        "model": _model_line(kernel),
        "embedded_default": any(c.kind == "llamacpp" and getattr(c, "model_path", None) is None for c in kernel.cores.values()),
        "makespan": makespan,
        "tokens": tokens,
        "tokens_per_second": tokens / makespan if makespan > 0 else 0.0,
        "mean_batch": max((c["mean_batch"] for c in cores), default=0.0),
        "prefix_hit_rate": max((c["prefix_hit_rate"] for c in cores), default=0.0),
        "snapshots": stats["snapshots"],
        "scheduler": ", ".join(p["scheduler"] for p in stats["pools"].values()),
        "cores": ", ".join(f"{c['name']} ({c['model']})" for c in cores),
        "answers": sum(len(o.answers) for o in outcomes),
        "echoes": sum(sum(o.echoes) for o in outcomes),
        "correct": sum(sum(o.correct) for o in outcomes),
        "failed": sum(o.error is not None for o in outcomes),
    }


def _answer_cell(question: str, answer: str, echo: bool, correct: bool) -> str:
    from rich.markup import escape

    if echo:
        shown = " ".join(answer.split())[:60]
        return f"{escape(question)}\n[yellow]echo, no answer[/yellow]" + (f" [dim]({escape(shown)})[/dim]" if shown else "")
    mark = " [green]✓[/green]" if correct else ""
    return f"{escape(question)}\n[bold]{escape(answer)}[/bold]{mark}"


def render(result: dict[str, Any]) -> Any:
    """A rich renderable of the job's outcome."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="AIOS run: agents sharing one model", show_lines=True)
    for col, kw in (
        ("agent", {}),
        ("question → answer", {"ratio": 2, "overflow": "fold"}),
        ("follow-up → answer", {"ratio": 2, "overflow": "fold"}),
        ("tokens", {"justify": "right"}),
        ("wait s", {"justify": "right"}),
        ("gen s", {"justify": "right"}),
        ("total s", {"justify": "right"}),
        ("preempt", {"justify": "right"}),
    ):
        table.add_column(col, **kw)
    for o in result["outcomes"]:
        if o.error is not None:
            cells = [f"[red]{escape(o.error)}[/red]", ""]
        else:
            cells = [_answer_cell(q, a, e, c) for q, a, e, c in zip(o.questions, o.answers, o.echoes, o.correct)]
            cells += [""] * (2 - len(cells))
        table.add_row(
            o.agent, *cells, str(o.completion_tokens), f"{o.waiting:.2f}", f"{o.service:.2f}", f"{o.turnaround:.2f}", str(o.preemptions)
        )
    totals = Table.grid(padding=(0, 2))
    totals.add_row("model", escape(result["model"]))
    totals.add_row("cores", result["cores"])
    totals.add_row("scheduler", result["scheduler"])
    totals.add_row("makespan", f"{result['makespan']:.2f} s")
    totals.add_row("generated", f"{result['tokens']} tokens, {result['tokens_per_second']:.1f} tokens/s aggregate")
    totals.add_row("mean batch", f"{result['mean_batch']:.2f} sequences per engine step")
    totals.add_row("prefix cache hit rate", f"{100 * result['prefix_hit_rate']:.1f}% of prompt tokens")
    totals.add_row("snapshots", f"{result['snapshots']['saved']} taken, {result['snapshots']['restored']} restored")
    totals.add_row(
        "answers",
        f"{result['answers']} given, {result['correct']} match the expected word, {result['echoes']} echoed the prompt (marked, not shown as answers)",
    )
    totals.add_row("failed agents", str(result["failed"]))
    notes = [
        "",
        "Each question is framed with worked examples (few-shot), the way a base model is prompted; the examples are "
        "one prefix all agents share, computed once by the core.",
    ]
    if result.get("embedded_default"):
        notes.append(
            "The embedded model is a 270M base checkpoint: it continues text rather than follow instructions. "
            "For better answers run a larger GGUF through the same kernel: aios run --model-path /path/to/model.gguf"
        )
    return Group(table, totals, *notes)
