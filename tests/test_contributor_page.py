"""The contributor page in a real browser (Debian's Chromium), against the real desktop app
server (`compound app --serve-only`), a real coordinator, a real agent and real containers."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TEST_IMAGE,
    Coordinator,
    OutputLines,
    csp_violations,
    product_env,
    run_cli,
    screenshot_path,
    wait_until,
)

UI_TIMEOUT_MS = 30_000


@dataclass
class ServedApp:
    """`compound app --serve-only` as a child process; ``url`` carries the launch token."""

    proc: subprocess.Popen[bytes]
    output: OutputLines
    url: str
    config_dir: Path

    @property
    def base_url(self) -> str:
        return self.url.split("/?", 1)[0]

    @property
    def node_id(self) -> str:
        return (self.config_dir / "agent" / "node_id").read_text().strip()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(40)


def serve_app(coordinator: Coordinator, config_dir: Path) -> ServedApp:
    config_dir.mkdir(parents=True, exist_ok=True)
    settings = {"agent_image": TEST_IMAGE, "agent_runtime": "runc", "agent_name": "page-test"}
    (config_dir / "app.json").write_text(json.dumps(settings))
    proc = subprocess.Popen(
        [sys.executable, "-m", "compound", "app", "--serve-only", "--coordinator", coordinator.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=product_env(COMPOUND_CONFIG_DIR=str(config_dir)),
        start_new_session=True,
    )
    assert proc.stdout is not None
    output = OutputLines(proc.stdout)
    line = output.wait_for(lambda text: "serving at" in text or text == "", 30, "the app URL")
    match = re.search(r"(http://127\.0\.0\.1:\d+/\?token=\S+)", line)
    assert match, f"compound app did not serve:\n{output.text()}"
    return ServedApp(proc, output, match.group(1), config_dir)


@pytest.fixture
def served_app(docker_engine: str, coordinator: Coordinator, tmp_path: Path) -> Iterator[ServedApp]:
    app = serve_app(coordinator, tmp_path / "config")
    yield app
    app.stop()


@pytest.fixture(scope="module")
def browser(docker_engine: str) -> Iterator[Browser]:
    # Docker's readiness check runs asyncio.run(): it must come before Playwright's loop.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page; a Content-Security-Policy violation in it fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    violations = csp_violations(opened)
    yield opened
    context.close()
    assert not violations, f"Content-Security-Policy violations in the page: {violations}"


def agent_pids(config_dir: Path) -> list[int]:
    """Agents started for this app: their command line names its state dir."""
    marker = str(config_dir / "agent")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"agent" in argv and marker.encode() in argv:
            pids.append(int(entry.name))
    return pids


def expect_connected(page: Page) -> None:
    expect(page.get_by_test_id("connection-status")).to_have_text(
        "Connected", timeout=UI_TIMEOUT_MS
    )


JOB_SCRIPT = textwrap.dedent(
    """
    import time
    for i in range(8):
        print("tick", i, flush=True)
        time.sleep(1)
    """
)


@pytest.mark.timeout(180)
def test_start_job_banner_and_stop(
    served_app: ServedApp, coordinator: Coordinator, page: Page, tmp_path: Path
) -> None:
    """Start shows Connected with live stats, a job shows the gold banner, Stop goes offline."""
    page.goto(served_app.url)
    page.goto(served_app.base_url + "/contributor.html")
    status = page.get_by_test_id("connection-status")
    expect(status).to_have_text("Stopped", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("desktop-note")).to_be_hidden()

    page.get_by_test_id("agent-toggle").click()
    expect(status).to_have_text("Connected", timeout=UI_TIMEOUT_MS)
    # The app's settings ask for runc here; the page says what jobs really run under.
    expect(page.get_by_test_id("runtime")).to_have_text("jobs run under runc (Docker's default)")
    node_id = served_app.node_id
    expect(page.get_by_test_id("node-id")).to_have_text(node_id)
    expect(page.get_by_test_id("cpu-usage")).to_have_text(re.compile(r"^\d+%$"))
    expect(page.get_by_test_id("ram-free")).to_have_text(re.compile(r"^\d+(\.\d)? [KMGT]?B$"))
    coordinator.wait_for_contributor(node_id, "online")
    expect(page.get_by_test_id("job-banner")).to_be_hidden()

    script = tmp_path / "ticks.py"
    script.write_text(JOB_SCRIPT)
    submitted = run_cli("submit", "--detach", str(script), coordinator=coordinator)
    assert submitted.returncode == 0, submitted.stderr.decode()
    job_id = submitted.stdout.decode().strip()

    banner = page.get_by_test_id("job-banner")
    expect(banner).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("job-id")).to_have_text(job_id)
    expect(page.get_by_test_id("job-elapsed")).to_have_text(re.compile(r"^[1-9]\.\d s$"))
    assert coordinator.job(job_id)["contributor_id"] == node_id
    page.screenshot(path=str(screenshot_path("contributor.png", tmp_path)))

    coordinator.wait_for_status(job_id, {"succeeded"}, timeout_s=60)
    expect(banner).to_be_hidden(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("agent-log")).to_contain_text(f"job {job_id} succeeded")

    page.get_by_test_id("agent-toggle").click()
    expect(status).to_have_text(re.compile("^(Stopped|Disconnected)$"), timeout=UI_TIMEOUT_MS)
    coordinator.wait_for_contributor(node_id, "offline")
    expect(page.get_by_test_id("agent-toggle")).to_have_text("Start contributing")
    assert agent_pids(served_app.config_dir) == []


@pytest.mark.timeout(120)
def test_log_panel_replays_after_reload(
    served_app: ServedApp, coordinator: Coordinator, page: Page
) -> None:
    """A page opened while the agent runs learns its state from the replayed events."""
    page.goto(served_app.url)
    page.goto(served_app.base_url + "/contributor.html")
    page.get_by_test_id("agent-toggle").click()
    expect_connected(page)
    page.reload()
    expect_connected(page)
    expect(page.get_by_test_id("node-id")).to_have_text(served_app.node_id)
    expect(page.get_by_test_id("agent-log")).to_contain_text(f"as {served_app.node_id}")
    expect(page.get_by_test_id("agent-toggle")).to_have_text("Stop contributing")


@pytest.mark.timeout(120)
def test_app_exit_stops_its_agent(served_app: ServedApp, page: Page) -> None:
    """Ending the app (SIGTERM) stops the agent it started: no orphan agent process."""
    page.goto(served_app.url)
    page.goto(served_app.base_url + "/contributor.html")
    page.get_by_test_id("agent-toggle").click()
    expect_connected(page)
    assert agent_pids(served_app.config_dir)
    assert served_app.stop() == 0
    wait_until(lambda: not agent_pids(served_app.config_dir), 10, "the agent to exit")


@pytest.mark.timeout(60)
def test_page_served_by_coordinator_says_desktop_app_is_needed(
    coordinator: Coordinator, page: Page
) -> None:
    """Without /local/api the page explains contributing needs `compound app` and stays idle."""
    page.goto(coordinator.url + "/contributor.html")
    note = page.get_by_test_id("desktop-note")
    expect(note).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(note).to_contain_text("compound app")
    expect(page.get_by_test_id("agent-toggle")).to_be_disabled()
    expect(page.get_by_test_id("job-banner")).to_be_hidden()
    expect(page.get_by_test_id("coordinator-setting")).to_be_hidden()
    expect(page.get_by_test_id("coordinator-edit")).to_be_hidden()


def app_settings(page: Page, app: ServedApp) -> dict[str, Any]:
    """GET /local/api/settings with the page's session cookie."""
    response = page.request.get(app.base_url + "/local/api/settings")
    assert response.status == 200, response.text()
    result: dict[str, Any] = response.json()
    return result


