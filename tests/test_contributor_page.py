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

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TEST_IMAGE,
    Coordinator,
    OutputLines,
    product_env,
    run_cli,
    wait_until,
)

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "contributor.png"
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
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


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
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

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
