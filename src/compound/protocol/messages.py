"""The wire protocol between coordinator, agent and clients, defined once.

Every message is a JSON object with a ``type`` discriminator. Parsing never raises anything
but :class:`ProtocolError`, which carries the WebSocket close code to answer with, so the
I/O layers can map bad input to a close code without leaking details to the peer.

The seed's messages are kept as-is (``job`` with ``script``, ``log`` with ``line``, ``done``):
a seed agent that sends ``{"type": "log", "line": ...}`` and ``{"type": "done"}`` without a
hello still works; fields added for losslessness are optional on the way in.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from compound.protocol.errors import (
    CLOSE_BAD_DATA,
    CLOSE_TOO_BIG,
    ProtocolError,
)
from compound.protocol.limits import (
    MAX_ERROR_CHARS,
    MAX_HANDBACK_CHARS,
    MAX_INT64,
    MAX_MESSAGE_BYTES,
    MAX_RECORD_CHARS,
    MAX_SLOTS,
    PROTOCOL_VERSION,
)
from compound.protocol.requirements import MAX_REQUIREMENT_CHARS, MAX_REQUIREMENTS
from compound.protocol.status import JobStatus, Lending, Stream

_ID = 64  # longest job, lease or node id accepted


Requirement = Annotated[str, Field(min_length=1, max_length=MAX_REQUIREMENT_CHARS)]


class _Message(BaseModel):
    # strict: a string is never taken for a number, nor a float for an int; no NaN/inf.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, allow_inf_nan=False)


class LogRecord(_Message):
    """One chunk of a job's output: the complete lines of one read of a stream (or a piece
    of a longer line), so ``data`` ends at a newline or at MAX_RECORD_CHARS."""

    # Not bounded above here: the coordinator checks a batch as a whole (contiguity, int64)
    # and answers a violation with 1008, so one rule covers every bad sequence number.
    seq: int = Field(ge=0)
    stream: Stream = Stream.STDOUT
    data: str = Field(max_length=MAX_RECORD_CHARS)
    # Which attempt of the job wrote it (1, 2, ... : a job handed back or requeued runs
    # again). Set by the coordinator on the records it sends; an agent leaves it out, and
    # whatever an agent says is overwritten. Left out of the JSON when unset.
    attempt: int | None = Field(
        default=None, ge=1, le=MAX_INT64, exclude_if=lambda value: value is None
    )


class InputsRef(_Message):
    """A job's input files: one tar stored by the coordinator under its SHA-256."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0, le=MAX_INT64)


class Artifact(_Message):
    """One output file of a job, as the coordinator stored it."""

    path: str = Field(min_length=1, max_length=4096)
    size: int = Field(ge=0, le=MAX_INT64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class RunningJob(_Message):
    job_id: str = Field(min_length=1, max_length=_ID)
    lease_id: str = Field(min_length=1, max_length=_ID)


# ---------------------------------------------------------------- agent -> coordinator


class Hello(_Message):
    type: Literal["hello"] = "hello"
    protocol_version: int
    node_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=128)
    cores: int = Field(ge=0, le=1 << 20)
    memory_bytes: int = Field(ge=0, le=MAX_INT64)
    runtime: str = Field(default="runc", max_length=32)
    version: str = Field(default="", max_length=64)
    running: list[RunningJob] = Field(default_factory=list, max_length=1024)
    # The agent installs a job's Python packages; jobs with requirements go only to these.
    deps: bool = False
    # Jobs it runs at once, each in its own container: the coordinator keeps up to this many
    # leased to it. Absent (seed and older agents): one.
    slots: int = Field(default=1, ge=1, le=MAX_SLOTS)
    # What it lends as it connects (a paused or stopping agent that reconnects says so).
    lending: Lending = Lending.ACTIVE
    lending_reason: str | None = Field(default=None, max_length=MAX_HANDBACK_CHARS)


