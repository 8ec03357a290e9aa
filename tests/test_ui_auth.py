"""Access tokens in the web UI and the desktop app, in a real browser (Debian's Chromium).

A real coordinator with tokens (created with `python -m compound token create` before it
starts), a real agent holding a contributor token, real containers. The pages ask for a token
on a 401 or a 4401 close, check it, remember it per coordinator and retry; a page from
another web origin gets nothing from the coordinator, token or not.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from support import Agent, Coordinator, containers_of, remove_mount_dir, wait_until
from test_contributor_page import serve_app

UI_TIMEOUT_MS = 30_000


# Keeps the log's text as it was when the status badge first read "Complete ✓".
LOG_AT_COMPLETE = """
document.addEventListener("DOMContentLoaded", () => {
  const badge = document.querySelector('[data-testid="status-badge"]');
  new MutationObserver(() => {
    if (badge.textContent === "Complete ✓" && window.logAtComplete === undefined) {
      window.logAtComplete = window.compoundLog.text();
    }
  }).observe(badge, { childList: true, characterData: true, subtree: true });
});
"""


def create_token(data_dir: Path, role: str, name: str) -> str:
    """`compound token create`, as an operator runs it; returns the printed token."""
    argv = ["token", "create", "--data-dir", str(data_dir), "--role", role, "--name", name]
    result = subprocess.run(
        [sys.executable, "-m", "compound", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1].strip()
    assert token.startswith("cct_"), result.stdout
    return token


@dataclass
class Secured:
    """A coordinator with auth on and one token per role."""

    coordinator: Coordinator
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.coordinator.url

    def api(self, method: str, path: str, role: str = "admin", **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    data_dir = tmp_path / "secured"
    tokens = {
        role: create_token(data_dir, role, f"{role}-1")
        for role in ("submitter", "contributor", "admin")
    }
    coordinator = Coordinator(data_dir=data_dir).start()
    yield Secured(coordinator, tokens)
    coordinator.stop()


@pytest.fixture
def token_agent(docker_engine: str, secured: Secured, tmp_path: Path) -> Iterator[Agent]:
    """An agent that joins the secured coordinator with its contributor token."""
    agent = Agent(
        secured.url, tmp_path / "agent", name="token-agent", token=secured.tokens["contributor"]
    )
    agent.start()
    yield agent
    agent.stop()
    remove_mount_dir(agent)
    if (agent.state_dir / "node_id").exists() and (leftovers := containers_of(agent.node_id)):
        subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)


def stored_tokens(page: Page) -> dict[str, str]:
    found: dict[str, str] = page.evaluate(
        """Object.fromEntries(Object.keys(localStorage)
             .filter((key) => key.startsWith("compound.token:"))
             .map((key) => [key, localStorage.getItem(key)]))"""
    )
    return found


SCRIPT = textwrap.dedent(
    """
    import time
    for i in range(3):
        print(f"secured step {i}", flush=True)
        time.sleep(0.5)
    """
).lstrip()


# ------------------------------------------------------------------ the web UI


@pytest.mark.timeout(180)
def test_submitter_asks_for_a_token_and_runs_the_job(
    secured: Secured, token_agent: Agent, page: Page, tmp_path: Path
) -> None:
    """A 401 opens the prompt; a wrong token is refused; the right one submits and follows."""
    script = tmp_path / "secured.py"
    script.write_text(SCRIPT)
    page.goto(secured.url + "/submitter.html")
    expect(page.get_by_test_id("token-button")).to_be_hidden()
    page.get_by_test_id("script-input").set_input_files(script)
    page.get_by_test_id("submit-button").click()

    dialog = page.get_by_test_id("token-dialog")
    field = page.get_by_test_id("token-input")
    expect(dialog).to_be_visible()
    expect(field).to_be_focused()
    expect(page.get_by_label("Token", exact=True)).to_be_visible()
    expect(dialog).to_contain_text(secured.url)

    field.fill("cct_not-a-real-token")
    field.press("Enter")
    error = page.get_by_test_id("token-error")
    expect(error).to_have_text("The coordinator didn't accept that token. Check it and try again.")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()
    assert stored_tokens(page) == {}

    field.fill(secured.tokens["submitter"])
    field.press("Enter")
    expect(dialog).to_be_hidden()
    page.wait_for_url(re.compile(r"[?&]job="))
    job_id = page.url.rsplit("job=", 1)[1]
    badge = page.get_by_test_id("status-badge")
    expect(badge).to_have_text("Complete ✓", timeout=90_000)
    expected = "secured step 0\nsecured step 1\nsecured step 2\n"
    assert page.evaluate("window.compoundLog.text()") == expected
    assert stored_tokens(page) == {f"compound.token:{secured.url}": secured.tokens["submitter"]}
    assert secured.api("GET", f"/api/v1/jobs/{job_id}").json()["status"] == "succeeded"
    expect(page.get_by_test_id("token-button")).to_be_visible()

    # A reload follows the job again with the remembered token: no prompt. The first message
    # of that follow is the job's ended status, its records come after it, then the end:
    # "Complete" shows only with the end, above the whole log.
    page.add_init_script(LOG_AT_COMPLETE)
    page.reload()
    expect(badge).to_have_text("Complete ✓")
    assert page.evaluate("window.logAtComplete") == expected
    expect(dialog).to_have_count(0)

    # Forget it from the title bar: the follow socket is now closed 4401 and asks again.
    page.get_by_test_id("token-button").click()
    expect(dialog).to_be_visible()
    page.get_by_test_id("token-forget").click()
    expect(dialog).to_have_count(0)
    assert stored_tokens(page) == {}
    page.reload()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(page.get_by_test_id("error-message")).to_contain_text("needs an access token")


@pytest.mark.timeout(120)
def test_lists_show_a_sentence_for_403_and_the_reduced_contributor_view(
    secured: Secured, token_agent: Agent, page: Page
) -> None:
    """A contributor token cannot list jobs (one sentence); contributors show no ids to it."""
    wait_until(
        lambda: any(
            c["name"] == "token-agent" and c["ram_free_bytes"]
            for c in secured.api("GET", "/api/v1/contributors").json()["contributors"]
        ),
        30,
        "the agent's first heartbeat",
    )
    page.goto(secured.url + "/jobs.html")
    field = page.get_by_test_id("token-input")
    field.fill(secured.tokens["contributor"])
    field.press("Enter")
    alert = page.locator("#error")
    expect(alert).to_be_visible()
    expect(alert).to_have_text(re.compile(r"^Not allowed: .*submitter.*\.$"))

    page.goto(secured.url + "/contributors.html")
    row = page.locator("[data-testid=contributors-table] tr[data-contributor-name='token-agent']")
    expect(row).to_contain_text("token-agent")
    expect(row).to_contain_text("runc")
    expect(row.get_by_test_id("contributor-state")).to_have_text("Idle")
    expect(row.get_by_test_id("contributor-cpu")).to_contain_text("%")
    expect(row.get_by_test_id("contributor-ram")).to_contain_text(re.compile(r"\d [KMGT]?B"))
    expect(row.get_by_test_id("contributor-job")).to_have_text("Idle")
    assert row.get_attribute("data-contributor-id") is None
    assert token_agent.node_id not in row.inner_text()


FOREIGN_PAGE = """<!doctype html><meta charset="utf-8"><title>elsewhere</title>
<script>
const coordinator = "{coordinator}", token = "{token}";
window.results = {{}};
(async () => {{
  const auth = {{ Authorization: "Bearer " + token }};
  try {{
    const r = await fetch(coordinator + "/api/v1/jobs", {{ headers: auth }});
    window.results.fetch = "status " + r.status;
  }} catch (err) {{ window.results.fetch = "refused"; }}
  try {{
    await fetch(coordinator + "/submit-job", {{ method: "POST", mode: "no-cors",
      headers: {{ "Content-Type": "text/plain" }},
      body: JSON.stringify({{ script: "print(1)" }}) }});
    window.results.post = "sent";
  }} catch (err) {{ window.results.post = "refused"; }}
  const ws = new WebSocket(coordinator.replace("http", "ws") + "/api/v1/jobs/x/follow",
                           ["compound", "compound.bearer." + token]);
  ws.onopen = () => {{ window.results.ws = "open"; }};
  ws.onclose = (event) => {{ window.results.ws = window.results.ws || "closed " + event.code; }};
}})();
</script>"""


@pytest.fixture
def foreign_origin(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static web server on another loopback port: another web origin."""
    root = tmp_path / "foreign"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(60)
