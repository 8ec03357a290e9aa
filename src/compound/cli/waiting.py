"""How the CLI says why a queued job waits and when it may start (standard library only)."""

from __future__ import annotations


def about(seconds: float) -> str:
    """A rough duration: ``about 40 s``, ``about 3 min``, ``about 2 h``."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {round(seconds / 3600)} h"


def waiting_sentence(reason: str | None, estimated_start_s: float | None) -> str:
    """``all contributors busy; starts in about 40 s``: the job view's waiting fields as
    one phrase ("waiting for a contributor" when the coordinator gave no reason)."""
    text = reason or "waiting for a contributor"
    if estimated_start_s is not None:
        text += f"; starts in {about(estimated_start_s)}"
    return text


def contributor_state(state: str, reason: str | None = None, last_state: str | None = None) -> str:
    """A contributor's state cell: ``paused (on battery)``, ``offline (was busy)``."""
    text = state
    if last_state:
        text += f" (was {last_state}"
        text += f": {reason})" if reason else ")"
    elif reason:
        text += f" ({reason})"
    return text
