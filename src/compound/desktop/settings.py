"""Desktop app settings persisted as JSON under the user's config directory.

The file is ``$COMPOUND_CONFIG_DIR/app.json`` when that variable is set (tests), else
``$XDG_CONFIG_HOME/compound/app.json``, else ``~/.config/compound/app.json``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

DEFAULT_COORDINATOR_URL = "http://127.0.0.1:8000"
SETTINGS_FILE_NAME = "app.json"
MAX_SETTINGS_BYTES = 64 * 1024
MAX_URL_CHARS = 2048


class SettingsError(ValueError):
    """A settings value the user gave is not acceptable; the message is one sentence."""


@dataclass(frozen=True)
class AppSettings:
    """What the desktop app remembers between launches."""

    coordinator_url: str = DEFAULT_COORDINATOR_URL
    # Optional agent options; None means the agent's own default.
    agent_image: str | None = None
    agent_runtime: str | None = None
    agent_name: str | None = None


def config_dir() -> Path:
    """The directory holding ``app.json`` (not created here)."""
    override = os.environ.get("COMPOUND_CONFIG_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "compound"


def validate_coordinator_url(url: str) -> str:
    """Return the URL without a trailing slash, or raise SettingsError with a reason."""
    url = url.strip()
    if not url or len(url) > MAX_URL_CHARS:
        raise SettingsError("The coordinator URL must be between 1 and 2048 characters.")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError("The coordinator URL must look like http://host:port.")
    return url.rstrip("/")


def _optional_str(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    return value if isinstance(value, str) and value else None


def settings_from_dict(raw: dict[str, Any], base: AppSettings | None = None) -> AppSettings:
    """Merge known keys of ``raw`` over ``base``; unknown keys are ignored."""
    settings = base or AppSettings()
    if "coordinator_url" in raw:
        value = raw["coordinator_url"]
        if not isinstance(value, str):
            raise SettingsError("The coordinator URL must be a string.")
        settings = replace(settings, coordinator_url=validate_coordinator_url(value))
    optional: dict[str, str | None] = {
        key: _optional_str(raw, key)
        for key in ("agent_image", "agent_runtime", "agent_name")
        if key in raw
    }
    return replace(settings, **optional)  # type: ignore[arg-type]


class SettingsStore:
    """Loads and saves :class:`AppSettings` in one JSON file."""

    def __init__(self, directory: Path | None = None) -> None:
        self.path = (directory or config_dir()) / SETTINGS_FILE_NAME

    def load(self) -> AppSettings:
        """The saved settings, or defaults when the file is missing or unreadable."""
        try:
            text = self.path.read_text(encoding="utf-8")[:MAX_SETTINGS_BYTES]
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise SettingsError("settings file is not a JSON object")
            return settings_from_dict(raw)
        except FileNotFoundError:
            return AppSettings()
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable settings file %s: %s", self.path, exc)
            return AppSettings()

    def save(self, settings: AppSettings) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(settings), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)
