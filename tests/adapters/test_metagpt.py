"""MetaGPT 0.8 through the kernel: real Roles, Actions, Teams and providers, answered by the sim core.

MetaGPT is configured with Config objects (its import-time config file points at
a temporary root, see conftest). Each test patches MetaGPT onto its own sim
kernel and unpatches afterwards; the unpatch tests then call MetaGPT again
against a stub OpenAI endpoint to show the originals are back.
"""

from __future__ import annotations

import asyncio
import importlib

import pytest

# installed by scripts/setup.sh: a missing or broken install fails these tests, it does not skip them
importlib.import_module("metagpt.roles")  # first: MetaGPT completes its pydantic models when its roles are imported

from adapters_testkit import fast_sim_core
from metagpt.actions import Action, UserRequirement
from metagpt.config2 import Config
from metagpt.context import Context
from metagpt.environment import Environment
from metagpt.logs import set_llm_stream_logfunc
from metagpt.provider.base_llm import BaseLLM
from metagpt.provider.openai_api import OpenAILLM
from metagpt.roles import Role
from metagpt.schema import Message
from metagpt.team import Team
from openai.types.chat import ChatCompletion
from scripted_cores import gemma_core

import aios
import aios_core.patching
from aios_core.errors import AIOSError, ConfigError, ContextLengthError


def context(stream: bool = False, base_url: str = "http://127.0.0.1:9/v1") -> Context:
    """MetaGPT's own way to configure a run without a config file."""
    llm = {"api_type": "openai", "api_key": "sk-placeholder", "model": "gpt-4o-mini", "base_url": base_url, "stream": stream}
    return Context(config=Config.from_llm_config(llm))


# --------------------------------------------------------------------------- a small MetaGPT project


class WriteHaiku(Action):
    name: str = "WriteHaiku"

    async def run(self, topic: str) -> str:
        return await self._aask(f"Write a haiku about {topic}.")


class ReviewHaiku(Action):
    name: str = "ReviewHaiku"

    async def run(self, history: list[Message]) -> str:
        return await self._aask(f"Review this haiku:\n{history[-1].content}")


class Poet(Role):
    name: str = "Alice"
    profile: str = "Poet"
    goal: str = "write haikus"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.set_actions([WriteHaiku])

    async def _act(self) -> Message:  # a custom _act, as MetaGPT's tutorials write them
        topic = self.get_memories(k=1)[0].content
        text = await self.rc.todo.run(topic)
        msg = Message(content=text, role=self.profile, cause_by=type(self.rc.todo))
        self.rc.memory.add(msg)
        return msg


class Critic(Role):
    name: str = "Bob"
    profile: str = "Critic"
    goal: str = "review haikus"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.set_actions([ReviewHaiku])
        self._watch([WriteHaiku])


@pytest.fixture
def kernel(sim_kernel):
    aios.patch("metagpt", sim_kernel)
    yield sim_kernel
    aios.unpatch("metagpt")


def system_prompt(syscall) -> str:
    return next(m.content for m in syscall.request.messages if m.role == "system")


# --------------------------------------------------------------------------- teams and roles


def test_a_team_run_is_one_program_of_its_roles_and_their_answers_arrive_intact(kernel):
    ctx = context()
    team = Team(context=ctx)
    team.hire([Poet(context=ctx), Critic(context=ctx)])
    history = asyncio.run(team.run(n_round=2, idea="autumn rain"))

    calls = kernel.llm_calls()
    assert [s.agent for s, _ in calls] == ["Alice", "Bob"]
    programs = {s.program for s, _ in calls}
    assert len(programs) == 1 and programs.pop().startswith("metagpt.Team")
    (poet_call, poem), (critic_call, review) = calls
    # the role's own prompt, as MetaGPT builds it, reached the kernel
    assert "named Alice" in system_prompt(poet_call) and "autumn rain" in poet_call.request.messages[-1].content
    # the kernel's answer came back to MetaGPT unchanged: it is the poet's message the critic reviews
    assert poem.content and poem.content in critic_call.request.messages[-1].content
    assert f"Poet: {poem.content}" in history and f"Critic: {review.content}" in history
    for syscall, _ in calls:  # scheduled: queued, started and finished by the kernel
        t = syscall.timing
        assert t.created <= t.queued <= t.started <= t.finished and t.service > 0
    agents = {a.name: a for a in kernel.agents.all()}
    assert agents["Alice"].framework == agents["Bob"].framework == "metagpt"
    assert agents["Alice"].syscalls == agents["Bob"].syscalls == 1
    assert agents["Bob"].completion_tokens == review.usage.completion_tokens > 0