class Heartbeat(_Message):
    type: Literal["heartbeat"] = "heartbeat"
    cpu_percent: float = Field(default=0.0, ge=0, le=1e6)
    ram_free_bytes: int = Field(default=0, ge=0, le=MAX_INT64)
    ram_total_bytes: int = Field(default=0, ge=0, le=MAX_INT64)
    # The leases the agent holds now, as in its hello (until their ending is acknowledged):
    # a job it stops listing is given back. None: an agent that does not say.
    running: list[RunningJob] | None = Field(default=None, max_length=1024)


class Log(_Message):
    """A batch of log records of one job, or the seed's single ``line``."""

    type: Literal["log"] = "log"
    job_id: str | None = Field(default=None, max_length=_ID)
    lease_id: str | None = Field(default=None, max_length=_ID)
    records: list[LogRecord] = Field(default_factory=list)
    # Seed form: one line, no sequence number; the coordinator numbers it.
    line: str | None = None
    stream: Stream = Stream.STDOUT


class Done(_Message):
    """The end of a job as the agent saw it. ``last_seq`` is the last record it produced."""

    type: Literal["done"] = "done"
    job_id: str | None = Field(default=None, max_length=_ID)
    lease_id: str | None = Field(default=None, max_length=_ID)
    status: JobStatus | None = None
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    error: str | None = Field(default=None, max_length=MAX_ERROR_CHARS)
    last_seq: int | None = Field(default=None, ge=-1, le=MAX_INT64)
    # Set: this attempt ends without a result because the contributor is leaving (why, in a
    # few words); the job is queued again for another contributor, not counted against it.
    handback: str | None = Field(default=None, min_length=1, max_length=MAX_HANDBACK_CHARS)


class Availability(_Message):
    """What the agent lends from now on (``Lending``): while not ``active`` it is given no
    new job; it still reports on the jobs it holds (and hands back what it gives up)."""

    type: Literal["availability"] = "availability"
    lending: Lending
    reason: str | None = Field(default=None, max_length=MAX_HANDBACK_CHARS)
    # Jobs it runs at once from now on, when its donor changed that (None: unchanged).
    slots: int | None = Field(default=None, ge=1, le=MAX_SLOTS)


# ---------------------------------------------------------------- coordinator -> agent


class Welcome(_Message):
    type: Literal["welcome"] = "welcome"
    protocol_version: int = PROTOCOL_VERSION
    contributor_id: str
    heartbeat_interval_s: float
    # job_id -> highest sequence number stored, for jobs the agent said it is running.
    acked: dict[str, int] = Field(default_factory=dict)


class Job(_Message):
    type: Literal["job"] = "job"
    job_id: str
    lease_id: str
    script: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float | None = None
    # PEP 508 requirements, checked by the coordinator (compound.protocol.requirements).
    requirements: list[Requirement] = Field(default_factory=list, max_length=MAX_REQUIREMENTS)
    # The agent numbers this job's records from here (continues after a requeue).
    first_seq: int = 0
    # Input files to fetch (GET /api/v1/inputs/{sha256}) before the job starts.
    inputs: InputsRef | None = None
    # The job's name: a Python file's name is the script's (see protocol.script_names).
    name: str | None = Field(default=None, max_length=256)
    # Jobs with an equal tenant come from the same submitter (an opaque keyed hash, not who):
    # the agent may reuse a sandbox only between jobs of one tenant. None (an older
    # coordinator): no reuse. Lowercase hex only, as it may end up in container names.
    tenant: str | None = Field(default=None, max_length=64, pattern=r"^[0-9a-f]{1,64}$")


class Ack(_Message):
    """Every record of ``job_id`` up to and including ``seq`` is stored.

    ``done`` acknowledges the agent's ``done`` report: the job's ending is stored too and the
    agent can forget the job.
    """

    type: Literal["ack"] = "ack"
    job_id: str
    seq: int
    done: bool = False


class Cancel(_Message):
    type: Literal["cancel"] = "cancel"
    job_id: str
    reason: str = "cancelled by the submitter"


class Abandon(_Message):
    """The agent's lease on this job is gone (taken over, finished or unknown): stop it."""

    type: Literal["abandon"] = "abandon"
    job_id: str
    reason: str
    # The lease that is gone. The job may have been given to this agent again under a new
    # one meanwhile, and that run must go on. None (an older coordinator): any lease.
    lease_id: str | None = Field(default=None, max_length=_ID)


