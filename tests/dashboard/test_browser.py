"""The dashboard in a real headless browser: sign-in, live agents, the timeline under rr, engine, audit, plugins,
and the live stream the page reads them from (one per view, closed while the tab is hidden, reopened after it ends).

Each test also saves its view to docs/images/dashboard-<view>.png, so the
operator page shows the dashboard as it is.
"""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import urlsplit

import pytest
from dashkit import ADMIN, MARKUP_PATH, screenshot, sign_in

pytest.importorskip("playwright")
from playwright.sync_api import expect

WORKERS = [f"worker-{i}" for i in range(6)]


def test_a_wrong_token_shows_the_login_page_and_no_data(dash, page):
    dash.register("secret-agent-name")
    answers: list[tuple[str, int]] = []
    page.on("response", lambda r: answers.append((r.url, r.status)) if "/v1/" in r.url else None)
    sign_in(page, dash.url, "aios-not-the-admin-token")
    expect(page.locator("#login-error")).to_contain_text("not signed in")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    assert page.locator("#agents-table").count() == 0
    assert "secret-agent-name" not in page.content()
    assert page.evaluate("sessionStorage.length") == 0
    assert answers and all(status == 401 for _, status in answers), answers
    screenshot(page, "login")


def test_an_agent_token_is_not_enough(dash, page):
    token = dash.register("curious-agent")
    sign_in(page, dash.url, token)
    expect(page.locator("#login-error")).to_contain_text("needs the admin token")
    expect(page.locator("#app")).to_be_hidden()


def _requests(page) -> Counter[str]:
    """Paths of the page's requests to the API, counted as they are made."""
    seen: Counter[str] = Counter()
    page.on("request", lambda r: seen.update([urlsplit(r.url).path]) if "/v1/" in r.url else None)
    return seen


def _hide(page, hidden: bool) -> None:
    """What the browser does when the tab goes to the background (or comes back)."""
    page.evaluate("(h) => { Object.defineProperty(document, 'hidden', {value: h, configurable: true}); document.dispatchEvent(new Event('visibilitychange')); }", hidden)


def test_agents_appear_while_a_workload_runs(dash, page):
    requests = _requests(page)
    sign_in(page, dash.url)
    expect(page.locator("#agents-table")).to_be_visible()
    for name in WORKERS:
        dash.register(name, framework="sdk", group="default")
    dash.start_workload(WORKERS)
    try:
        for name in WORKERS:
            expect(page.locator(f'tr[data-agent="{name}"]')).to_be_visible()
        # while it runs, agents are seen doing things, not just registered
        expect(page.locator("#agents-table .state-running").first).to_be_visible()
        expect(page.locator("#agents-table").locator(".state-queued, .state-preempted").first).to_be_visible()
        # agents registered after the page opened, and their states as they change, all came through one stream
        assert requests["/v1/dashboard/stream/agents"] == 1, requests
        assert requests["/v1/dashboard/agents"] == 0 and requests["/v1/dashboard/engine"] == 0, requests
        # the table sorts by a clicked column
        page.click('#agents-table th[data-key="syscalls"]')
        expect(page.locator('#agents-table th[data-key="syscalls"]')).to_have_attribute("aria-sort", "descending")
        screenshot(page, "agents")
        page.click(f'tr[data-agent="{WORKERS[0]}"]')
        expect(page.locator("#agent-name")).to_have_text(WORKERS[0])
        expect(page.locator("#agent-chart svg.gantt rect.seg").first).to_be_visible()
        screenshot(page, "agent")
    finally:
        calls = dash.stop_workload()
    assert all(n >= 1 for n in calls), calls


def test_the_timeline_shows_preemptions_under_rr(dash, page):
    dash.start_workload(WORKERS)
    try:
        sign_in(page, dash.url)
        page.click('#nav a[data-view="timeline"]')
        status = page.locator("#timeline-status")
        expect(status).to_have_attribute("data-preemptions", re.compile(r"^[1-9]\d*$"))
        expect(page.locator("#timeline-chart rect.seg.phase-preempted").first).to_be_attached()
        expect(page.locator("#timeline-chart .preempt-mark").first).to_be_attached()
        expect(page.locator("#timeline-chart rect.seg.phase-generating").first).to_be_attached()
        page.select_option("#timeline-window", "60")
        screenshot(page, "timeline")
        # zoom: the wheel narrows the view and leaves live mode
        before = int(status.get_attribute("data-segments") or 0)
        box = page.locator("#timeline-chart svg").bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
        for _ in range(6):
            page.mouse.wheel(0, -200)
        expect(page.locator("#timeline-live")).not_to_be_checked()
        expect(status).not_to_have_attribute("data-segments", str(before))
    finally:
        dash.stop_workload()