def saved_settings(app: ServedApp) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((app.config_dir / "app.json").read_text())
    return result


def page_coordinator_base(page: Page) -> str:
    """The base URL the page's api.js now sends coordinator calls to (same module instance)."""
    base: str = page.evaluate("async () => (await import('./js/api.js')).coordinatorBase()")
    return base


@pytest.mark.timeout(120)
def test_coordinator_setting_changed_on_the_page(
    served_app: ServedApp, coordinator: Coordinator, page: Page
) -> None:
    """Change saves a valid URL to app.json and the page; a bad URL shows a sentence, saves none."""
    page.goto(served_app.url)
    page.goto(served_app.base_url + "/contributor.html")
    shown = page.get_by_test_id("coordinator-setting")
    edit = page.get_by_test_id("coordinator-edit")
    field = page.get_by_test_id("coordinator-input")
    message = page.get_by_test_id("coordinator-message")
    expect(shown).to_have_text(coordinator.url, timeout=UI_TIMEOUT_MS)

    edit.click()
    expect(field).to_be_focused()
    expect(field).to_have_value(coordinator.url)
    new_url = "http://127.0.0.1:9"
    field.fill(f"  {new_url}/ ")
    page.get_by_test_id("coordinator-save").click()
    expect(shown).to_have_text(new_url)
    expect(message).to_have_text("Saved.")
    expect(edit).to_be_focused()
    assert app_settings(page, served_app)["coordinator_url"] == new_url
    assert saved_settings(served_app)["coordinator_url"] == new_url
    assert page_coordinator_base(page) == new_url

    page.reload()
    expect(shown).to_have_text(new_url, timeout=UI_TIMEOUT_MS)

    # By keyboard only: Enter opens the editor and submits it, Escape leaves it.
    before = saved_settings(served_app)
    edit.focus()
    page.keyboard.press("Enter")
    expect(field).to_be_focused()
    for bad in ("ftp://example.com", "127.0.0.1:8000", "http://"):
        field.fill(bad)
        field.press("Enter")
        expect(message).to_have_text(
            re.compile(r"^Enter a URL that starts with http:// or https://")
        )
        expect(field).to_have_attribute("aria-invalid", "true")
        expect(field).to_be_focused()
    assert app_settings(page, served_app)["coordinator_url"] == new_url
    assert saved_settings(served_app) == before
    field.press("Escape")
    expect(field).to_be_hidden()
    expect(shown).to_have_text(new_url)
    expect(edit).to_be_focused()
    expect(message).to_have_text("")


