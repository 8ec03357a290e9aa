"""A job's follow stream read without pydantic: the CLI's way in (``compound submit``).

The models in ``messages.py`` define the follow messages; building them cost the CLI ~0.13 s
of start-up, longer than a trivial job runs. This reader takes the same JSON with the
standard library and holds it to the same rules (strict types, finite floats, the same
bounds, the same nesting limit as pydantic-core's JSON reader): what ``parse_follow_message``
refuses it refuses, with a ProtocolError and its close code, and what it accepts it reads to
the same values (``tests/test_follow_wire.py`` checks both with hypothesis). So a hostile
coordinator gets a sentence out of the CLI, never a traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from compound.protocol.errors import CLOSE_BAD_DATA, CLOSE_TOO_BIG, ProtocolError
from compound.protocol.limits import MAX_INT64, MAX_MESSAGE_BYTES, MAX_RECORD_CHARS
from compound.protocol.status import JobStatus, Stream

# pydantic-core refuses JSON whose values nest deeper than this (the message itself is 1).
MAX_DEPTH = 201

_STATUSES = {status.value: status for status in JobStatus}
_STREAMS = {stream.value: stream for stream in Stream}
_MISSING: Any = object()


# NaN, Infinity and -Infinity are read, as pydantic-core reads them: a float field refuses
# them (allow_inf_nan=False), a field the models ignore may hold them.
_decoder = json.JSONDecoder()


class WireRecord:
    """One log record (``LogRecord``): its sequence number, stream, text and attempt."""

    __slots__ = ("attempt", "data", "seq", "stream")

    def __init__(self, seq: int, stream: Stream, data: str, attempt: int | None = None) -> None:
        self.seq = seq
        self.stream = stream
        self.data = data
        self.attempt = attempt


class WireInputs:
    """A job's input files (``InputsRef``)."""

    __slots__ = ("sha256", "size")

    def __init__(self, sha256: str, size: int) -> None:
        self.sha256 = sha256
        self.size = size


class WireJob:
    """What a client sees of a job (``JobView``), field for field."""

    __slots__ = (
        "args",
        "attempts",
        "contributor_id",
        "created_at",
        "error",
        "estimated_start_s",
        "exit_code",
        "files_expire_at",
        "files_removed_at",
        "finished_at",
        "id",
        "inputs",
        "name",
        "queue_position",
        "requirements",
        "started_at",
        "status",
        "timeout_s",
        "waiting_reason",
    )

    def __init__(self, fields: dict[str, Any]) -> None:
        self.id: str = fields["id"]
        self.status: JobStatus = fields["status"]
        self.exit_code: int | None = fields["exit_code"]
        self.error: str | None = fields["error"]
        self.created_at: float = fields["created_at"]
        self.started_at: float | None = fields["started_at"]
        self.finished_at: float | None = fields["finished_at"]
        self.contributor_id: str | None = fields["contributor_id"]
        self.attempts: int = fields["attempts"]
        self.queue_position: int | None = fields["queue_position"]
        self.args: list[str] = fields["args"]
        self.timeout_s: float | None = fields["timeout_s"]
        self.name: str | None = fields["name"]
        self.requirements: list[str] = fields["requirements"]
        self.inputs: WireInputs | None = fields["inputs"]
        self.files_expire_at: float | None = fields["files_expire_at"]
        self.files_removed_at: float | None = fields["files_removed_at"]
        self.waiting_reason: str | None = fields["waiting_reason"]
        self.estimated_start_s: float | None = fields["estimated_start_s"]


class WireRecords:
    """``records``: the next log records of the job."""

    __slots__ = ("records",)

    def __init__(self, records: list[WireRecord]) -> None:
        self.records = records


class WireStatus:
    """``status``: the job as it is now (queued, running)."""

    __slots__ = ("job",)

    def __init__(self, job: WireJob) -> None:
        self.job = job


class WireEnd:
    """``end``: the job is over and every record has been sent."""

    __slots__ = ("job",)

    def __init__(self, job: WireJob) -> None:
        self.job = job


WireMessage = WireRecords | WireStatus | WireEnd


