"""The opaque tenant sent with each job: equal for two jobs exactly when one owner sent both.

Keyed (HMAC-SHA256 with a random key), not a plain hash: an agent must neither learn the
submitter's address or token name nor test guesses of it, and a plain hash of a short,
guessable text (an IP address, a token name) is reversed by trying the candidates.

One key per process is enough: the tenant only has to be equal within one coordinator's
life. After a restart, or from another coordinator of a cluster, the same owner gets another
tenant; that only means less sandbox reuse, never sharing between owners.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

# Drawn once per process, never stored nor sent: only the tenants computed with it leave.
_KEY = secrets.token_bytes(32)
# 32 hex characters (128 bits): far from any collision, within the protocol's 64.
TENANT_HEX_CHARS = 32


def tenant_of(owner: str | None) -> str | None:
    """The tenant of the jobs ``owner`` submits (lowercase hex); None when the owner is unknown."""
    if owner is None:
        return None
    digest = hmac.new(_KEY, owner.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:TENANT_HEX_CHARS]