def test_roles_gathered_in_one_environment_keep_their_own_identity(make_sim_kernel):
    kernel = make_sim_kernel(cores=[fast_sim_core(t0=0.01, max_batch=8)])
    aios.patch("metagpt", kernel)
    try:
        ctx = context()
        env = Environment(context=ctx)
        names = [f"Poet{i}" for i in range(6)]
        env.add_roles([Poet(name=n, profile=f"Poet {i}", context=ctx) for i, n in enumerate(names)])  # env keys roles by profile
        env.publish_message(Message(content="spring", cause_by=UserRequirement))
        asyncio.run(env.run())
    finally:
        aios.unpatch("metagpt")
    calls = kernel.llm_calls()
    assert sorted(s.agent for s, _ in calls) == names
    for syscall, _ in calls:  # the prompt was built by the role the syscall is attributed to
        assert f"named {syscall.agent}," in system_prompt(syscall)
    assert len({s.program for s, _ in calls}) == 1
    # they ran concurrently: the core decoded generations of different roles in the same steps
    (core,) = kernel.cores.values()
    assert core.stats().mean_batch > 1


def test_an_outer_agent_scope_gives_the_program_and_the_role_keeps_its_name(kernel):
    with aios.agent_scope("session", program="nightly-42", group="default"):
        asyncio.run(Poet(context=context()).run("winter"))
    ((syscall, _),) = kernel.llm_calls()
    assert (syscall.agent, syscall.program) == ("Alice", "nightly-42")


def test_an_action_on_its_own_runs_as_the_action(kernel):
    text = asyncio.run(WriteHaiku(context=context()).run("the sea"))
    ((syscall, response),) = kernel.llm_calls()
    assert syscall.agent == "WriteHaiku" and text == response.content


def test_classes_defined_after_patching_are_routed_too(kernel):
    class Summarize(Action):
        name: str = "Summarize"

        async def run(self, text: str) -> str:
            return await self._aask(f"Summarize: {text}")

    class Summarizer(Role):
        name: str = "Carol"
        profile: str = "Summarizer"

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.set_actions([Summarize])

    reply = asyncio.run(Summarizer(context=context()).run("a long text"))
    ((syscall, response),) = kernel.llm_calls()
    assert syscall.agent == "Carol" and reply.content == response.content


# --------------------------------------------------------------------------- the LLM layer


def test_aask_streams_through_the_kernel_into_metagpts_stream_log(kernel):
    llm = context(stream=True).llm()
    streamed: list[str] = []
    set_llm_stream_logfunc(streamed.append)
    try:
        answer = asyncio.run(llm.aask("Say something."))
    finally:
        set_llm_stream_logfunc(lambda msg: None)
    ((syscall, response),) = kernel.llm_calls()
    assert syscall.agent == "metagpt"  # a bare LLM, outside any role
    assert answer == response.content == "".join(streamed).rstrip("\n")
    assert len([s for s in streamed if s.strip()]) > 1  # deltas, not one block
    assert llm.cost_manager.total_completion_tokens == response.usage.completion_tokens


def test_aask_without_streaming_and_acompletion_answer_from_the_kernel(kernel):
    llm = context(stream=False).llm()
    answer = asyncio.run(llm.aask("Hello", system_msgs=["You are terse."]))
    completion = asyncio.run(llm.acompletion([{"role": "user", "content": "Hi"}]))
    (first, r1), (_, r2) = kernel.llm_calls()
    assert answer == r1.content and first.request.messages[0].content == "You are terse."
    assert isinstance(completion, ChatCompletion) and llm.get_choice_text(completion) == r2.content
    assert completion.usage.completion_tokens == r2.usage.completion_tokens


def test_aask_code_offers_metagpts_execute_function_and_returns_its_arguments(kernel):
    llm = context().llm()
    arguments = asyncio.run(llm.aask_code([{"role": "user", "content": "Print hello in Python."}]))
    ((syscall, response),) = kernel.llm_calls()
    assert [t.name for t in syscall.request.tools] == ["execute"]
    assert response.tool_calls and arguments == response.tool_calls[0].arguments
    assert set(arguments) == {"language", "code"}


def test_a_provider_defined_after_patching_is_answered_by_the_kernel(kernel):
    class PrivateLLM(BaseLLM):
        """A provider whose API must never be reached while patched."""

        def __init__(self, config):
            self.config = config

        async def _achat_completion(self, messages, timeout=None):
            raise RuntimeError("the provider's API was called")

        async def acompletion(self, messages, timeout=None):
            raise RuntimeError("the provider's API was called")

        async def _achat_completion_stream(self, messages, timeout=None):
            raise RuntimeError("the provider's API was called")

    llm = PrivateLLM(context().config.llm)
    assert asyncio.run(llm.aask("Hi", stream=False)) == kernel.llm_calls()[0][1].content
    assert asyncio.run(llm.aask("Hi again", stream=True)) == kernel.llm_calls()[1][1].content


def test_kernel_errors_reach_metagpt_typed(make_sim_kernel):
    kernel = make_sim_kernel(cores=[fast_sim_core(context_length=64)])
    aios.patch("metagpt", kernel, max_tokens=60)
    try:
        with pytest.raises(ContextLengthError, match="exceeds the context"):
            asyncio.run(context().llm().aask("word " * 40))
    finally:
        aios.unpatch("metagpt")
    assert kernel.running and kernel.agents.get("metagpt").failed == 1


