"""Open-Interpreter 0.4 through the kernel: real ``interpreter.chat`` turns, code run in the kernel's sandbox.

The model's turns come from the sim core; where a test needs the model to
write particular code, a :class:`ScriptedSimCore` scripts that one answer (as a
tool call of OI's ``execute`` function, or as a markdown code block for OI's
text mode). Code then runs as a tool syscall: access control asks the kernel's
confirmation callback (running code is irreversible), and the sandbox runs it
in a subprocess.
"""

from __future__ import annotations

import importlib
import json
import os

import pytest

# installed by scripts/setup.sh: a missing or broken install fails these tests, it does not skip them
importlib.import_module("interpreter")

from interpreter import OpenInterpreter
from interpreter.core import core as oi_core
from interpreter.core.computer.terminal.terminal import Terminal
from interpreter.core.llm import llm as oi_llm
from scripted_cores import ScriptedSimCore, gemma_core

import aios
import aios_core.patching
from aios_core.config import load_config
from aios_core.errors import AIOSError
from aios_core.managers.audit import read_audit
from aios_core.syscalls import LLMRequest

SANDBOX_PROBE = "import os\nprint(6 * 7, os.getpid(), os.environ['HOME'] == os.getcwd())"


def new_interpreter(*, function_calling: bool = True, **options) -> OpenInterpreter:
    """An interpreter as OI's docs create one, minus telemetry and conversation files (tests stay offline).

    ``function_calling=False`` is OI's mode for models without function calling (code comes as markdown).
    The sim core answers every request that offers tools with a tool call, so tests about prose use it.
    """
    interpreter = OpenInterpreter(**{"auto_run": True, "disable_telemetry": True, "conversation_history": False, **options})
    if not function_calling:
        interpreter.llm.supports_functions = False
    return interpreter


def writes_code(code: str, language: str = "python"):
    """A responder: the model calls OI's ``execute`` with ``code`` once, then answers in (sim) prose."""

    def respond(request: LLMRequest) -> str | None:
        if request.tools and request.messages[-1].role != "tool":
            return json.dumps({"tool_calls": [{"name": "execute", "arguments": {"language": language, "code": code}}]})
        return None

    return respond


def audit(kernel, **filters):
    kernel.managers.audit.flush()
    return read_audit(kernel.config.data_dir / "audit.db", **filters)


def outputs(messages) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "computer" and m["type"] == "console"]


@pytest.fixture
def patch_with():
    """``patch_with(kernel, **options)``: Open-Interpreter patched onto ``kernel`` for the test."""

    def patch(kernel, **options):
        aios.patch("open-interpreter", kernel, **options)
        return kernel

    yield patch
    aios.unpatch("open-interpreter")


# --------------------------------------------------------------------------- code execution


def test_confirmed_code_runs_in_the_sandbox_and_its_output_returns_to_the_interpreter(make_sim_kernel, patch_with):
    asked = []

    def confirm(agent, action, detail):
        asked.append((agent, action, detail["resource"], detail["arguments"]["code"]))
        return True

    kernel = patch_with(make_sim_kernel(cores=[ScriptedSimCore(writes_code(SANDBOX_PROBE))], confirm=confirm))
    interpreter = new_interpreter()
    messages = interpreter.chat("What is 6 * 7? Use Python.", display=False, stream=False)

    agent = "open-interpreter.OpenInterpreter.1"
    code = [m for m in messages if m["type"] == "code"]
    assert code == [{"role": "assistant", "type": "code", "format": "python", "content": SANDBOX_PROBE}]
    answer, pid, isolated = outputs(messages)[0].split()
    # it ran in another process, in the sandbox's own working directory (HOME), and printed 42
    assert answer == "42" and int(pid) != os.getpid() and isolated == "True"
    assert asked == [(agent, "tool", "python", SANDBOX_PROBE)]
    ((tool_call, (result,)),) = kernel.tool_calls()
    assert tool_call.agent == agent and result.ok and result.output["stdout"] == outputs(messages)[0]
    llm_calls = kernel.llm_calls()
    assert [s.agent for s, _ in llm_calls] == [agent, agent]
    # the model's second turn saw the code's output, and its answer is the interpreter's last message
    assert "42" in llm_calls[1][0].request.messages[-1].content
    assert messages[-1] == {"role": "assistant", "type": "message", "content": llm_calls[1][1].content}
    (record,) = audit(kernel, agent=agent, action="tool")
    assert (record.resource, record.decision, record.irreversible) == ("python", "allow", True)


