"""Reconnection policy: pure, so it is tested without a network or a clock."""

from __future__ import annotations

import random

BASE_DELAY_S = 0.5
MAX_DELAY_S = 30.0


def reconnect_delay_s(attempt: int, rng: random.Random | None = None) -> float:
    """Delay before reconnection ``attempt`` (0-based): exponential, capped, jittered.

    Jitter spreads a crowd of agents that lost the same coordinator over time.
    """
    ceiling = min(MAX_DELAY_S, BASE_DELAY_S * 2 ** min(attempt, 16))
    jitter: float = (rng or random).random()
    return float(ceiling * (0.5 + 0.5 * jitter))
