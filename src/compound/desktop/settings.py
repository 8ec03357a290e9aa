"""Desktop app settings persisted as JSON under the user's config directory.

The file is ``$COMPOUND_CONFIG_DIR/app.json`` when that variable is set (tests), else
``$XDG_CONFIG_HOME/compound/app.json``, else ``~/.config/compound/app.json``. It holds the
access token of each coordinator the user gave one for, so it is written 0600 and the
tokens never leave the local server (``public_view`` is what the pages see).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from compound.agent.settings import MAX_WARM
from compound.coordinators import CoordinatorListError, join_coordinators, parse_coordinators

log = logging.getLogger(__name__)

DEFAULT_COORDINATOR_URL = "http://127.0.0.1:8000"
SETTINGS_FILE_NAME = "app.json"
MAX_SETTINGS_BYTES = 64 * 1024
MAX_URL_CHARS = 2048
MAX_TOKEN_CHARS = 512
MAX_TOKENS_KEPT = 64
# RFC 7230 token characters: safe in an Authorization header and in a WebSocket subprotocol.
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


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
    # The agent's --warm (containers started ahead of demand); None: its default.
    agent_warm: int | None = None
    # Access token per coordinator URL (as validate_coordinator_url returns it).
    tokens: Mapping[str, str] = field(default_factory=dict, repr=False)

    def token(self) -> str | None:
        """The token stored for the current coordinator, if any."""
        return self.tokens.get(self.coordinator_url)

    def with_token(self, token: str | None) -> AppSettings:
        """These settings with the current coordinator's token set (or forgotten: None)."""
        tokens = {url: value for url, value in self.tokens.items() if url != self.coordinator_url}
        if token is not None:
            tokens[self.coordinator_url] = token
        return replace(self, tokens=tokens)


def public_view(settings: AppSettings) -> dict[str, Any]:
    """What the pages may know: every setting but the tokens, and whether one is stored."""
    view = asdict(settings)
    del view["tokens"]
    view["has_token"] = settings.token() is not None
    return view


def config_dir() -> Path:
    """The directory holding ``app.json`` (not created here)."""
    override = os.environ.get("COMPOUND_CONFIG_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "compound"


def validate_coordinator_url(url: str) -> str:
    """Return the URL without a trailing slash, or several as ``A,B,...`` (coordinators
    sharing one database, tried in turn), or raise SettingsError with a reason."""
    url = url.strip()
    if not url or len(url) > MAX_URL_CHARS:
        raise SettingsError("The coordinator URL must be between 1 and 2048 characters.")
    try:
        urls = parse_coordinators(url)
    except CoordinatorListError as exc:
        raise SettingsError(f"{str(exc).capitalize()}.") from None
    for one in urls:
        parts = urlsplit(one)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SettingsError(
                "The coordinator URL must look like http://host:port"
                " (or several, separated by commas)."
            )
    return join_coordinators(urls)


def validate_token(token: object) -> str:
    """Return the token stripped, or raise SettingsError (never quoting the token)."""
    if not isinstance(token, str):
        raise SettingsError("The token must be a string.")
    token = token.strip()
    if not 0 < len(token) <= MAX_TOKEN_CHARS or not _TOKEN_RE.fullmatch(token):
        raise SettingsError(
            "That does not look like a Compound token: paste it exactly as it was given to you."
        )
    return token


def _tokens_from_raw(raw: object) -> dict[str, str]:
    """The valid (URL, token) pairs of a settings file's ``tokens``; the rest is dropped."""
    if not isinstance(raw, dict):
        return {}
    tokens: dict[str, str] = {}
    for url, token in list(raw.items())[:MAX_TOKENS_KEPT]:
        try:
            tokens[validate_coordinator_url(str(url))] = validate_token(token)
        except SettingsError:
            log.warning("ignoring an unusable stored token in the settings file")
    return tokens


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
    settings = replace(settings, **optional)  # type: ignore[arg-type]
    if "agent_warm" in raw:
        settings = replace(settings, agent_warm=_optional_warm(raw["agent_warm"]))
    return settings


def _optional_warm(value: object) -> int | None:
    if value is None:
        return None
    # bool is an int in Python; true/false is not a number of containers.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WARM:
        raise SettingsError(f"Warm containers must be a whole number from 0 to {MAX_WARM}.")
    return value


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
            return replace(settings_from_dict(raw), tokens=_tokens_from_raw(raw.get("tokens")))
        except FileNotFoundError:
            return AppSettings()
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable settings file %s: %s", self.path, exc)
            return AppSettings()

    def save(self, settings: AppSettings) -> None:
        """Write atomically (temp file + rename) so a crash never leaves half a file.

        The file is 0600 from its first byte: it may hold access tokens.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        data = {**asdict(settings), "tokens": dict(settings.tokens)}
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.path)
