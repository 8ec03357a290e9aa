"""What the client raises: one type per cause, all ``ClientError`` (``str()`` is a sentence).

The CLI's transport raises these same classes, so the CLI and the library say the same.
"""

from __future__ import annotations

from compound.cli.client import (
    AuthError,
    ClientError,
    RefusedError,
    TlsError,
    UnknownJobError,
    UnreachableError,
)

__all__ = [
    "AuthError",
    "ClientError",
    "RefusedError",
    "TlsError",
    "UnknownJobError",
    "UnreachableError",
]
