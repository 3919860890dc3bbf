"""A kernel server on sim cores under the rr scheduler, a steady workload, and a headless Chromium.

The browser is Debian's ``chromium`` driven by Playwright (which cannot download a
browser here); scripts/setup.sh installs it. Without it the browser tests are
skipped on a workstation and fail under CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashkit import ADMIN, CHROMIUM, CHROMIUM_ARGS, Dash

from aios_core.config import load_config
from aios_core.cores.sim import SimCore
from aios_core.kernel import Kernel
from aios_core.server.app import BackgroundServer
from aios_core.server.settings import ServerSettings


@pytest.fixture(scope="module")
def dash(tmp_path_factory) -> Iterator[Dash]:
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    config = load_config(
        data_dir=data_dir,
        entry_point_plugins=False,
        scheduler="rr",
        scheduler_options={"quantum": 4},
        managers={
            "embeddings": {"kind": "hashing", "dim": 64},
            "access": {"groups": {"default": {}, "locked": {"tools": [], "storage_paths": ["{self}/*"]}}},
        },
    )
    # a step costs 20 ms: a 24-token answer takes half a second, long enough to be seen running, queued and preempted
    kernel = Kernel(config, cores=[SimCore(t0=0.02, a=0.0, b=0.0, max_batch=2)])
    server = BackgroundServer(kernel, settings=ServerSettings(admin_token=ADMIN, grace_seconds=2.0, rate_per_agent=0)).start()
    live = Dash(server)
    yield live
    live.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        _missing("chromium is not installed (scripts/setup.sh installs it: apt-get install -y chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def page(browser) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 760}, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()