def test_the_engine_view_draws_batch_and_rate(dash, page):
    dash.start_workload(WORKERS[:4])
    try:
        sign_in(page, dash.url)
        page.click('#nav a[data-view="engine"]')
        core = page.locator('.core[data-core="sim"]')
        expect(core.locator('[data-stat="batch"] .stat-value')).to_contain_text("/ 2")
        expect(page.locator(".pool code")).to_have_text("rr")
        # successive readings draw both charts (a point per reading after the first)
        expect(core.locator("svg.line-chart path.series")).to_have_count(2)
        expect(core.locator("svg.line-chart path.series").first).to_have_attribute("d", re.compile(r"^M [^L]+( L [^L]+){2,}$"))
        screenshot(page, "engine")
    finally:
        dash.stop_workload()


def test_an_audit_filter_narrows_the_list(dash, page):
    dash.register("tooler")
    dash.register("locked", group="locked")
    dash.audit_events()
    sign_in(page, dash.url)
    page.click('#nav a[data-view="audit"]')
    summary = page.locator("#audit-summary")
    expect(summary).to_have_attribute("data-count", re.compile(r"^\d+$"))
    everything = int(summary.get_attribute("data-count") or 0)
    agents = set(page.locator("#audit-table tbody tr td:nth-child(2)").all_inner_texts())
    assert {"tooler", "locked"} <= agents, agents
    page.fill("#audit-agent", "locked")
    expect(summary).to_contain_text("agent locked")
    narrowed = int(summary.get_attribute("data-count") or 0)
    assert 0 < narrowed < everything
    assert set(page.locator("#audit-table tbody tr td:nth-child(2)").all_inner_texts()) == {"locked"}
    page.fill("#audit-agent", "")
    page.check("#audit-irreversible")
    expect(summary).to_contain_text("irreversible")
    rows = page.locator("#audit-table tbody tr")
    expect(rows).to_have_count(1)
    assert "python" in rows.first.inner_text()
    page.uncheck("#audit-irreversible")
    page.select_option("#audit-decision", "deny")
    expect(summary).to_contain_text("decision deny")
    assert set(page.locator("#audit-table tbody tr td:nth-child(6)").all_inner_texts()) == {"deny"}
    expect(page.locator("#audit-verify")).to_have_attribute("data-ok", re.compile("true|none"))
    screenshot(page, "audit")


def test_audit_view_shows_markup_as_text(dash, page):
    """An agent-chosen resource string is shown as text; parsed as HTML it would run the agent's script in the admin's page."""
    dash.register("tooler")
    dash.register("locked", group="locked")
    dash.audit_events()
    sign_in(page, dash.url)
    page.goto(dash.url + "/ui/#audit")
    page.fill("#audit-resource", "onerror")
    cell = page.locator("#audit-table td.resource").first
    expect(cell).to_contain_text(MARKUP_PATH)
    assert page.locator("#audit-table img").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_plugins_and_config(dash, page):
    sign_in(page, dash.url)
    page.click('#nav a[data-view="plugins"]')
    expect(page.locator("#plugins-table")).to_contain_text("aios.plugins.schedulers")
    expect(page.locator("#config-json")).to_contain_text('"scheduler": "rr"')
    screenshot(page, "plugins")


def test_a_token_rejected_later_returns_to_the_login_page(dash, page):
    dash.wait_streams(0)
    sign_in(page, dash.url)
    expect(page.locator("#agents-table")).to_be_visible()
    dash.wait_streams(1)
    # the token in this tab stops being valid (a restarted server has a new admin token): the server ends the stream,
    # and the page's reconnection is refused
    page.evaluate("sessionStorage.setItem('aios.dashboard.token', 'aios-revoked')")
    dash.run(_close_streams(dash, "the server restarts"))
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-error")).to_contain_text("refused the token")
    assert page.locator("#agents-table").count() == 0
    assert page.evaluate("sessionStorage.length") == 0
    assert ADMIN not in page.content()


async def _close_streams(dash, reason: str) -> int:
    return dash.streams.close_all(reason)


def test_a_hidden_tab_closes_its_stream(dash, page):
    """Nobody watching costs nothing: a tab in the background holds no stream, so the server reads no view for it."""
    dash.wait_streams(0)
    requests = _requests(page)
    sign_in(page, dash.url)
    expect(page.locator("#agents-table")).to_be_visible()
    dash.wait_streams(1)
    _hide(page, True)
    dash.wait_streams(0)
    dash.register("seen-after-return")
    _hide(page, False)
    dash.wait_streams(1)
    expect(page.locator('tr[data-agent="seen-after-return"]')).to_be_visible()
    assert requests["/v1/dashboard/stream/agents"] == 2 and requests["/v1/dashboard/agents"] == 0, requests


def test_the_page_reconnects_when_the_server_ends_its_stream(dash, page):
    dash.wait_streams(0)
    requests = _requests(page)
    sign_in(page, dash.url)
    page.click('#nav a[data-view="plugins"]')
    expect(page.locator("#plugins-table")).to_be_visible()
    dash.wait_streams(1)
    assert dash.run(_close_streams(dash, "maintenance")) == 1
    expect(page.locator("#banner")).to_contain_text("maintenance; reconnecting")
    # the first event of a new stream hides the banner
    expect(page.locator("#banner")).to_be_hidden()
    assert requests["/v1/dashboard/stream/plugins"] == 2 and requests["/v1/dashboard/plugins"] == 0, requests
