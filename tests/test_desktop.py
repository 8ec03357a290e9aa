"""The desktop app for real: the Qt window under Xvfb, its controls, its local server, its agent.

The window is driven the way a user would: mouse presses on the page's own traffic lights
and title bar, delivered through Qt WebEngine's DevTools port (CDP), which the test enables
with QTWEBENGINE_REMOTE_DEBUGGING. Everything is real: the local server, the coordinator,
the agent and Docker are the real ones.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from compound.desktop.bridge import WindowControls
from compound.desktop.server import LocalAppState, LocalServer
from compound.desktop.settings import AppSettings, SettingsStore
from compound.desktop.sidecar import AgentSidecar
from support import (
    TEST_IMAGE,
    Coordinator,
    OutputLines,
    containers_of,
    product_env,
    run_cli,
    wait_until,
)

X11_DIR = Path("/tmp/.X11-unix")
JSON = {"Content-Type": "application/json"}


# ------------------------------------------------------------------ Xvfb


def _free_display_number() -> int:
    for number in range(90, 400):
        if not (X11_DIR / f"X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number")


def _x_socket_answers(number: int) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(X11_DIR / f"X{number}"))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A private Xvfb server; its ``:N`` is what DISPLAY must be set to."""
    xvfb = shutil.which("Xvfb")
    assert xvfb, "Xvfb is missing: apt-get install xvfb"
    number = _free_display_number()
    proc = subprocess.Popen(
        [xvfb, f":{number}", "-screen", "0", "1920x1080x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _x_socket_answers(number) or proc.poll() is not None, 15, "Xvfb")
        assert proc.poll() is None, "Xvfb exited at start"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def app_env(config_dir: Path, display: str | None, **extra: str) -> dict[str, str]:
    env = product_env(COMPOUND_CONFIG_DIR=str(config_dir), **extra)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    if display is not None:
        env["DISPLAY"] = display
    return env


# ------------------------------------------------------------------ a tiny CDP client


# Records every CSP refusal in the page (eval included, whoever asked for it).
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""

WINDOW_API = "/local/api/window"


class DevToolsPage:
    """The app window's page over Chrome DevTools Protocol (evaluate, mouse clicks)."""

    def __init__(self, port: int) -> None:
        targets = wait_until(lambda: self._pages(port), 30, "the window's DevTools page")
        self._stack = contextlib.ExitStack()
        self._ws: ClientConnection = self._stack.enter_context(
            connect(targets[0]["webSocketDebuggerUrl"], max_size=None)
        )
        self._ids = itertools.count(1)

    @staticmethod
    def _pages(port: int) -> list[dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                targets: list[dict[str, Any]] = json.load(r)
        except OSError:
            return []
        return [
            t for t in targets if t.get("type") == "page" and t.get("url", "").startswith("http")
        ]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message: dict[str, Any] = json.loads(self._ws.recv(timeout=15))
            if message.get("id") == call_id:
                return message

    def evaluate(self, expression: str) -> Any:
        reply = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        result = reply.get("result", {})
        if "exceptionDetails" in result:
            raise AssertionError(f"page error: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def record_csp_violations(self) -> None:
        """Reload the page with a recorder of its CSP violations (``window.__cspViolations``)
        installed before any of its scripts, pywebview's injected ones included."""
        self.call("Page.enable")
        self.call("Page.addScriptToEvaluateOnNewDocument", source=CSP_RECORDER)
        self.call("Page.reload", ignoreCache=True)
        self.wait_for(
            "Array.isArray(window.__cspViolations) && document.readyState === 'complete'",
            30,
            "the reloaded page",
        )

    def wait_for(self, expression: str, timeout_s: float, what: str) -> Any:
        return wait_until(lambda: self.evaluate(expression), timeout_s, what, interval_s=0.1)

    def click(self, test_id: str) -> None:
        """A real left click (press + release) at the centre of the element.

        Chromium drops input that arrives before a fresh page's first frame, so the press is
        repeated until the element reports it (only then is the release sent: one click).
        """
        selector = f'[data-testid="{test_id}"]'
        x, y = self.wait_for(
            f"""(() => {{
                const el = document.querySelector('{selector}');
                if (!el || el.closest('[hidden]') || el.disabled) return null;
                el.dataset.pressed = "";
                el.addEventListener("mousedown", () => {{ el.dataset.pressed = "1"; }},
                                    {{ once: true }});
                const r = el.getBoundingClientRect();
                return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null;
            }})()""",
            15,
            f"{test_id} to be clickable",
        )
        pressed = f"document.querySelector('{selector}')?.dataset.pressed === '1'"

        def press() -> bool:
            self.call(
                "Input.dispatchMouseEvent",
                type="mousePressed",
                x=x,
                y=y,
                button="left",
                clickCount=1,
            )
            return bool(self.wait_until_true(pressed, 0.5))

        wait_until(press, 15, f"{test_id} to receive the mouse press", interval_s=0)
        self.call(
            "Input.dispatchMouseEvent", type="mouseReleased", x=x, y=y, button="left", clickCount=1
        )

    def drag(self, start: tuple[float, float], dx: float, dy: float, steps: int = 5) -> None:
        """Press the left button at ``start``, move by (dx, dy) in ``steps``, release."""
        x, y = start
        mouse = "Input.dispatchMouseEvent"
        self.call(mouse, type="mousePressed", x=x, y=y, button="left", clickCount=1)
        for step in range(1, steps + 1):
            at = {"x": x + dx * step / steps, "y": y + dy * step / steps}
            self.call(mouse, type="mouseMoved", button="left", **at)
        self.call(mouse, type="mouseReleased", x=x + dx, y=y + dy, button="left", clickCount=1)

    def wait_until_true(self, expression: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return True
            time.sleep(0.05)
        return False

    def text(self, test_id: str) -> str:
        value = self.evaluate(
            f"document.querySelector('[data-testid=\"{test_id}\"]')?.textContent.trim() ?? ''"
        )
        return str(value)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()


class WindowApp:
    """`compound app` with a real window, its DevTools port open for the test."""

    def __init__(self, config_dir: Path, display: str, coordinator_url: str | None = None):
        self.config_dir = config_dir
        self.debug_port = _free_port()
        args = ["app"] + (["--coordinator", coordinator_url] if coordinator_url else [])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "compound", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=app_env(
                config_dir,
                display,
                QTWEBENGINE_REMOTE_DEBUGGING=f"127.0.0.1:{self.debug_port}",
            ),
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.output = OutputLines(self.proc.stdout)
        self.page = DevToolsPage(self.debug_port)

    def state(self) -> str:
        """The window's state as the page learns it from the local server."""
        expression = f"fetch('{WINDOW_API}').then((r) => r.json()).then((b) => b.state)"
        return str(self.page.evaluate(expression))

    def post(self, action: str) -> int:
        """POST /local/api/window/<action> from the page, as the traffic lights do."""
        return int(
            self.page.evaluate(
                f"fetch('{WINDOW_API}/{action}', {{method: 'POST', body: '{{}}',"
                " headers: {'Content-Type': 'application/json'}}).then((r) => r.status)"
            )
        )

    def wait_state(self, state: str) -> None:
        wait_until(lambda: self.state() == state, 10, f"the window to be {state}", 0.1)

    def wait_exit(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"app still running:\n{self.output.text()}") from exc

    def end(self) -> None:
        self.page.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def window_apps() -> Iterator[list[WindowApp]]:
    apps: list[WindowApp] = []
    yield apps
    for app in apps:
        app.end()


def agent_pids(config_dir: Path) -> list[int]:
    """Agent processes started for this app (their argv names its state dir)."""
    marker = str(config_dir / "agent").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if b"agent" in argv and marker in argv:
                    pids.append(int(entry.name))
    return pids


# ------------------------------------------------------------------ the window


@pytest.mark.timeout(120)
def test_self_check_prints_one_line_and_exits_0(display: str, tmp_path: Path) -> None:
    """`compound app --self-check` renders the landing page, hears it through the local API,
    exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "compound", "app", "--self-check"],
        capture_output=True,
        text=True,
        env=app_env(tmp_path / "config", display),
        timeout=100,
    )
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(lines) == 1, result.stdout
    assert re.fullmatch(
        r"compound app self-check ok: window rendered .+, local API answered in \d+\.\d s", lines[0]
    ), lines[0]


@pytest.mark.timeout(60)
def test_no_display_is_one_clear_line(tmp_path: Path) -> None:
    """Without a display the app says what to do in one line, no traceback, exit 1."""
    result = subprocess.run(
        [sys.executable, "-m", "compound", "app", "--self-check"],
        capture_output=True,
        text=True,
        env=app_env(tmp_path / "config", None),
        timeout=50,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "compound app: No display found: run under xvfb-run or use --browser"
    )


SCREEN_XY = "[window.screenX, window.screenY]"
EVAL_FROM_THE_PAGE = """new Promise((resolve) => setTimeout(() => {
  try { resolve(new Function("return 'ran'")()); } catch (e) { resolve("refused"); }
}))"""
TRAFFIC_SHOWN = (
    "(() => { const t = document.querySelector('.traffic'); return !!t && !t.hidden; })()"
)

# A point of the title bar that is the bar itself (no control under it): where a drag starts.
BAR_POINT = """(() => {
  const bar = document.querySelector('.titlebar');
  const r = bar.getBoundingClientRect();
  const y = r.y + r.height / 2;
  for (let x = r.x + r.width / 2; x < r.right - 4; x += 8) {
    if (document.elementFromPoint(x, y) === bar) return [x, y];
  }
  return null;
})()"""


@pytest.mark.timeout(150)
def test_traffic_lights_drive_the_window(
    display: str, tmp_path: Path, window_apps: list[WindowApp]
) -> None:
    """Maximise toggles, minimise minimises, the bar drags the window, the red light ends the
    app, and all of it under a CSP without 'unsafe-eval' that the page never violates."""
    app = WindowApp(tmp_path / "config", display)
    window_apps.append(app)
    page = app.page
    page.wait_for("document.readyState === 'complete'", 30, "the landing page")
    page.record_csp_violations()
    policy = page.evaluate(
        "fetch(location.href).then((r) => r.headers.get('content-security-policy'))"
    )
    assert "script-src 'self';" in policy and "unsafe-eval" not in policy, policy
    page.wait_for(TRAFFIC_SHOWN, 30, "the traffic lights")
    assert app.state() == "normal"

    app.page.click("window-maximize")
    app.wait_state("maximized")
    app.page.click("window-maximize")
    app.wait_state("normal")
    app.page.click("window-minimize")
    app.wait_state("minimized")
    assert app.post("restore") == 200
    app.wait_state("normal")

    # pywebview's drag region puts the window's corner at the pointer's screen position less
    # where the bar was grabbed; CDP's synthetic events carry screen = client coordinates, so
    # a drag by (dx, dy) lands the window at (dx, dy), wherever it was.
    assert page.evaluate(SCREEN_XY) != [100, 50]
    page.drag(page.wait_for(BAR_POINT, 10, "an empty spot of the title bar"), 100, 50)
    wait_until(lambda: page.evaluate(SCREEN_XY) == [100, 50], 10, "the window to follow the drag")

    assert page.evaluate("window.__cspViolations") == []
    # The page really runs without eval, and the recorder hears such a refusal. (Run from a
    # timer: DevTools lifts the page's eval ban for the expressions it evaluates itself.)
    assert page.evaluate(EVAL_FROM_THE_PAGE) == "refused"
    assert page.evaluate("window.__cspViolations") == ["script-src eval"]

    with contextlib.suppress(Exception):  # the page may vanish before the release is acked
        app.page.click("window-close")
    assert app.wait_exit(30) == 0


# ------------------------------------------------------------------ no orphans


LONG_JOB = textwrap.dedent(
    """
    import time
    print("started", flush=True)
    time.sleep(300)
    """
)


@pytest.mark.timeout(180)
def test_closing_the_window_leaves_no_agent_and_no_container(
    display: str,
    docker_engine: str,
    coordinator: Coordinator,
    tmp_path: Path,
    window_apps: list[WindowApp],
) -> None:
    """Red light while a job runs: the agent process and the job's container are gone."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    settings = {"agent_image": TEST_IMAGE, "agent_runtime": "runc", "agent_name": "window"}
    (config_dir / "app.json").write_text(json.dumps(settings))
    app = WindowApp(config_dir, display, coordinator.url)
    window_apps.append(app)
    page = app.page
    page.wait_for(
        "location.protocol === 'http:' && document.readyState === 'complete'", 30, "landing page"
    )
    page.evaluate("location.assign(location.origin + '/contributor.html')")
    page.wait_for(
        "!!document.querySelector('[data-testid=agent-toggle]:not([disabled])')", 30, "toggle"
    )

    page.click("agent-toggle")
    wait_until(lambda: page.text("connection-status") == "Connected", 30, "Connected", 0.1)
    node_id = (config_dir / "agent" / "node_id").read_text().strip()
    script = tmp_path / "long.py"
    script.write_text(LONG_JOB)
    submitted = run_cli("submit", "--detach", str(script), coordinator=coordinator)
    assert submitted.returncode == 0, submitted.stderr.decode()
    job_id = submitted.stdout.decode().strip()
    wait_until(lambda: page.text("job-id") == job_id, 60, "the job banner", 0.1)
    wait_until(lambda: containers_of(node_id), 30, "the job's container")
    assert agent_pids(config_dir)

    with contextlib.suppress(Exception):
        page.click("window-close")
    assert app.wait_exit(60) == 0
    assert agent_pids(config_dir) == []
    wait_until(lambda: not containers_of(node_id), 15, "the job's container to be removed")
    coordinator.wait_for_contributor(node_id, "offline")


@pytest.mark.timeout(120)
def test_agent_killed_past_its_grace_leaves_no_container(
    docker_engine: str, coordinator: Coordinator, tmp_path: Path
) -> None:
    """An agent that must be SIGKILLed cannot clean up: the app removes its job container."""
    sidecar = AgentSidecar(tmp_path / "agent", tmp_path / "agent.log")
    events: list[dict[str, Any]] = []
    sidecar.subscribe(events.append)
    settings = AppSettings(coordinator.url, agent_image=TEST_IMAGE, agent_runtime="runc")
    sidecar.start(settings)
    try:
        connected = wait_until(
            lambda: next((e for e in events if e["type"] == "connected"), None), 30, "connected"
        )
        node_id = connected["node_id"]
        job_id = coordinator.submit(LONG_JOB)
        # Running, not just a container: the agent keeps a warm one before any job.
        coordinator.wait_for_status(job_id, {"running"}, 60)
        # "running" is the coordinator's word at dispatch; the agent renames the warm
        # container it hands the job a moment later.
        wait_until(lambda: containers_of(node_id), 30, "the job's container")
        status = sidecar.stop(grace_s=0)  # no grace: straight to SIGKILL of the group
        assert not status.running and status.exit_code == -signal.SIGKILL
        assert containers_of(node_id) == []
        assert events[-1]["type"] == "agent_exited"
    finally:
        sidecar.stop()


# ------------------------------------------------------------------ the local server


@pytest.fixture
def local_server(tmp_path: Path) -> Iterator[LocalServer]:
    store = SettingsStore(tmp_path / "config")
    sidecar = AgentSidecar(tmp_path / "config" / "agent", tmp_path / "config" / "agent.log")
    server = LocalServer(LocalAppState(store=store, sidecar=sidecar))
    server.start()
    yield server
    sidecar.stop()
    server.stop()


def _cookie_client(server: LocalServer) -> httpx.Client:
    client = httpx.Client(timeout=10)
    response = client.get(server.launch_url())
    assert response.status_code == 303
    return client


@pytest.mark.timeout(30)
def test_token_buys_a_strict_http_only_cookie(local_server: LocalServer) -> None:
    """The launch token is exchanged once for an HttpOnly SameSite=Strict cookie."""
    response = httpx.get(local_server.launch_url("/contributor.html"), timeout=10)
    assert response.status_code == 303
    assert response.headers["location"] == "/contributor.html"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    client = _cookie_client(local_server)
    assert client.get(local_server.base_url + "/contributor.html").status_code == 200
    assert client.get(local_server.base_url + "/local/api/agent").json()["running"] is False


@pytest.mark.timeout(30)
def test_requests_without_cookie_or_with_foreign_host_are_refused(
    local_server: LocalServer,
) -> None:
    """No cookie is 403 (a wrong token too); a Host other than this server is 400."""
    base = local_server.base_url
    assert httpx.get(base + "/local/api/agent", timeout=10).status_code == 403
    assert httpx.get(base + "/?token=wrong", timeout=10).status_code == 403
    assert httpx.get(base + "/", timeout=10).status_code == 403
    client = _cookie_client(local_server)
    rebound = client.get(base + "/local/api/agent", headers={"Host": "evil.example:80"})
    assert rebound.status_code == 400
    other_port = client.get(base + "/local/api/agent", headers={"Host": "127.0.0.1:1"})
    assert other_port.status_code == 400
    named = client.get(
        base + "/local/api/agent", headers={"Host": f"localhost:{local_server.port}"}
    )
    assert named.status_code == 200


@pytest.mark.timeout(30)
def test_events_websocket_needs_the_cookie(local_server: LocalServer) -> None:
    """The events socket refuses a handshake without the cookie or from a foreign origin."""
    url = f"ws://127.0.0.1:{local_server.port}/local/api/events"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=10).close()
    assert refused.value.response.status_code == 403
    cookie = {"Cookie": f"compound_session={local_server.secret}"}
    with pytest.raises(InvalidStatus):
        connect(url, additional_headers=cookie, origin=Origin("http://evil.example")).close()
    with connect(url, additional_headers=cookie, open_timeout=10) as websocket:
        websocket.ping().wait(5)


@pytest.mark.timeout(30)
def test_window_routes_need_a_window_and_pass_the_guard(
    local_server: LocalServer, tmp_path: Path
) -> None:
    """/local/api/window is 404 without a native window, 409 before it opens, and refuses
    another origin's POST like the rest of /local/api."""
    client = _cookie_client(local_server)
    window_url = local_server.base_url + "/local/api/window"
    assert client.get(window_url).status_code == 404
    assert client.post(window_url + "/close", json={}).status_code == 404
    foreign = client.post(window_url + "/close", json={}, headers={"Origin": "http://127.0.0.1:1"})
    assert foreign.status_code == 403

    store = SettingsStore(tmp_path / "unopened")
    sidecar = AgentSidecar(tmp_path / "unopened" / "agent", tmp_path / "unopened" / "agent.log")
    unopened = LocalServer(LocalAppState(store=store, sidecar=sidecar, window=WindowControls()))
    unopened.start()
    try:
        client = _cookie_client(unopened)
        url = unopened.base_url + "/local/api/window"
        assert client.get(url).json() == {"state": "normal"}
        assert client.post(url + "/minimize", json={}).status_code == 409
        assert client.post(url + "/fly", json={}).status_code == 404
        assert client.post(url + "/rendered", content=b"[1]", headers=JSON).status_code == 400
    finally:
        unopened.stop()


@pytest.mark.timeout(30)
def test_settings_are_validated_and_persisted(local_server: LocalServer, tmp_path: Path) -> None:
    """PUT settings checks the URL and writes app.json, which the next launch reads."""
    client = _cookie_client(local_server)
    url = local_server.base_url + "/local/api/settings"
    bad = client.put(url, json={"coordinator_url": "ftp://nowhere"})
    assert bad.status_code == 422 and "http://host:port" in bad.json()["detail"]
    good = client.put(url, json={"coordinator_url": "http://10.0.0.5:8000/"})
    assert good.status_code == 200 and good.json()["coordinator_url"] == "http://10.0.0.5:8000"
    saved = json.loads((tmp_path / "config" / "app.json").read_text())
    assert saved["coordinator_url"] == "http://10.0.0.5:8000"
    assert SettingsStore(tmp_path / "config").load().coordinator_url == "http://10.0.0.5:8000"
    assert client.get(url).json()["coordinator_url"] == "http://10.0.0.5:8000"


@pytest.mark.timeout(30)
def test_help_explains_each_option() -> None:
    """`compound app --help` explains --coordinator, --browser and --self-check."""
    result = subprocess.run(
        [sys.executable, "-m", "compound", "app", "--help"],
        capture_output=True,
        text=True,
        timeout=25,
        env=product_env(COLUMNS="200"),
    )
    assert result.returncode == 0
    for option in ("--coordinator", "--browser", "--self-check"):
        assert re.search(rf"{option}\s.*\w", result.stdout), option
    assert "--serve-only" not in result.stdout


def test_settings_file_location_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """COMPOUND_CONFIG_DIR wins, then $XDG_CONFIG_HOME/compound, then ~/.config/compound."""
    monkeypatch.delenv("COMPOUND_CONFIG_DIR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert SettingsStore().path == tmp_path / "home" / ".config" / "compound" / "app.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert SettingsStore().path == tmp_path / "xdg" / "compound" / "app.json"
    monkeypatch.setenv("COMPOUND_CONFIG_DIR", str(tmp_path / "override"))
    assert SettingsStore().path == tmp_path / "override" / "app.json"
    assert SettingsStore().load() == AppSettings()  # no file yet: defaults
    (tmp_path / "override").mkdir()
    (tmp_path / "override" / "app.json").write_text("{not json")
    assert SettingsStore().load() == AppSettings()  # unreadable: defaults, no crash


# ------------------------------------------------------------------ the coordinator proxy


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _close_of(url: str, **kwargs: Any) -> tuple[int | None, str | None]:
    """Open a socket, read until it closes; returns the close code and reason received."""
    with connect(url, open_timeout=10, **kwargs) as websocket:
        with contextlib.suppress(Exception):
            while True:
                websocket.recv(timeout=10)
        return websocket.close_code, websocket.close_reason


@pytest.mark.timeout(60)
def test_proxy_reaches_the_coordinator_behind_the_cookie(
    local_server: LocalServer, coordinator: Coordinator, tmp_path: Path
) -> None:
    """/api, /healthz and the follow socket reach the coordinator, only with the cookie."""
    SettingsStore(tmp_path / "config").save(AppSettings(coordinator.url))
    base = local_server.base_url
    assert httpx.get(base + "/healthz", timeout=10).status_code == 403
    ws_base = f"ws://127.0.0.1:{local_server.port}"
    with pytest.raises(InvalidStatus):
        connect(f"{ws_base}/api/v1/jobs/x/follow", open_timeout=10).close()

    client = _cookie_client(local_server)
    assert client.get(base + "/healthz").json()["status"] == "ok"
    created = client.post(base + "/api/v1/jobs", json={"script": "print(1)", "name": "proxied"})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    listed = client.get(base + "/api/v1/jobs", params={"limit": 5}).json()["jobs"]
    assert [job["id"] for job in listed] == [job_id]
    assert client.post(base + "/api/v1/jobs", json={"script": ""}).status_code == 400

    cookie = {"Cookie": f"compound_session={local_server.secret}"}
    with connect(
        f"{ws_base}/api/v1/jobs/{job_id}/follow?after=-1", additional_headers=cookie
    ) as websocket:
        first = json.loads(websocket.recv(timeout=10))
        assert first["type"] == "status" and first["job"]["id"] == job_id
    code, _ = _close_of(f"{ws_base}/api/v1/jobs/no-such-job/follow", additional_headers=cookie)
    assert code == 4404
    code, _ = _close_of(f"{ws_base}/ws/submitter/no-such-job", additional_headers=cookie)
    assert code == 4404


@pytest.mark.timeout(60)
def test_proxy_passes_jobs_files_both_ways(
    local_server: LocalServer, coordinator: Coordinator, tmp_path: Path
) -> None:
    """Input tars go up through the app (hash header kept) and output files come down with
    their attachment, type and hash headers intact."""
    from fake_agent import FakeAgent
    from files_support import return_outputs, sha256, tar_of

    SettingsStore(tmp_path / "config").save(AppSettings(coordinator.url))
    client = _cookie_client(local_server)
    base = local_server.base_url
    data = tar_of({"in.csv": b"1,2\n" * 10_000})
    damaged = client.put(
        base + "/api/v1/inputs", content=data, headers={"X-Compound-SHA256": "0" * 64}
    )
    assert damaged.status_code == 422
    ref = client.put(
        base + "/api/v1/inputs", content=data, headers={"X-Compound-SHA256": sha256(data)}
    )
    assert ref.status_code == 201 and ref.json()["sha256"] == sha256(data)
    job_id = client.post(
        base + "/api/v1/jobs", json={"script": "print(1)", "inputs": ref.json()}
    ).json()["id"]
    agent = FakeAgent(coordinator)
    job = agent.recv_type("job")
    return_outputs(coordinator, job, {"r.txt": b"result"})
    agent.done(job, -1)
    agent.close()
    got = client.get(f"{base}/api/v1/jobs/{job_id}/artifacts/r.txt")
    assert got.content == b"result"
    assert got.headers["content-disposition"].startswith("attachment")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["x-compound-sha256"] == sha256(b"result")


@pytest.mark.timeout(60)
def test_proxy_says_when_the_coordinator_is_unreachable(
    local_server: LocalServer, tmp_path: Path
) -> None:
    """No coordinator: HTTP 502 with one sentence naming it; a socket closes 1014."""
    url = f"http://127.0.0.1:{_closed_port()}"
    SettingsStore(tmp_path / "config").save(AppSettings(url))
    client = _cookie_client(local_server)
    response = client.get(local_server.base_url + "/api/v1/jobs")
    assert response.status_code == 502
    assert response.json()["detail"] == (
        f"Can't reach the coordinator at {url}. Check that it is running, then try again."
    )
    cookie = {"Cookie": f"compound_session={local_server.secret}"}
    code, _ = _close_of(
        f"ws://127.0.0.1:{local_server.port}/api/v1/jobs/x/follow", additional_headers=cookie
    )
    assert code == 1014


@pytest.mark.timeout(30)
def test_tokens_are_validated_stored_0600_and_never_shown(
    local_server: LocalServer, tmp_path: Path
) -> None:
    """PUT /local/api/token keeps a token per coordinator in app.json; the pages never see it."""
    client = _cookie_client(local_server)
    url = local_server.base_url + "/local/api/token"
    bad = client.put(url, json={"token": "two words\r\nX-Evil: 1"})
    assert bad.status_code == 422 and "X-Evil" not in bad.text
    assert client.put(url, json={}).status_code == 400
    token = "cct_" + "A" * 43
    saved = client.put(url, json={"token": token})
    assert saved.status_code == 200 and saved.json()["has_token"] is True
    assert token not in saved.text
    shown = client.get(local_server.base_url + "/local/api/settings")
    assert shown.json()["has_token"] is True and token not in shown.text
    path = tmp_path / "config" / "app.json"
    assert path.stat().st_mode & 0o777 == 0o600
    store = SettingsStore(tmp_path / "config")
    assert store.load().token() == token
    # Another coordinator has no token; going back finds the first one again.
    client.put(
        local_server.base_url + "/local/api/settings", json={"coordinator_url": "http://h:1"}
    )
    assert client.get(local_server.base_url + "/local/api/settings").json()["has_token"] is False
    client.put(
        local_server.base_url + "/local/api/settings",
        json={"coordinator_url": AppSettings().coordinator_url},
    )
    assert store.load().token() == token
    assert client.delete(url).json()["has_token"] is False
    assert store.load().token() is None