@pytest.mark.parametrize("confirm", [None, lambda agent, action, detail: None, lambda agent, action, detail: False])
def test_code_is_denied_unless_confirmed_and_the_denial_is_audited(make_sim_kernel, patch_with, confirm):
    kernel = patch_with(make_sim_kernel(cores=[ScriptedSimCore(writes_code("open('/tmp/x', 'w')"))], confirm=confirm))
    messages = new_interpreter().chat("Write a file.", display=False, stream=False)
    (output,) = outputs(messages)
    assert output.startswith("AIOS did not allow this code to run:")
    ((_, (result,)),) = kernel.tool_calls()
    assert not result.ok and result.error_type == "access_denied"
    (record,) = audit(kernel, action="tool")
    assert (record.agent, record.resource, record.decision) == ("open-interpreter.OpenInterpreter.1", "python", "deny")
    assert "denied by default" in record.reason or "refused" in record.reason
    assert output.endswith(result.error)  # the model is told why


def test_sandbox_limits_stop_runaway_code(make_sim_kernel, patch_with):
    kernel = patch_with(
        make_sim_kernel(cores=[ScriptedSimCore(writes_code("while True:\n    pass"))], confirm=lambda *a: True), tool_timeout=1
    )
    messages = new_interpreter().chat("Loop forever.", display=False, stream=False)
    assert "timed out after 1 s and was killed" in outputs(messages)[0]
    assert kernel.running


def test_text_mode_code_blocks_run_too(make_sim_kernel, patch_with):
    def respond(request):
        if not request.tools and "Code output" not in (request.messages[-1].content or ""):
            return "I will compute it.\n```python\nprint(2 ** 10)\n```"
        return None

    kernel = patch_with(make_sim_kernel(cores=[ScriptedSimCore(respond)], confirm=lambda *a: True))
    interpreter = new_interpreter(function_calling=False)  # OI parses markdown code blocks
    messages = interpreter.chat("What is 2 ** 10?", display=False, stream=False)
    assert [m["content"].strip() for m in messages if m["type"] == "code"] == ["print(2 ** 10)"]
    assert outputs(messages) == ["1024\n"]
    assert not kernel.llm_calls()[0][0].request.tools


def test_shell_runs_only_where_the_kernel_enables_the_shell_tool(make_sim_kernel, patch_with):
    kernel = patch_with(make_sim_kernel(confirm=lambda *a: True))
    computer = new_interpreter().computer
    assert "'shell' is disabled" in computer.run("shell", "echo hi")[0]["content"]
    assert "only python, shell code runs" in computer.run("javascript", "console.log(1)")[0]["content"]
    assert len(kernel.tool_calls()) == 1  # javascript never reached the kernel


def test_shell_code_runs_in_the_sandbox_when_enabled(make_sim_kernel, patch_with):
    config = load_config(managers={"tools": {"shell_enabled": True}})
    patch_with(make_sim_kernel(config=config, confirm=lambda *a: True))
    computer = new_interpreter().computer
    assert computer.run("bash", "echo $((40 + 2))") == [{"type": "console", "format": "output", "content": "42\n"}]
    streamed = list(computer.run("python", "print('streamed')", stream=True))
    assert streamed == [{"type": "console", "format": "output", "content": "streamed\n"}]


# --------------------------------------------------------------------------- the model endpoint


def test_streaming_chat_yields_the_kernels_deltas(sim_kernel, patch_with):
    patch_with(sim_kernel)
    interpreter = new_interpreter(function_calling=False)
    # read each chunk as it is yielded: OI later grows the first chunk of a message into the whole message
    deltas = [
        c["content"]
        for c in interpreter.chat("Tell me a story.", display=False, stream=True)
        if c.get("type") == "message" and "content" in c
    ]
    ((_, response),) = sim_kernel.llm_calls()
    assert "".join(deltas) == response.content and len(deltas) > 1
    assert interpreter.messages[-1]["content"] == response.content


def test_each_interpreter_is_its_own_agent_and_agent_scope_wins(sim_kernel, patch_with):
    patch_with(sim_kernel, priority=3)
    first, second, named = (new_interpreter(function_calling=False) for _ in range(3))
    named.name = "data analyst"
    first.chat("a", display=False)
    second.chat("b", display=False)
    named.chat("c", display=False)
    with aios.agent_scope("reviewer", program="review-7"):
        first.chat("d", display=False)
    calls = [(s.agent, s.program, s.priority) for s, _ in sim_kernel.llm_calls()]
    assert calls == [
        ("open-interpreter.OpenInterpreter.1", "open-interpreter.OpenInterpreter.1", 3),
        ("open-interpreter.OpenInterpreter.2", "open-interpreter.OpenInterpreter.2", 3),
        ("data_analyst", "data_analyst", 3),
        ("reviewer", "review-7", 3),
    ]
    assert sim_kernel.agents.get("data_analyst").framework == "open-interpreter"


