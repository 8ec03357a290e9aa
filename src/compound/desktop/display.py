"""The GUI environment: is there a display to draw on, and Qt WebEngine's flags."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

X11_SOCKET_DIR = Path("/tmp/.X11-unix")
X11_TCP_BASE_PORT = 6000
NO_DISPLAY = "No display found: run under xvfb-run or use --browser"


def prepare_qt_environment() -> None:
    """Flags Qt WebEngine needs in containers and under Xvfb, unless the user set them."""
    # Chromium's sandbox refuses to run as root and there is no GPU under Xvfb.
    os.environ.setdefault("QTWEBENGINE_CHROMIUM_FLAGS", "--no-sandbox --disable-gpu --log-level=3")
    if os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "xcb")
    # Qt and Chromium print harmless GPU/Vulkan probing noise under Xvfb; the app's own
    # errors are one line on stderr. Set QT_LOGGING_RULES to see Qt's messages again.
    os.environ.setdefault("QT_LOGGING_RULES", "*=false")


def display_problem() -> str | None:
    """One sentence when no display can be reached (Qt would abort), else None."""
    if os.environ.get("WAYLAND_DISPLAY"):
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        return NO_DISPLAY
    return None if _x11_reachable(display) else f"Cannot open display {display}: {NO_DISPLAY}"


def _x11_reachable(display: str) -> bool:
    host, _, rest = display.rpartition(":")
    number = rest.split(".", 1)[0]
    if not number.isdigit():
        return False
    if host in ("", "unix"):
        return _connects_unix(X11_SOCKET_DIR / f"X{number}")
    return _connects_tcp(host, X11_TCP_BASE_PORT + int(number))


def _connects_unix(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        with contextlib.suppress(OSError):
            sock.connect(str(path))
            return True
    return False


def _connects_tcp(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False