def decode_follow_message(raw: str | bytes) -> WireMessage:
    """Read a message of a job follow stream; raises only ProtocolError."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError("message too big", CLOSE_TOO_BIG)
    try:
        value = _decoder.decode(_text(raw))
    except (ValueError, RecursionError):  # JSONDecodeError, too many digits, too deep
        raise _not_json() from None
    try:
        if type(value) is not dict or type(value.get("type")) is not str:
            raise ProtocolError("message must be a JSON object with a type")
        return _message(value)
    except ProtocolError as exc:
        # pydantic-core reads all the JSON before it validates a field: a value nested too
        # deep or a lone surrogate anywhere makes the message invalid JSON, whatever else.
        if exc.close_code != CLOSE_BAD_DATA and _json_fault(value, 1):
            raise _not_json() from None
        raise


def _text(raw: str | bytes) -> str:
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("message is not valid UTF-8", CLOSE_BAD_DATA) from None
    if not raw.isascii():
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("message is not a valid unicode string") from None
    return raw


def _not_json() -> ProtocolError:
    return ProtocolError("message is not valid JSON", CLOSE_BAD_DATA)


def _invalid(where: str, problem: str) -> ProtocolError:
    return ProtocolError(f"invalid message: {where}: {problem}")


def _message(value: dict[str, Any]) -> WireMessage:
    kind = value["type"]
    if kind == "records":
        _check_extras(value, ("type", "records"), 1)
        return WireRecords(_records(value.get("records", _MISSING)))
    if kind in ("status", "end"):
        _check_extras(value, ("type", "job"), 1)
        job = _job(value.get("job", _MISSING), f"{kind}.job")
        return WireStatus(job) if kind == "status" else WireEnd(job)
    raise ProtocolError("message must be a JSON object with a type")


def _records(value: Any) -> list[WireRecord]:
    if type(value) is not list:
        raise _invalid("records.records", "should be a list")
    records = []
    for index, item in enumerate(value):  # the hot path: 100,000 lines come this way
        if type(item) is not dict:
            raise _invalid(f"records.records.{index}", "should be an object")
        seq = item.get("seq", _MISSING)
        if type(seq) is not int or seq < 0:
            raise _invalid(f"records.records.{index}.seq", "should be an integer >= 0")
        data = item.get("data", _MISSING)
        if type(data) is not str or len(data) > MAX_RECORD_CHARS:
            raise _invalid(
                f"records.records.{index}.data",
                f"should be a string of at most {MAX_RECORD_CHARS} characters",
            )
        if not data.isascii() and _lone_surrogate(data):
            raise _not_json()
        name = item.get("stream", "stdout")
        stream = _STREAMS.get(name) if type(name) is str else None
        if stream is None:
            raise _invalid(f"records.records.{index}.stream", "should be a stream name")
        attempt = item.get("attempt")
        if attempt is not None and (type(attempt) is not int or not 1 <= attempt <= MAX_INT64):
            raise _invalid(
                f"records.records.{index}.attempt", f"should be an integer from 1 to {MAX_INT64}"
            )
        if len(item) > 2 + ("stream" in item) + ("attempt" in item):
            _check_extras(item, ("seq", "stream", "data", "attempt"), 3)
        records.append(WireRecord(seq, stream, data, attempt))
    return records


def _job(value: Any, where: str) -> WireJob:
    if type(value) is not dict:
        raise _invalid(where, "should be an object")
    fields = {name: read(value.get(name, _MISSING), f"{where}.{name}") for name, read in _JOB}
    _check_extras(value, _JOB_NAMES, 2)
    return WireJob(fields)


def _required(value: Any, where: str) -> None:
    if value is _MISSING:
        raise _invalid(where, "field required")


def _string(value: Any, where: str) -> str:
    _required(value, where)
    if type(value) is not str:
        raise _invalid(where, "should be a string")
    if not value.isascii() and _lone_surrogate(value):
        raise _not_json()
    result: str = value
    return result


def _integer(value: Any, where: str) -> int:
    _required(value, where)
    if type(value) is not int:
        raise _invalid(where, "should be an integer")
    result: int = value
    return result


def _number(value: Any, where: str) -> float:
    """A finite JSON number as a float (pydantic's strict float takes ints too)."""
    _required(value, where)
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            raise _invalid(where, "should be a finite number") from None
    if type(value) is not float or not math.isfinite(value):
        raise _invalid(where, "should be a finite number")
    result: float = value
    return result


def _status(value: Any, where: str) -> JobStatus:
    _required(value, where)
    status = _STATUSES.get(value) if type(value) is str else None
    if status is None:
        raise _invalid(where, "should be a job status")
    return status


def _strings(value: Any, where: str) -> list[str]:
    if value is _MISSING:
        return []
    if type(value) is not list:
        raise _invalid(where, "should be a list")
    for index, item in enumerate(value):
        _string(item, f"{where}.{index}")
    result: list[str] = value
    return result


def _inputs(value: Any, where: str) -> WireInputs | None:
    if value is _MISSING or value is None:
        return None
    if type(value) is not dict:
        raise _invalid(where, "should be an object")
    sha256 = _string(value.get("sha256", _MISSING), f"{where}.sha256")
    if len(sha256) != 64 or not set(sha256) <= _HEX:
        raise _invalid(f"{where}.sha256", "should be 64 lowercase hex digits")
    size = _integer(value.get("size", _MISSING), f"{where}.size")
    if not 0 <= size <= MAX_INT64:
        raise _invalid(f"{where}.size", f"should be from 0 to {MAX_INT64}")
    _check_extras(value, ("sha256", "size"), 3)
    return WireInputs(sha256, size)


_HEX = frozenset("0123456789abcdef")


Reader = Callable[[Any, str], Any]


def _optional(read: Reader) -> Reader:
    def optional(value: Any, where: str) -> Any:
        return None if value is _MISSING or value is None else read(value, where)

    return optional


def _defaulted(read: Reader, default: Any) -> Reader:
    def defaulted(value: Any, where: str) -> Any:
        return default if value is _MISSING else read(value, where)

    return defaulted


# JobView's fields, each with its reader (in messages.py's order: errors name the first).
_JOB: tuple[tuple[str, Reader], ...] = (
    ("id", _string),
    ("status", _status),
    ("exit_code", _optional(_integer)),
    ("error", _optional(_string)),
    ("created_at", _number),
    ("started_at", _optional(_number)),
    ("finished_at", _optional(_number)),
    ("contributor_id", _optional(_string)),
    ("attempts", _defaulted(_integer, 0)),
    ("queue_position", _optional(_integer)),
    ("args", _strings),
    ("timeout_s", _optional(_number)),
    ("name", _optional(_string)),
    ("requirements", _strings),
    ("inputs", _inputs),
    ("files_expire_at", _optional(_number)),
    ("files_removed_at", _optional(_number)),
    ("waiting_reason", _optional(_string)),
    ("estimated_start_s", _optional(_number)),
)
_JOB_NAMES = tuple(name for name, _ in _JOB)


def _check_extras(value: dict[str, Any], known: tuple[str, ...], level: int) -> None:
    """Fields the models ignore are ignored here too, once they are valid JSON as
    pydantic-core reads it (``level`` is the nesting level of ``value``)."""
    for key, item in value.items():
        if key not in known and (_json_fault(key, level + 1) or _json_fault(item, level + 1)):
            raise _not_json()


def _json_fault(value: Any, level: int) -> bool:
    """Whether ``value`` (at nesting ``level``) is JSON that pydantic-core refuses to read:
    nested deeper than MAX_DEPTH, or a str holding a lone surrogate (json reads the escape
    "\\ud800" into one; UTF-8 cannot carry it)."""
    if level > MAX_DEPTH:
        return True
    if type(value) is str:
        return not value.isascii() and _lone_surrogate(value)
    if type(value) is list:
        return any(_json_fault(item, level + 1) for item in value)
    if type(value) is dict:
        return any(
            _json_fault(key, level + 1) or _json_fault(item, level + 1)
            for key, item in value.items()
        )
    return False


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