def test_max_tokens_is_capped_by_the_patch_option(make_sim_kernel):
    kernel = make_sim_kernel()
    aios.patch("metagpt", kernel, max_tokens=77)
    try:
        asyncio.run(context().llm().aask("Hi"))  # MetaGPT asks for max_token=4096
    finally:
        aios.unpatch("metagpt")
    assert kernel.llm_calls()[0][0].request.max_tokens == 77


# --------------------------------------------------------------------------- patch / unpatch


def _originals() -> dict[tuple[type, str], object]:
    owners = [BaseLLM, OpenAILLM, Role, Action, Team, Environment, Poet, Critic, WriteHaiku, ReviewHaiku]
    names = [
        "acompletion_text",
        "acompletion",
        "_achat_completion",
        "_achat_completion_stream",
        "aask_code",
        "get_choice_text",
        "run",
        "_act",
        "_think",
        "react",
        "__init_subclass__",
        "__pydantic_init_subclass__",
    ]
    return {(o, n): o.__dict__.get(n) for o in owners for n in names}


def test_unpatch_restores_metagpt_exactly(sim_kernel, stub_openai):
    before = _originals()
    aios.patch("metagpt", sim_kernel)
    assert OpenAILLM.__dict__["acompletion_text"] is not before[(OpenAILLM, "acompletion_text")]
    assert Poet.__dict__["_act"] is not before[(Poet, "_act")]
    aios.unpatch("metagpt")
    assert _originals() == before

    # and MetaGPT talks to its own endpoint again: the stub answers, the kernel sees nothing
    ctx = context(stream=False, base_url=stub_openai.base_url)
    assert asyncio.run(ctx.llm().aask("Hello")) == stub_openai.reply
    reply = asyncio.run(Poet(context=ctx).run("dusk"))
    assert reply.content == stub_openai.reply
    assert len(stub_openai.requests) == 2 and kernel_was_idle(sim_kernel)


def kernel_was_idle(kernel) -> bool:
    return not kernel.served and len(kernel.agents) == 0


def test_patching_twice_is_harmless(kernel):
    routed = OpenAILLM.__dict__["acompletion_text"]
    aios.patch("metagpt", kernel)
    assert OpenAILLM.__dict__["acompletion_text"] is routed
    assert not hasattr(Role.__dict__["run"].__wrapped__, "__aios_scoped__")  # wrapped once
    asyncio.run(context().llm().aask("Once"))
    assert len(kernel.llm_calls()) == 1


def test_unsupported_versions_fail_at_patch_time_naming_the_range(sim_kernel, monkeypatch):
    patching = aios_core.patching
    monkeypatch.setattr(patching, "version", lambda dist: "0.7.6" if dist == "metagpt" else "0")
    with pytest.raises(AIOSError, match=r"supports metagpt >=0\.8,<0\.9, but 0\.7\.6 is installed"):
        aios.patch("metagpt", sim_kernel)
    assert not patching._adapter("metagpt").patched


def test_unknown_options_are_refused(sim_kernel):
    with pytest.raises(ConfigError, match="unknown option"):
        aios.patch("metagpt", sim_kernel, temprature=0.2)
    assert not aios_core.patching._adapter("metagpt").patched


# --------------------------------------------------------------------------- the embedded model


@pytest.mark.model
def test_a_team_on_the_embedded_gemma_model(make_sim_kernel):
    kernel = make_sim_kernel(cores=[gemma_core()])
    aios.patch("metagpt", kernel, max_tokens=48)
    try:
        ctx = context()
        team = Team(context=ctx)
        team.hire([Poet(context=ctx), Critic(context=ctx)])
        asyncio.run(team.run(n_round=2, idea="the moon"))
    finally:
        aios.unpatch("metagpt")
    calls = kernel.llm_calls()
    assert [s.agent for s, _ in calls] == ["Alice", "Bob"]
    poem = calls[0][1]
    assert poem.core == "llamacpp" and poem.content.strip() and poem.usage.completion_tokens > 0
    assert poem.content in calls[1][0].request.messages[-1].content


# --------------------------------------------------------------------------- the examples


def test_the_metagpt_team_example_runs_unchanged_with_aios_on_the_sim_core(tmp_path):
    """examples/metagpt/team.py as a user runs it (its own config/, default kernel), the kernel's core swapped for the sim."""
    from example_runner import run_example

    proc, audit_log = run_example(tmp_path, "metagpt", "team.py")
    assert "Alice(SimpleCoder): to do SimpleWriteCode" in proc.stderr
    assert "Charlie(SimpleReviewer): to do SimpleWriteReview" in proc.stderr
    llm_decisions = {r.agent for r in audit_log if r.action == "llm" and r.decision == "allow"}
    assert {"Alice", "Bob"} <= llm_decisions <= {"Alice", "Bob", "Charlie"}
