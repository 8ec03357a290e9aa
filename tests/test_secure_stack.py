"""The whole product as it runs across machines: auth on, over TLS, real everything.

A coordinator with tokens serving HTTPS; an agent trusting its CA with a contributor
token; Debian's Chromium submitting through the web UI; the desktop app's proxy and its
self-check against the same coordinator.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TEST_IMAGE,
    Agent,
    Coordinator,
    containers_of,
    csp_violations,
    remove_mount_dir,
)
from test_contributor_page import serve_app
from test_desktop import app_env, display  # noqa: F401  (the Xvfb fixture)
from test_tls import Certs, certs  # noqa: F401  (the certificates fixture)
from test_ui_auth import create_token

pytestmark = pytest.mark.timeout(240)
SCRIPT = "print('over tls, with a token')\n"


@pytest.fixture
def stack(
    docker_engine: str,
    certs: Certs,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Coordinator, dict[str, str]]]:
    """HTTPS coordinator with tokens, and a real agent that trusts its CA."""
    monkeypatch.setenv("COMPOUND_CA_FILE", str(certs.ca))
    data_dir = tmp_path / "coordinator"
    tokens = {
        role: create_token(data_dir, role, f"{role}-tls")
        for role in ("submitter", "contributor", "admin")
    }
    coordinator = Coordinator(
        data_dir=data_dir,
        extra_args=["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)],
        ca_file=certs.ca,
    ).start()
    agent = Agent(
        coordinator.url, tmp_path / "agent", name="tls-agent", token=tokens["contributor"]
    )
    agent.start()
    try:
        yield coordinator, tokens
    finally:
        agent.stop()
        remove_mount_dir(agent)
        coordinator.stop()
        if (agent.state_dir / "node_id").exists() and (leftovers := containers_of(agent.node_id)):
            subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def test_web_ui_submits_over_tls_with_a_token(
    stack: tuple[Coordinator, dict[str, str]], browser: Browser, tmp_path: Path
) -> None:
    """Chromium loads the pages over HTTPS, is asked for a token, runs a job to Complete."""
    coordinator, tokens = stack
    assert coordinator.url.startswith("https://")
    script = tmp_path / "tls.py"
    script.write_text(SCRIPT)
    # The test CA is not in Chromium's store; the page's behaviour over https is the point.
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    violations = csp_violations(page)
    try:
        page.goto(coordinator.url + "/submitter.html")
        page.get_by_test_id("script-input").set_input_files(script)
        page.get_by_test_id("submit-button").click()
        field = page.get_by_test_id("token-input")
        expect(field).to_be_focused(timeout=30_000)
        field.fill(tokens["submitter"])
        field.press("Enter")
        expect(page.get_by_test_id("status-badge")).to_have_text("Complete ✓", timeout=90_000)
        # "Complete" shows with the end, which comes after every record (even when the job
        # ended before the page followed it, and the ended status came first).
        assert page.evaluate("window.compoundLog.text()") == "over tls, with a token\n"
        assert violations == [], violations
    finally:
        context.close()


def test_desktop_proxy_and_self_check_over_tls(
    stack: tuple[Coordinator, dict[str, str]],
    certs: Certs,  # noqa: F811
    display: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The desktop app's proxy verifies the coordinator with COMPOUND_CA_FILE and adds the
    stored token; `compound app --self-check` passes against the same coordinator."""
    coordinator, tokens = stack
    headers = {"Authorization": f"Bearer {tokens['submitter']}"}
    job = httpx.post(
        coordinator.url + "/api/v1/jobs",
        json={"script": SCRIPT},
        headers=headers,
        verify=ssl.create_default_context(cafile=str(certs.ca)),
        timeout=30,
    ).json()["id"]
    config_dir = tmp_path / "config"
    app = serve_app(coordinator, config_dir)
    try:
        settings = json.loads((config_dir / "app.json").read_text())
        assert settings["coordinator_url"] == coordinator.url
        put = httpx.put(
            app.base_url + "/local/api/token",
            json={"token": tokens["submitter"]},
            cookies=_launch_cookie(app.url),
            timeout=30,
        )
        assert put.status_code in (200, 204), put.text
        listed = httpx.get(
            app.base_url + "/api/v1/jobs", cookies=_launch_cookie(app.url), timeout=30
        )
        assert listed.status_code == 200, listed.text
        assert [j["id"] for j in listed.json()["jobs"]] == [job]
    finally:
        assert app.stop() == 0

    check_dir = tmp_path / "check"
    check_dir.mkdir()
    (check_dir / "app.json").write_text(json.dumps({"agent_image": TEST_IMAGE}))
    result = subprocess.run(
        [sys.executable, "-m", "compound", "app", "--self-check", "--coordinator", coordinator.url],
        capture_output=True,
        text=True,
        env=app_env(check_dir, display, COMPOUND_CA_FILE=str(certs.ca)),
        timeout=100,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.match(r"compound app self-check ok", result.stdout.strip())


def _launch_cookie(url: str) -> dict[str, str]:
    """The per-launch secret the app hands its window, as the cookie it sets from it."""
    response = httpx.get(url, follow_redirects=False, timeout=30)
    return dict(response.cookies)
