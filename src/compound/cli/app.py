"""`compound app`: the desktop app (native window, or the same UI in a browser)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

# The desktop stack (uvicorn, FastAPI, Qt) is imported when the app starts, not whenever
# any `compound` command starts.
from compound.desktop import DEFAULT_SELF_CHECK_TIMEOUT_S

if TYPE_CHECKING:
    from compound.desktop.launcher import Frontend

# What the window needs: the `desktop` extra (pywebview with its Qt back end).
DESKTOP_MODULES = ("webview", "qtpy", "PyQt6.QtWebEngineWidgets")
NO_DESKTOP_EXTRA = (
    "The desktop window needs the desktop extra: pip install 'compound[desktop]' "
    "(or use --browser to open the app in your browser)"
)


def _desktop_extra_missing() -> bool:
    for name in DESKTOP_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return True
        except (ImportError, ValueError):  # a parent package missing or half-imported
            return True
    return False


def _frontend(browser: bool, self_check: bool, serve_only: bool) -> Frontend:
    from compound.desktop.launcher import Frontend, LaunchError

    if sum((browser, self_check, serve_only)) > 1:
        raise LaunchError("Choose one of --browser and --self-check, not both")
    if (self_check or not (browser or serve_only)) and _desktop_extra_missing():
        raise LaunchError(NO_DESKTOP_EXTRA)
    if self_check:
        return Frontend.SELF_CHECK
    if browser:
        return Frontend.BROWSER
    return Frontend.SERVE_ONLY if serve_only else Frontend.WINDOW


def app_command(
    coordinator: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Coordinator URL, e.g. http://127.0.0.1:8000. Saved for next time in "
            "~/.config/compound/app.json; without it the saved one is used.",
        ),
    ] = None,
    browser: Annotated[
        bool,
        typer.Option(
            "--browser",
            help="Open the UI in your default browser instead of a window, and keep serving "
            "it until Ctrl-C (no display toolkit needed).",
        ),
    ] = False,
    self_check: Annotated[
        bool,
        typer.Option(
            "--self-check",
            help="Open the window, wait until the landing page has rendered and the page has "
            "called back into Python, print one line and exit (0 = ok).",
        ),
    ] = False,
    self_check_timeout: Annotated[
        float,
        typer.Option(help="Seconds the self-check waits before it fails.", hidden=True),
    ] = DEFAULT_SELF_CHECK_TIMEOUT_S,
    serve_only: Annotated[
        bool,
        typer.Option(
            "--serve-only",
            help="Serve the UI without opening anything; print the URL with its token.",
            hidden=True,
        ),
    ] = False,
) -> None:
    """Open the Compound desktop app: submit jobs, or contribute this machine's compute.

    The window talks to a small server on 127.0.0.1 that only this launch can use; closing
    the window stops the contributor agent it started (and its running container).
    """
    from compound.desktop.launcher import Frontend, LaunchError, LaunchOptions, launch

    logging.basicConfig(level=logging.WARNING, format="compound app: %(message)s")
    try:
        options = LaunchOptions(
            frontend=_frontend(browser, self_check, serve_only),
            coordinator_url=coordinator,
            self_check_timeout_s=self_check_timeout,
        )
        code = launch(options)
    except LaunchError as exc:
        print(f"compound app: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    if options.frontend in (Frontend.WINDOW, Frontend.SELF_CHECK):
        _exit_now(code)
    raise typer.Exit(code)


def _exit_now(code: int) -> None:
    """End the process once the window is gone and the agent and server are stopped.

    pywebview can leave a non-daemon worker thread blocked on the closed window (seen when
    stderr is a broken pipe); a normal exit would wait for it for ever.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
