"""How a bad message is answered: the WebSocket close codes and the error that carries one.

Kept apart from the models so that a reader without pydantic (``follow_wire.py``) raises
the same error with the same codes.
"""

from __future__ import annotations

# WebSocket close codes (RFC 6455 and the 4000-4999 private range).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_BAD_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_UNKNOWN_JOB = 4404
# Refusals, mirroring HTTP 401 (no valid token) and 403 (the token's role may not).
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403


class ProtocolError(Exception):
    """Bad input from a peer: ``close_code`` says how to answer, ``reason`` is safe to send."""

    def __init__(self, reason: str, close_code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code