def test_max_tokens_from_the_hosted_model_card_is_capped(sim_kernel, patch_with):
    patch_with(sim_kernel)
    interpreter = new_interpreter(function_calling=False)
    interpreter.llm.model = "gpt-4o"  # OI sizes max_tokens from litellm's card: 16384
    interpreter.chat("hi", display=False)
    assert interpreter.llm.max_tokens > 1024 and sim_kernel.llm_calls()[0][0].request.max_tokens == 1024


def test_a_users_own_completions_function_is_kept(sim_kernel, patch_with):
    patch_with(sim_kernel)
    interpreter = new_interpreter(function_calling=False)

    def my_model(**params):
        yield {"choices": [{"delta": {"content": "from my own model"}}]}

    interpreter.llm.completions = my_model
    messages = interpreter.chat("hi", display=False)
    assert messages[-1]["content"] == "from my own model" and not sim_kernel.served


# --------------------------------------------------------------------------- patch / unpatch


def _originals():
    return {
        "completions": oi_llm.Llm.__dict__.get("completions"),
        "load": oi_llm.Llm.__dict__["load"],
        "run": Terminal.__dict__["run"],
        "telemetry": oi_core.send_telemetry,
    }


def test_unpatch_restores_open_interpreter_exactly(sim_kernel, stub_openai):
    before = _originals()
    # text mode: litellm 1.106's completion() imports its MCP bridge (package `mcp`) whenever tools are passed
    interpreter = new_interpreter(function_calling=False)
    aios.patch("open-interpreter", sim_kernel)
    assert isinstance(oi_llm.Llm.__dict__["completions"], property) and Terminal.__dict__["run"] is not before["run"]
    aios.unpatch("open-interpreter")
    assert _originals() == before and before["completions"] is None
    assert interpreter.llm.completions is oi_llm.fixed_litellm_completions

    # OI talks to its own endpoint again (litellm -> the stub), the kernel sees nothing
    interpreter.llm.model = "openai/gpt-4o-mini"
    interpreter.llm.api_base, interpreter.llm.api_key = stub_openai.base_url, "sk-stub"
    messages = interpreter.chat("Hello", display=False)
    assert messages[-1]["content"] == stub_openai.reply and len(stub_openai.requests) == 1
    assert interpreter.computer.run("shell", "echo native")[0]["content"].strip() == "native"  # OI's own shell
    interpreter.computer.terminate()
    assert not sim_kernel.served


def test_patching_twice_is_harmless(sim_kernel, patch_with):
    patch_with(sim_kernel)
    routed = Terminal.__dict__["run"]
    aios.patch("open-interpreter", sim_kernel)
    assert Terminal.__dict__["run"] is routed
    new_interpreter(function_calling=False).chat("hi", display=False)
    assert len(sim_kernel.llm_calls()) == 1


def test_unsupported_versions_fail_at_patch_time_naming_the_range(sim_kernel, monkeypatch):
    monkeypatch.setattr(aios_core.patching, "version", lambda dist: "0.3.14" if dist == "open-interpreter" else "0")
    with pytest.raises(AIOSError, match=r"supports open-interpreter >=0\.4,<0\.5, but 0\.3\.14 is installed"):
        aios.patch("open-interpreter", sim_kernel)
    assert not aios_core.patching._adapter("open-interpreter").patched


# --------------------------------------------------------------------------- the embedded model


@pytest.mark.model
def test_a_chat_on_the_embedded_gemma_model(make_sim_kernel, patch_with):
    kernel = patch_with(make_sim_kernel(cores=[gemma_core()], confirm=lambda *a: True), max_tokens=64)
    interpreter = new_interpreter()
    messages = interpreter.chat("Say hello in one short sentence.", display=False)
    calls = kernel.llm_calls()
    assert calls and all(r.core == "llamacpp" for _, r in calls)
    first = calls[0][1]
    assert first.usage.completion_tokens > 0
    # whatever Gemma chose (prose, or code that then ran in the sandbox), it reached the interpreter
    if first.tool_calls:
        assert messages[0]["type"] == "code" and kernel.tool_calls()
    else:
        assert messages[0] == {"role": "assistant", "type": "message", "content": first.content}


# --------------------------------------------------------------------------- the examples


def test_the_open_interpreter_example_runs_unchanged_with_aios_on_the_sim_core(tmp_path):
    """examples/open_interpreter/streaming.py as a user runs it (default kernel), the kernel's core swapped for the sim."""
    from example_runner import run_example

    preapproval = '[managers.access.groups.default]\npreapproved = ["tool:python"]\n'
    proc, audit_log = run_example(tmp_path, "open_interpreter", "streaming.py", config=preapproval)
    chunks = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert chunks and "'role': 'assistant'" in chunks[0]
    assert {r.agent for r in audit_log if r.action == "llm"} == {"open-interpreter.OpenInterpreter.1"}
    assert "cost map" not in proc.stderr  # litellm did not try to download anything
