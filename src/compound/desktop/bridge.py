"""The JS <-> Python bridge of the native window (``window.pywebview.api`` in the pages).

The title bar's traffic lights call ``close``, ``minimize`` and ``toggle_maximize``; the
window state is tracked from the window's own events so tests (and the page) can ask for it.
Every public method here is callable from JavaScript, so nothing else is public.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class NativeWindow(Protocol):
    """The part of ``webview.Window`` the bridge drives."""

    events: Any

    def destroy(self) -> None: ...
    def minimize(self) -> None: ...
    def maximize(self) -> None: ...
    def restore(self) -> None: ...


class Bridge:
    """Window controls for the page; methods run on pywebview's worker threads."""

    def __init__(self) -> None:
        self._window: NativeWindow | None = None
        self._state = "normal"
        self._lock = threading.Lock()
        self._answered = threading.Event()
        self._report: dict[str, Any] = {}

    def _attach(self, window: NativeWindow) -> None:
        self._window = window
        window.events.minimized += lambda: self._set_state("minimized")
        window.events.maximized += lambda: self._set_state("maximized")
        window.events.restored += lambda: self._set_state("normal")

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._state = state

    def _require_window(self) -> NativeWindow:
        if self._window is None:
            raise RuntimeError("the bridge is not attached to a window")
        return self._window

    # -- called from JavaScript ----------------------------------------------------------
    def close(self) -> None:
        """Close the window; the app then stops its agent and exits."""
        self._require_window().destroy()

    def minimize(self) -> None:
        self._require_window().minimize()

    def toggle_maximize(self) -> str:
        """Maximise, or restore when maximised; returns the state asked for."""
        window = self._require_window()
        if self.is_maximized():
            window.restore()
            return "normal"
        window.maximize()
        return "maximized"

    def restore(self) -> None:
        self._require_window().restore()

    def is_maximized(self) -> bool:
        return self.window_state() == "maximized"

    def window_state(self) -> str:
        """``normal``, ``minimized`` or ``maximized``, as last reported by the window."""
        with self._lock:
            return self._state

    def is_desktop(self) -> bool:
        """True: lets a page tell the native window from a browser tab."""
        return True

    def report_rendered(self, report: dict[str, Any]) -> str:
        """The self-check's page-side proof that the DOM rendered; answers ``"ok"``."""
        self._report = dict(report) if isinstance(report, dict) else {"value": report}
        self._answered.set()
        return "ok"

    # -- for the self-check (not exposed: underscore) ------------------------------------
    def _wait_answer(self, timeout_s: float) -> dict[str, Any] | None:
        return self._report if self._answered.wait(timeout_s) else None
