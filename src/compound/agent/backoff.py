"""Reconnection policy: pure, so it is tested without a network or a clock.

The formula lives with the coordinator list (``compound.coordinators``), which the CLI and
the desktop app share; this name stays for the agent's callers.
"""

from __future__ import annotations

from compound.coordinators import BASE_DELAY_S, MAX_DELAY_S, reconnect_delay_s

__all__ = ["BASE_DELAY_S", "MAX_DELAY_S", "reconnect_delay_s"]