AgentMessage = Annotated[Hello | Heartbeat | Log | Done | Availability, Field(discriminator="type")]
CoordinatorMessage = Annotated[Welcome | Job | Ack | Cancel | Abandon, Field(discriminator="type")]

# ---------------------------------------------------------------- coordinator -> followers


class JobView(_Message):
    """What clients see of a job (REST and follow streams)."""

    id: str
    status: JobStatus
    exit_code: int | None = None
    error: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    contributor_id: str | None = None
    attempts: int = 0
    queue_position: int | None = None
    args: list[str] = Field(default_factory=list)
    timeout_s: float | None = None
    name: str | None = None
    requirements: list[str] = Field(default_factory=list)
    inputs: InputsRef | None = None
    # When the coordinator removes this finished job's logs, inputs and artifacts, and
    # when it did (the job itself stays listed).
    files_expire_at: float | None = None
    files_removed_at: float | None = None
    # While queued: why it waits (a sentence, one of WaitingReason's) and when it may start,
    # in seconds from now, from the recent start rate and its place (null when unknown).
    waiting_reason: str | None = None
    estimated_start_s: float | None = None


class FollowRecords(_Message):
    type: Literal["records"] = "records"
    records: list[LogRecord]


class FollowStatus(_Message):
    type: Literal["status"] = "status"
    job: JobView


class FollowEnd(_Message):
    """The job is over and every record has been sent. A closed socket without it is not."""

    type: Literal["end"] = "end"
    job: JobView


FollowMessage = Annotated[FollowRecords | FollowStatus | FollowEnd, Field(discriminator="type")]

_agent_adapter: TypeAdapter[Hello | Heartbeat | Log | Done | Availability] = TypeAdapter(
    AgentMessage
)
_coordinator_adapter: TypeAdapter[Welcome | Job | Ack | Cancel | Abandon] = TypeAdapter(
    CoordinatorMessage
)
_follow_adapter: TypeAdapter[FollowRecords | FollowStatus | FollowEnd] = TypeAdapter(FollowMessage)


def _validate(adapter: TypeAdapter[Any], raw: str | bytes) -> Any:
    """Parse and validate in one pass (pydantic-core reads the JSON itself: log batches
    are the hot path), then map every failure to the close code it deserves."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError("message too big", CLOSE_TOO_BIG)
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("message is not valid UTF-8", CLOSE_BAD_DATA) from None
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        raise _protocol_error(exc) from None


def _protocol_error(exc: ValidationError) -> ProtocolError:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return ProtocolError("message is not valid JSON", CLOSE_BAD_DATA)
    where = ".".join(str(part) for part in first["loc"]) or "message"
    if first["type"] in ("model_attributes_type", "union_tag_not_found", "model_type"):
        if not first["loc"]:
            return ProtocolError("message must be a JSON object with a type")
        # A field that should hold an object (a record, a running lease) holds something
        # else: say which, as for any other field, without naming our model classes.
        return ProtocolError(f"invalid message: {where}: Input should be an object")
    return ProtocolError(f"invalid message: {where}: {first['msg']}")


def parse_agent_message(raw: str | bytes) -> Hello | Heartbeat | Log | Done | Availability:
    """Parse what an agent sent; raises only ProtocolError."""
    result: Hello | Heartbeat | Log | Done | Availability = _validate(_agent_adapter, raw)
    return result


def parse_coordinator_message(raw: str | bytes) -> Welcome | Job | Ack | Cancel | Abandon:
    """Parse what the coordinator sent an agent; raises only ProtocolError."""
    result: Welcome | Job | Ack | Cancel | Abandon = _validate(_coordinator_adapter, raw)
    return result


def parse_follow_message(raw: str | bytes) -> FollowRecords | FollowStatus | FollowEnd:
    """Parse a message of a job follow stream; raises only ProtocolError."""
    result: FollowRecords | FollowStatus | FollowEnd = _validate(_follow_adapter, raw)
    return result


def serialize(message: BaseModel) -> str:
    """The one way messages go on the wire: compact JSON, UTF-8 kept as-is."""
    return message.model_dump_json(exclude_none=False)