@pytest.mark.timeout(180)
def test_new_coordinator_applies_when_contributing_restarts(
    served_app: ServedApp, coordinator: Coordinator, page: Page, tmp_path: Path
) -> None:
    """A running agent keeps its coordinator (the page says so); the next start uses the new one."""
    second = Coordinator(data_dir=tmp_path / "second-coordinator").start()
    try:
        page.goto(served_app.url)
        page.goto(served_app.base_url + "/contributor.html")
        page.get_by_test_id("agent-toggle").click()
        expect_connected(page)
        node_id = served_app.node_id
        coordinator.wait_for_contributor(node_id, "online")

        page.get_by_test_id("coordinator-edit").click()
        page.get_by_test_id("coordinator-input").fill(second.url)
        page.get_by_test_id("coordinator-save").click()
        expect(page.get_by_test_id("coordinator-message")).to_contain_text(
            "applies the next time you start contributing"
        )
        expect(page.get_by_test_id("coordinator-setting")).to_have_text(second.url)

        toggle = page.get_by_test_id("agent-toggle")
        toggle.click()
        expect(toggle).to_have_text("Start contributing", timeout=UI_TIMEOUT_MS)
        toggle.click()
        expect_connected(page)
        second.wait_for_contributor(node_id, "online")
        expect(page.get_by_test_id("agent-log")).to_contain_text(f"Agent starting for {second.url}")
    finally:
        second.stop()
