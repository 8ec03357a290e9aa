"""The native window's controls, as the pages drive them through the local server.

The title bar's traffic lights (close, minimise, maximise/restore) and the self-check's
"the page rendered" report reach Python as requests to the local server's
``/local/api/window`` (``window_routes``), which call this object; it drives pywebview's
Python-side window API. No pywebview JS bridge (``js_api``) is involved: that bridge builds
its functions with ``new Function`` and answers through ``eval``, which the pages' CSP
refuses. Dragging the frameless window stays with pywebview's drag region (its injected
script asks the window to move over Qt's web channel, no eval).

The window state is tracked from the window's own events so tests (and the page) can ask
for it. Methods are called from the server's worker threads; pywebview's window methods
hand the work to the GUI thread.
"""

from __future__ import annotations

import threading
from enum import StrEnum
from typing import Any, Protocol


class WindowState(StrEnum):
    NORMAL = "normal"
    MINIMIZED = "minimized"
    MAXIMIZED = "maximized"


class NativeWindow(Protocol):
    """The part of ``webview.Window`` the controls drive."""

    events: Any

    def destroy(self) -> None: ...
    def minimize(self) -> None: ...
    def maximize(self) -> None: ...
    def restore(self) -> None: ...


class WindowNotOpen(RuntimeError):
    """The window is not open (yet, or any more); ``str(exc)`` is one sentence."""


class WindowControls:
    """The native window's controls and its last known state, for the local server."""

    def __init__(self) -> None:
        self._window: NativeWindow | None = None
        self._state = WindowState.NORMAL
        self._lock = threading.Lock()
        self._rendered = threading.Event()
        self._report: dict[str, Any] = {}

    def attach(self, window: NativeWindow) -> None:
        """Drive ``window`` from now on, following its state changes."""
        window.events.minimized += lambda: self._set_state(WindowState.MINIMIZED)
        window.events.maximized += lambda: self._set_state(WindowState.MAXIMIZED)
        window.events.restored += lambda: self._set_state(WindowState.NORMAL)
        window.events.closed += self._detach
        self._window = window

    def _detach(self) -> None:
        self._window = None

    def _set_state(self, state: WindowState) -> None:
        with self._lock:
            self._state = state

    def _require_window(self) -> NativeWindow:
        window = self._window
        if window is None:
            raise WindowNotOpen("The app's window is not open.")
        return window

    def state(self) -> WindowState:
        """As last reported by the window."""
        with self._lock:
            return self._state

    def close(self) -> None:
        """Close the window; the app then stops its agent and exits."""
        self._require_window().destroy()

    def minimize(self) -> None:
        self._require_window().minimize()

    def restore(self) -> None:
        self._require_window().restore()

    def toggle_maximize(self) -> WindowState:
        """Maximise, or restore when maximised; returns the state asked for."""
        window = self._require_window()
        if self.state() is WindowState.MAXIMIZED:
            window.restore()
            return WindowState.NORMAL
        window.maximize()
        return WindowState.MAXIMIZED

    def report_rendered(self, report: dict[str, Any]) -> None:
        """The self-check's page-side proof that the DOM rendered (first report wins)."""
        if not self._rendered.is_set():
            self._report = dict(report)
            self._rendered.set()

    def wait_rendered(self, timeout_s: float) -> dict[str, Any] | None:
        """The page's report, or None when none came within ``timeout_s``."""
        return self._report if self._rendered.wait(timeout_s) else None
