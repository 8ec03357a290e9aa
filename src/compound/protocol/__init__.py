"""The wire protocol shared by coordinator, agent, CLI and the web UI (whose constants are
generated from it into web/js/wire.js by scripts/gen-wire-js).

Pure data and pure functions: nothing here does I/O.

The pydantic models (``messages.py``) are loaded on first use of one of their names: the
CLI follows a job with ``follow_wire.py`` and the close codes alone, and building every
model cost it ~0.13 s of start-up.

Imports: nothing
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compound.protocol.errors import (
    CLOSE_BAD_DATA,
    CLOSE_FORBIDDEN,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNKNOWN_JOB,
    ProtocolError,
)
from compound.protocol.limits import (
    MAX_ERROR_CHARS,
    MAX_INT64,
    MAX_MESSAGE_BYTES,
    MAX_RECORD_CHARS,
    MAX_SLOTS,
    PROTOCOL_VERSION,
)
from compound.protocol.status import (
    TERMINAL_STATUSES,
    ContributorState,
    IllegalTransition,
    JobStatus,
    Lending,
    Stream,
    WaitingReason,
    can_transition,
    check_transition,
)

if TYPE_CHECKING:
    from compound.protocol.messages import (
        Abandon,
        Ack,
        Artifact,
        Availability,
        Cancel,
        Done,
        FollowEnd,
        FollowRecords,
        FollowStatus,
        Heartbeat,
        Hello,
        InputsRef,
        Job,
        JobView,
        Log,
        LogRecord,
        RunningJob,
        Welcome,
        parse_agent_message,
        parse_coordinator_message,
        parse_follow_message,
        serialize,
    )

_FROM_MESSAGES = frozenset(
    {
        "Abandon",
        "Ack",
        "Artifact",
        "Cancel",
        "Done",
        "FollowEnd",
        "FollowRecords",
        "FollowStatus",
        "Heartbeat",
        "Hello",
        "InputsRef",
        "Job",
        "JobView",
        "Availability",
        "Log",
        "LogRecord",
        "RunningJob",
        "Welcome",
        "parse_agent_message",
        "parse_coordinator_message",
        "parse_follow_message",
        "serialize",
    }
)


def __getattr__(name: str) -> object:
    """The models and their parsers, imported from ``messages.py`` when first asked for."""
    if name in _FROM_MESSAGES:
        from compound.protocol import messages

        value: object = getattr(messages, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CLOSE_BAD_DATA",
    "CLOSE_FORBIDDEN",
    "CLOSE_GOING_AWAY",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN_LATER",
    "CLOSE_UNAUTHORIZED",
    "CLOSE_UNKNOWN_JOB",
    "MAX_ERROR_CHARS",
    "MAX_INT64",
    "MAX_MESSAGE_BYTES",
    "MAX_RECORD_CHARS",
    "MAX_SLOTS",
    "PROTOCOL_VERSION",
    "TERMINAL_STATUSES",
    "Abandon",
    "Ack",
    "Artifact",
    "Availability",
    "Cancel",
    "ContributorState",
    "Done",
    "FollowEnd",
    "FollowRecords",
    "FollowStatus",
    "Heartbeat",
    "Hello",
    "IllegalTransition",
    "InputsRef",
    "Job",
    "JobStatus",
    "JobView",
    "Lending",
    "Log",
    "LogRecord",
    "ProtocolError",
    "RunningJob",
    "Stream",
    "WaitingReason",
    "Welcome",
    "can_transition",
    "check_transition",
    "parse_agent_message",
    "parse_coordinator_message",
    "parse_follow_message",
    "serialize",
]
