import http.server
import threading

import pytest
from managers_testkit import agent

from aios_core.errors import ToolError
from aios_core.managers.builtin_tools import builtin_tools, calculator
from aios_core.syscalls import ToolCall

ALICE = agent("alice")
BOB = agent("bob")


def call(name, **arguments):
    return ToolCall(name=name, arguments=arguments)


@pytest.fixture
def managers(make_managers, confirm):
    confirm.answer = True  # code execution is irreversible: these tests confirm it
    return make_managers(plugin_tools={t.name: t for t in builtin_tools()}, tools={"python_memory_mb": 256})


@pytest.mark.parametrize(
    "expression, value",
    [("2*(3+4)**2", 98), ("sqrt(16) + pi - pi", 4.0), ("-3 // 2", -2), ("2^10", 1024), ("max(1, 7, 3)", 7), ("factorial(5)", 120)],
)
def test_calculator(expression, value):
    assert calculator(expression) == value


@pytest.mark.parametrize(
    "expression, message",
    [("__import__('os').system('id')", "unsupported"), ("1/0", "division by zero"), ("9**9**9", "exponent too large"), ("1 +", "not an arithmetic"),
     ("factorial(100000)", "too large"), ("comb(1000000, 500000)", "too large"), ("perm(20000, 9000)", "too large"), ("open('x')", "unsupported")],
)
def test_calculator_refuses_everything_else(expression, message):
    with pytest.raises(ToolError, match=message):
        calculator(expression)


async def test_file_tools_go_through_storage_with_the_callers_identity(managers):
    tm = managers.tools
    w, r, ls, s = await tm.run_calls(
        ALICE, [call("file_write", path="notes/a.md", content="rockets to orbit"), call("file_read", path="notes/a.md"),
                call("file_list"), call("file_search", query="orbit")]
    )
    assert w.ok and w.output["version"] == 1
    # parallel calls of one turn: the read may run before the write committed, so only check it is well-formed
    assert r.ok or "no file" in r.error
    [again] = await tm.run_calls(ALICE, [call("file_read", path="notes/a.md")])
    assert again.output["content"] == "rockets to orbit"
    [escape] = await tm.run_calls(ALICE, [call("file_write", path="../bob/x", content="x")])
    assert not escape.ok and escape.error_type == "path_escape"
    [other] = await tm.run_calls(BOB, [call("file_read", path="notes/a.md", owner="alice")])
    assert not other.ok and other.error_type == "access_denied"


async def test_python_runs_in_a_subprocess_with_storage_inputs_and_outputs(managers):
    tm = managers.tools
    await managers.storage.write(ALICE, "data/in.csv", "1\n2\n3\n")
    code = "import os\nnums = [int(x) for x in open('data/in.csv')]\nopen('out/sum.txt', 'w').write(str(sum(nums)))\nprint('pid', os.getpid())"
    code = "import os\nos.makedirs('out', exist_ok=True)\n" + code
    [res] = await tm.run_calls(ALICE, [call("python", code=code, inputs=["data/in.csv"], outputs=["out/sum.txt", "missing.txt"])])
    assert res.ok, res.error
    assert res.output["returncode"] == 0 and res.output["stdout"].startswith("pid ")
    assert int(res.output["stdout"].split()[1]) != __import__("os").getpid()
    assert res.output["outputs"]["out/sum.txt"]["version"] == 1
    assert "did not create" in res.output["outputs"]["missing.txt"]["error"]
    assert (await managers.storage.read(ALICE, "out/sum.txt")).data == "6"


async def test_python_output_symlink_escape_is_refused(managers):
    code = "import os\nos.symlink('/etc/hostname', 'leak.txt')"
    [res] = await managers.tools.run_calls(ALICE, [call("python", code=code, outputs=["leak.txt"])])
    assert res.ok
    assert "outside the sandbox" in res.output["outputs"]["leak.txt"]["error"]
    assert await managers.storage.list(ALICE) == []


async def test_python_limits(managers):
    hang, hog, crash = await managers.tools.run_calls(
        ALICE,
        [call("python", code="while True: pass", timeout=1), call("python", code="x = bytearray(2 * 1024**3)"), call("python", code="raise SystemExit(3)")],
    )
    assert hang.output["timed_out"] and "timed out after 1 s" in hang.output["error"]
    assert hog.output["memory_exceeded"] and "256 MiB" in hog.output["error"]
    assert crash.output["returncode"] == 3


async def test_python_is_denied_without_confirmation(make_managers):
    m = make_managers(plugin_tools={t.name: t for t in builtin_tools()})  # confirm answers None
    [res] = await m.tools.run_calls(ALICE, [call("python", code="print(1)")])
    assert not res.ok and res.error_type == "access_denied"


async def test_shell_is_off_by_default_and_limited_when_on(make_managers, confirm):
    off = make_managers(plugin_tools={t.name: t for t in builtin_tools()})
    [res] = await off.tools.run_calls(ALICE, [call("shell", command="echo hi")])
    assert not res.ok and "disabled" in res.error
    confirm.answer = True
    on = make_managers(plugin_tools={t.name: t for t in builtin_tools()}, tools={"shell_enabled": True})
    ok, slow = await on.tools.run_calls(ALICE, [call("shell", command="echo hi; pwd"), call("shell", command="sleep 30 & sleep 30", timeout=0.5)])
    assert ok.output["stdout"].startswith("hi\n") and "/work" in ok.output["stdout"]
    assert slow.output["timed_out"]


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = ("hello from a local page " * 100).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


async def test_web_fetch_when_enabled(make_managers, confirm):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        off = make_managers(plugin_tools={t.name: t for t in builtin_tools()})
        [res] = await off.tools.run_calls(ALICE, [call("web_fetch", url=f"http://127.0.0.1:{server.server_port}/")])
        assert "disabled" in res.error
        confirm.answer = True
        on = make_managers(plugin_tools={t.name: t for t in builtin_tools()}, tools={"web_enabled": True})
        page, capped, bad = await on.tools.run_calls(
            ALICE,
            [call("web_fetch", url=f"http://127.0.0.1:{server.server_port}/"), call("web_fetch", url=f"http://127.0.0.1:{server.server_port}/", max_bytes=10),
             call("web_fetch", url="file:///etc/passwd")],
        )
        assert page.ok and page.output["status"] == 200 and page.output["text"].startswith("hello from a local page")
        assert capped.output["truncated"] and len(capped.output["text"]) == 10
        assert not bad.ok and "http(s) URLs only" in bad.error
    finally:
        server.shutdown()
