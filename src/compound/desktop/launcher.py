"""Launching the desktop app: settings, local server, agent sidecar, then a front end.

Front ends: the native window, the window in self-check mode, the default browser, or no
front end at all (``serve-only``, for tests and headless use). Whatever the front end, the
agent is stopped (no orphan process, no orphan container) and the server shut down on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TextIO

from compound.desktop import DEFAULT_SELF_CHECK_TIMEOUT_S
from compound.desktop.bridge import WindowControls
from compound.desktop.display import display_problem, prepare_qt_environment
from compound.desktop.server import WEB_DIR, LocalAppState, LocalServer
from compound.desktop.settings import SettingsStore, config_dir, settings_from_dict
from compound.desktop.sidecar import AgentSidecar

WATCHDOG_GRACE_S = 10.0


class Frontend(StrEnum):
    WINDOW = "window"
    SELF_CHECK = "self-check"
    BROWSER = "browser"
    SERVE_ONLY = "serve-only"


class LaunchError(RuntimeError):
    """The app cannot run; ``str(exc)`` is the one line shown to the user."""


@dataclass(frozen=True)
class LaunchOptions:
    frontend: Frontend
    coordinator_url: str | None = None
    start_path: str = "/"
    self_check_timeout_s: float = DEFAULT_SELF_CHECK_TIMEOUT_S


def _build_state(coordinator_url: str | None, frontend: Frontend) -> LocalAppState:
    store = SettingsStore()
    if coordinator_url is not None:
        # Raises SettingsError (a ValueError with one sentence) for a bad URL.
        store.save(settings_from_dict({"coordinator_url": coordinator_url}, store.load()))
    directory = config_dir()
    sidecar = AgentSidecar(state_dir=directory / "agent", log_path=directory / "agent.log")
    # Only a native window has controls; the pages then show its traffic lights.
    has_window = frontend in (Frontend.WINDOW, Frontend.SELF_CHECK)
    return LocalAppState(
        store=store, sidecar=sidecar, window=WindowControls() if has_window else None
    )


def _check_frontend(frontend: Frontend) -> None:
    if frontend in (Frontend.WINDOW, Frontend.SELF_CHECK):
        problem = display_problem()
        if problem is not None:
            raise LaunchError(problem)
        prepare_qt_environment()
    if not (WEB_DIR / "index.html").is_file():
        raise LaunchError(f"The web UI is missing: {WEB_DIR / 'index.html'} not found")


def launch(options: LaunchOptions, out: TextIO = sys.stdout) -> int:
    """Run the app until its front end ends; returns the process exit code."""
    _check_frontend(options.frontend)
    try:
        state = _build_state(options.coordinator_url, options.frontend)
    except ValueError as exc:
        raise LaunchError(str(exc)) from exc
    server = LocalServer(state)
    server.start()
    try:
        return _run_frontend(options, server, state.window, out)
    finally:
        state.sidecar.stop()
        server.stop()


def _run_frontend(
    options: LaunchOptions, server: LocalServer, controls: WindowControls | None, out: TextIO
) -> int:
    url = server.launch_url(options.start_path)
    if options.frontend is Frontend.WINDOW and controls is not None:
        from compound.desktop.window import run_window

        run_window(url, controls)
        return 0
    if options.frontend is Frontend.SELF_CHECK and controls is not None:
        return _self_check(url, controls, options.self_check_timeout_s, out, server.stop)
    if options.frontend is Frontend.BROWSER:
        if webbrowser.open(url):
            print(
                f"Compound app open in your browser at {server.base_url} (Ctrl-C to stop)", file=out
            )
        else:
            print(f"No browser found: open {url} yourself (Ctrl-C to stop)", file=out)
    else:
        print(f"Compound app serving at {url}", file=out)
    out.flush()
    _wait_for_stop_signal()
    return 0


def _self_check(
    url: str,
    controls: WindowControls,
    timeout_s: float,
    out: TextIO,
    cleanup: Callable[[], None],
) -> int:
    from compound.desktop.window import SelfCheck, run_window

    check = SelfCheck(timeout_s)
    # A wedged GUI thread never returns from the event loop, not even to close the window:
    # the watchdog still answers, in one line, and ends the process.
    watchdog = threading.Timer(
        timeout_s + WATCHDOG_GRACE_S, _give_up, (timeout_s + WATCHDOG_GRACE_S, out, cleanup)
    )
    watchdog.daemon = True
    watchdog.start()
    run_window(url, controls, self_check=check)
    watchdog.cancel()
    verdict = "ok" if check.result.ok else "failed"
    print(f"compound app self-check {verdict}: {check.result.message}", file=out)
    return 0 if check.result.ok else 1


def _give_up(waited_s: float, out: TextIO, cleanup: Callable[[], None]) -> None:
    print(
        f"compound app self-check failed: the window did not respond within {waited_s:g} s",
        file=out,
        flush=True,
    )
    with contextlib.suppress(Exception):
        cleanup()
    os._exit(1)


def _wait_for_stop_signal() -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM."""
    stop = threading.Event()

    def handle(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    while not stop.wait(0.5):
        pass
