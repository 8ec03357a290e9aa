"""The native window: pywebview on Qt, frameless, with the title bar drawn by the page.

``run_window`` blocks in the GUI loop until the window closes. The page drives the window
through the local server (``bridge.WindowControls``, ``/local/api/window``): the window gets
no pywebview ``js_api``, so pywebview defines no bridge functions in the page and never
answers one with ``eval``; the pages' CSP refuses eval. ``SelfCheck`` drives the same
window once: wait for the landing page to render, make the page report back through the
local server (the path the traffic lights take), then close, and say in one line how it went.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

from compound.desktop.bridge import WindowControls

log = logging.getLogger(__name__)

WINDOW_TITLE = "Compound"
WINDOW_SIZE = (1280, 800)
MIN_SIZE = (900, 600)
BACKGROUND = "#0B0B0F"

# Runs in the page (pywebview's run_js: Qt's runJavaScript, no eval): waits for the DOM and
# the fonts, then reports to the local server like the traffic lights do (page -> Python).
SELF_CHECK_JS = """
(async () => {
  const until = Date.now() + %(timeout_ms)d;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  while (document.readyState !== "complete") {
    if (Date.now() > until) { return; }
    await sleep(50);
  }
  try { await document.fonts.ready; } catch (e) { /* fonts are a nicety */ }
  const body = document.body;
  const text = body ? body.innerText.trim() : "";
  const report = {
    // A 404 page has neither a title nor elements: only a real page passes.
    rendered: !!body && body.querySelectorAll("*").length > 0 && text.length > 0
              && document.title.length > 0,
    title: document.title,
    path: location.pathname,
    elements: body ? body.querySelectorAll("*").length : 0,
    stylesheets: document.styleSheets.length,
  };
  await fetch("/local/api/window/rendered", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(report),
    cache: "no-store",
  });
})();
"""


@dataclass
class SelfCheckResult:
    ok: bool
    message: str


class SelfCheck:
    """Runs on pywebview's worker thread (``webview.start(func=...)``)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.result = SelfCheckResult(False, f"the window did not render within {timeout_s:g} s")

    def run(self, window: Any, controls: WindowControls) -> None:
        started = time.monotonic()
        try:
            self.result = self._check(window, controls, started)
        except Exception as exc:  # reported as one line by the CLI, never as a traceback
            log.debug("self-check failed", exc_info=True)
            self.result = SelfCheckResult(False, f"{type(exc).__name__}: {exc}")
        finally:
            window.destroy()

    def _check(self, window: Any, controls: WindowControls, started: float) -> SelfCheckResult:
        if not window.events.loaded.wait(self.timeout_s):
            return SelfCheckResult(False, f"the page did not load within {self.timeout_s:g} s")
        remaining_s = max(0.5, self.timeout_s - (time.monotonic() - started))
        window.run_js(SELF_CHECK_JS % {"timeout_ms": int(remaining_s * 1000)})
        report = controls.wait_rendered(remaining_s)
        if report is None:
            return SelfCheckResult(False, "the page never reported back to the local server")
        if not report.get("rendered"):
            return SelfCheckResult(False, f"the page rendered nothing at {report.get('path')}")
        elapsed_s = time.monotonic() - started
        return SelfCheckResult(
            True,
            f"window rendered {report.get('title') or 'the landing page'!r} "
            f"({report.get('elements')} elements), local API answered in {elapsed_s:.1f} s",
        )


def run_window(url: str, controls: WindowControls, self_check: SelfCheck | None = None) -> None:
    """Open the frameless window at ``url``, driven by ``controls``; block until it closes."""
    import webview  # imported late: Qt is heavy and --browser needs none of it

    window = webview.create_window(
        WINDOW_TITLE,
        url=url,
        # No js_api: the page drives the window through the local server (see above).
        width=WINDOW_SIZE[0],
        height=WINDOW_SIZE[1],
        min_size=MIN_SIZE,
        frameless=True,
        easy_drag=False,
        # Else pywebview injects an inline <style> (user-select: none) the CSP refuses; the
        # pages' own stylesheet says what is selectable.
        text_select=True,
        background_color=BACKGROUND,
    )
    if window is None:
        raise RuntimeError("pywebview did not create a window")
    controls.attach(window)
    _close_on_sigterm(window)
    if self_check is not None:
        webview.start(self_check.run, (window, controls), gui="qt", private_mode=True)
    else:
        webview.start(gui="qt", private_mode=True)


def _close_on_sigterm(window: Any) -> None:
    """SIGTERM closes the window like the red light does (pywebview handles SIGINT)."""

    def handle(_signum: int, _frame: object) -> None:
        threading.Thread(target=window.destroy, name="sigterm-close", daemon=True).start()

    signal.signal(signal.SIGTERM, handle)
