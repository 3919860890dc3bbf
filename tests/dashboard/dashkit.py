"""Helpers of the dashboard tests: the server handle with its workload, sign-in and screenshots.

The browser is Debian's ``chromium`` driven by Playwright (which cannot download a
browser here); scripts/setup.sh installs it. Without it the browser tests are
skipped on a workstation and fail under CI.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from aios_core.server.app import BackgroundServer
from aios_core.server.dashboard_stream import StreamRegistry, registry_of

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "images"
ADMIN = "aios-dashboard-test-admin-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
#: a denied storage write whose path is markup: the audit view must show it as text (see test_audit_view_shows_markup_as_text)
MARKUP_PATH = '<img src=x onerror="window.__pwned=1">'


class Dash:
    """The server, an admin HTTP client, and a workload the tests start and stop."""

    def __init__(self, server: BackgroundServer) -> None:
        self.server = server
        self.url = server.url
        self.kernel = server.kernel
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30.0)
        self._stop: asyncio.Event | None = None
        self._future: Any = None

    def register(self, name: str, **options: Any) -> str:
        response = self.http.post("/v1/agents", json={"name": name, **options})
        assert response.status_code == 201, response.text
        return response.json()["token"]  # type: ignore[no-any-return]

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.kernel.loop).result(timeout)

    def start_workload(self, names: list[str], *, tokens: int = 24) -> None:
        """Each agent chats in a loop until :meth:`stop_workload` (two cores' worth of batch slots: calls wait and get preempted)."""

        async def agent_loop(name: str, stop: asyncio.Event) -> int:
            agent = self.kernel.agent(name)
            n = 0
            while not stop.is_set():
                await agent.achat(f"{name} asks question {n}", max_tokens=tokens * 2, extra={"sim_tokens": tokens})
                n += 1
            return n

        async def main() -> list[int]:
            self._stop = asyncio.Event()
            return list(await asyncio.gather(*(agent_loop(n, self._stop) for n in names)))

        self._future = asyncio.run_coroutine_threadsafe(main(), self.kernel.loop)

    def stop_workload(self) -> list[int]:
        if self._future is None:
            return []
        assert self._stop is not None
        self.kernel.loop.call_soon_threadsafe(self._stop.set)
        done = self._future.result(60)
        self._future = None
        return done  # type: ignore[no-any-return]

    def audit_events(self) -> None:
        """Allowed and denied tool calls, one irreversible, and a denied write to another agent's storage."""
        from aios_core.errors import AIOSError

        async def main() -> None:
            for name, call in (
                ("tooler", {"name": "calculator", "arguments": {"expression": "6*7"}}),
                ("tooler", {"name": "python", "arguments": {"code": "print(1)"}}),  # irreversible, nobody confirms: denied
                ("locked", {"name": "calculator", "arguments": {"expression": "1+1"}}),  # group without tools: denied
            ):
                try:
                    await self.kernel.agent(name).acall_tools([call])
                except AIOSError:
                    pass
            try:
                await self.kernel.agent("locked").astorage("write", path=MARKUP_PATH, data="x", owner="tooler")
            except AIOSError:
                pass

        self.run(main())
        self.kernel.managers.audit.flush()  # from this thread: the writer thread commits, the kernel loop keeps running

    @property
    def streams(self) -> StreamRegistry:
        """The server's live dashboard streams (read them on the kernel loop: :meth:`run`)."""
        return registry_of(self.server.server.api.state)

    def wait_streams(self, count: int, timeout: float = 30.0) -> None:
        """Return once exactly ``count`` dashboard streams are open on the server (an event, not a poll)."""
        self.run(self.streams.wait_until(count), timeout)

    def close(self) -> None:
        self.stop_workload()
        self.server.stop()
        self.http.close()


def sign_in(page: Any, url: str, token: str = ADMIN) -> None:
    page.goto(url + "/ui/")
    page.fill("#token", token)
    page.click("#login-button")


def screenshot(page: Any, view: str) -> None:
    """Save the view for the operator docs (docs/images/dashboard-<view>.png), so they show the current page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"dashboard-{view}.png"
    png = page.screenshot()
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib (bench extra); without it the file is just larger
        target.write_bytes(png)
        return
    # a 96-colour palette keeps the committed images a third of their size, with no visible loss on flat UI colours
    with Image.open(io.BytesIO(png)) as image:
        image.convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """The events of a server-sent event stream as ``(event, parsed JSON data)``; a comment line as ``(":", text)``."""
    event, data = "message", []
    for line in response.iter_lines():
        if line.startswith(":"):
            yield ":", line[1:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


def next_event(events: Iterator[tuple[str, Any]], name: str) -> Any:
    """The data of the next ``name`` event (skipping heartbeats and other views' events)."""
    for event, data in events:
        if event == name:
            return data
    raise AssertionError(f"the stream ended before an {name!r} event")