def test_a_page_from_another_origin_gets_nothing(
    secured: Secured, foreign_origin: tuple[str, Path], page: Page
) -> None:
    """Another origin's fetch and WebSocket are refused, even carrying a valid token."""
    origin, root = foreign_origin
    (root / "index.html").write_text(
        FOREIGN_PAGE.format(coordinator=secured.url, token=secured.tokens["admin"])
    )
    page.goto(origin + "/index.html")
    page.wait_for_function("window.results && Object.keys(window.results).length === 3")
    results = page.evaluate("window.results")
    assert results["fetch"] == "refused", results
    assert results["ws"] == "closed 1006", results
    assert secured.api("GET", "/api/v1/jobs").json()["jobs"] == []


# ------------------------------------------------------------------ the desktop app


@pytest.mark.timeout(120)
def test_desktop_saves_the_token_through_the_page_and_lists_jobs(
    secured: Secured, page: Page, tmp_path: Path
) -> None:
    """In the app the prompt's token goes to app.json (0600), never to the page's storage."""
    job_id = secured.api("POST", "/api/v1/jobs", "submitter", json={"script": "print(1)"}).json()[
        "id"
    ]
    app = serve_app(secured.coordinator, tmp_path / "config")
    try:
        page.goto(app.url)
        page.goto(app.base_url + "/jobs.html")
        field = page.get_by_test_id("token-input")
        expect(field).to_be_focused()
        field.fill(secured.tokens["submitter"])
        page.get_by_test_id("token-save").click()
        expect(page.get_by_test_id("token-dialog")).to_have_count(0)
        row = page.locator(f"[data-testid=jobs-table] tr[data-job-id='{job_id}']")
        expect(row).to_be_visible()

        settings_path = app.config_dir / "app.json"
        saved = json.loads(settings_path.read_text())
        assert saved["tokens"] == {secured.url: secured.tokens["submitter"]}
        assert settings_path.stat().st_mode & 0o777 == 0o600
        assert stored_tokens(page) == {}
        shown = page.request.get(app.base_url + "/local/api/settings").json()
        assert shown["has_token"] is True and "tokens" not in shown
        assert secured.tokens["submitter"] not in json.dumps(shown)

        # A fresh page needs no prompt: the app adds the stored token itself.
        page.reload()
        expect(row).to_be_visible()
        expect(page.get_by_test_id("token-dialog")).to_have_count(0)
    finally:
        assert app.stop() == 0
    assert secured.tokens["submitter"] not in app.output.text()


