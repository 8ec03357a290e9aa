"""`compound app`: the desktop app (native window, or the same UI in a browser)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from compound.desktop.launcher import (
    DEFAULT_SELF_CHECK_TIMEOUT_S,
    Frontend,
    LaunchError,
    LaunchOptions,
    launch,
)


def _frontend(browser: bool, self_check: bool, serve_only: bool) -> Frontend:
    if sum((browser, self_check, serve_only)) > 1:
        raise LaunchError("Choose one of --browser, --self-check and --serve-only")
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
    raise typer.Exit(code)
