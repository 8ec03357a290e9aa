"""Access control on the wire: roles, how a token travels, and the answers to refusals.

HTTP clients send ``Authorization: Bearer TOKEN``. Browsers cannot set headers on a
WebSocket, so every client may instead offer two subprotocols, ``compound`` and
``compound.bearer.TOKEN``: the token travels in a header (never in a URL that lands in
logs) and the coordinator answers with ``compound`` alone.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    SUBMITTER = "submitter"
    CONTRIBUTOR = "contributor"
    ADMIN = "admin"


SUBPROTOCOL = "compound"
BEARER_SUBPROTOCOL_PREFIX = "compound.bearer."


def bearer_subprotocols(token: str) -> list[str]:
    """The subprotocols a WebSocket client offers to authenticate with ``token``."""
    return [SUBPROTOCOL, BEARER_SUBPROTOCOL_PREFIX + token]


def token_from_subprotocols(offered: list[str]) -> str | None:
    for item in offered:
        if item.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return item[len(BEARER_SUBPROTOCOL_PREFIX) :] or None
    return None


def token_from_authorization(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
