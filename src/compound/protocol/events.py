"""Typed events an agent reports about itself (``compound agent --events json``).

One JSON object per line on the agent's stdout. The desktop app learns the agent's state from
these, never by parsing human log lines; ``log`` events carry the human lines for display.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from compound.protocol.status import JobStatus, Lending


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Starting(_Event):
    type: Literal["starting"] = "starting"
    node_id: str
    name: str
    coordinator_url: str
    # Jobs at once and containers started ahead (the machine's defaults unless set).
    slots: int = 1
    warm: int = 0


class Connecting(_Event):
    type: Literal["connecting"] = "connecting"
    url: str
    attempt: int


class Connected(_Event):
    type: Literal["connected"] = "connected"
    node_id: str
    contributor_id: str
    # The container runtime jobs run under: "runsc" (gVisor) or "runc".
    runtime: str = ""


class Disconnected(_Event):
    type: Literal["disconnected"] = "disconnected"
    reason: str
    retry_in_s: float


class Stats(_Event):
    type: Literal["stats"] = "stats"
    cpu_percent: float
    ram_free_bytes: int
    ram_total_bytes: int


class JobStarted(_Event):
    type: Literal["job_started"] = "job_started"
    job_id: str


class JobFinished(_Event):
    type: Literal["job_finished"] = "job_finished"
    job_id: str
    status: JobStatus
    exit_code: int | None = None
    error: str | None = None


class LendingChanged(_Event):
    """What the agent lends now and why, and which running jobs are frozen; emitted when
    any of it changes (the first time at start)."""

    type: Literal["lending"] = "lending"
    lending: Lending
    reason: str | None = None
    frozen_jobs: list[str] = Field(default_factory=list)


class LogLine(_Event):
    type: Literal["log"] = "log"
    level: Literal["info", "warning", "error"] = "info"
    message: str


class Stopped(_Event):
    type: Literal["stopped"] = "stopped"
    reason: str = ""


AgentEvent = Annotated[
    Starting
    | Connecting
    | Connected
    | Disconnected
    | Stats
    | JobStarted
    | JobFinished
    | LendingChanged
    | LogLine
    | Stopped,
    Field(discriminator="type"),
]

_event_adapter: TypeAdapter[
    Starting
    | Connecting
    | Connected
    | Disconnected
    | Stats
    | JobStarted
    | JobFinished
    | LendingChanged
    | LogLine
    | Stopped
] = TypeAdapter(AgentEvent)


def parse_event(
    line: str,
) -> (
    Starting
    | Connecting
    | Connected
    | Disconnected
    | Stats
    | JobStarted
    | JobFinished
    | LendingChanged
    | LogLine
    | Stopped
    | None
):
    """Parse one line of ``--events json`` output; None for a line that is not an event."""
    try:
        return _event_adapter.validate_json(line)
    except ValidationError:
        return None