@pytest.mark.timeout(60)
def test_the_desktop_proxy_passes_refusals_through(secured: Secured, tmp_path: Path) -> None:
    """Through the app: 401 with its challenge, and sockets closed 4401, 4403 and 4404."""
    from websockets.sync.client import connect

    from compound.desktop.server import LocalAppState, LocalServer
    from compound.desktop.settings import AppSettings, SettingsStore
    from compound.desktop.sidecar import AgentSidecar

    other = create_token(secured.coordinator.data_dir, "submitter", "someone-else")
    store = SettingsStore(tmp_path / "config")
    store.save(AppSettings(secured.url))
    server = LocalServer(LocalAppState(store, AgentSidecar(tmp_path / "s", tmp_path / "s.log")))
    server.start()
    try:
        mine = secured.api("POST", "/api/v1/jobs", "submitter", json={"script": "print(1)"})
        job_id = mine.json()["id"]
        client = httpx.Client(timeout=10)
        client.get(server.launch_url())
        refused = client.get(server.base_url + "/api/v1/jobs")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"

        cookie = {"Cookie": f"compound_session={server.secret}"}
        follow = f"ws://127.0.0.1:{server.port}/api/v1/jobs/{job_id}/follow"

        def close_code(token: str | None) -> int | None:
            store.save(store.load().with_token(token))
            with connect(follow, additional_headers=cookie, open_timeout=10) as websocket:
                try:
                    while True:
                        websocket.recv(timeout=10)
                        if token == secured.tokens["submitter"]:
                            return 0  # the owner is followed: a message arrived
                except Exception:
                    return websocket.close_code

        assert close_code(None) == 4401
        assert close_code(secured.tokens["contributor"]) == 4403
        wait_until(lambda: close_code(other) == 4404, 10, "the new token to be known")
        assert close_code(secured.tokens["submitter"]) == 0
        listed = client.get(server.base_url + "/api/v1/jobs").json()["jobs"]
        assert [job["id"] for job in listed] == [job_id]
    finally:
        server.stop()
