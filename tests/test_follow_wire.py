"""The CLI's pydantic-free reader of the follow stream agrees with the protocol's models.

``decode_follow_message`` (protocol/follow_wire.py) must accept exactly what
``parse_follow_message`` accepts, read it to the same values, and refuse the rest with a
ProtocolError and the same close code. Hypothesis draws valid messages, messages with one
field made odd, and broken JSON; a few hostile messages are spelled out.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compound.protocol import (
    MAX_MESSAGE_BYTES,
    MAX_RECORD_CHARS,
    FollowEnd,
    FollowRecords,
    FollowStatus,
    JobStatus,
    ProtocolError,
    Stream,
    parse_follow_message,
)
from compound.protocol.follow_wire import (
    MAX_DEPTH,
    WireEnd,
    WireInputs,
    WireJob,
    WireRecords,
    WireStatus,
    decode_follow_message,
)

FUZZ = settings(
    max_examples=1500, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
SHA = "0123456789abcdef" * 4

# ------------------------------------------------------------------ the two outcomes


def normalized(message: object) -> object:
    """A message of either reader as plain data, to compare the two."""
    if isinstance(message, FollowRecords | FollowStatus | FollowEnd):
        return message.model_dump()
    if isinstance(message, WireRecords):
        return {
            "type": "records",
            "records": [
                # The model leaves an unset attempt out of its dump.
                {"seq": r.seq, "stream": r.stream, "data": r.data}
                | ({} if r.attempt is None else {"attempt": r.attempt})
                for r in message.records
            ],
        }
    assert isinstance(message, WireStatus | WireEnd)
    kind = "status" if isinstance(message, WireStatus) else "end"
    return {"type": kind, "job": _job_dict(message.job)}


def _job_dict(job: WireJob) -> dict[str, Any]:
    fields = {name: getattr(job, name) for name in WireJob.__slots__}
    inputs = fields["inputs"]
    if isinstance(inputs, WireInputs):
        fields["inputs"] = {"sha256": inputs.sha256, "size": inputs.size}
    return fields


def outcome(read: Any, raw: str | bytes) -> tuple[str, object]:
    try:
        return "ok", normalized(read(raw))
    except ProtocolError as exc:
        assert "Traceback" not in exc.reason and "\n" not in exc.reason
        return "refused", exc.close_code


def assert_agree(raw: str | bytes) -> tuple[str, object]:
    expected = outcome(parse_follow_message, raw)
    assert outcome(decode_follow_message, raw) == expected, repr(raw)[:2000]
    return expected


# ------------------------------------------------------------------ strategies

finite = st.floats(allow_nan=False, allow_infinity=False)
odd = st.one_of(
    st.sampled_from(
        [None, True, False, 0, -1, 2**63, 2**64, 10**30, "", "5", "\x00", [], {}, [[[]]]]
    ),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 1.0, 0.5]),
    st.sampled_from(["queued", "running", "succeeded", "stdout", "system", SHA, SHA.upper()]),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.lists(st.text(max_size=3), max_size=3),
    st.lists(st.integers(), max_size=2),
)
# Lone surrogates travel as "\ud800" escapes (json.dumps' default, ensure_ascii).
odd_or_surrogate = odd | st.sampled_from(["\ud800", "a\udfff", ["\ud83d"], {"\udc00": 1}])
record = st.fixed_dictionaries(
    {"seq": st.integers(0, 2**64), "data": st.text(max_size=20)},
    optional={
        "stream": st.sampled_from([s.value for s in Stream]),
        "attempt": st.none() | st.integers(1, 2**63 - 1),
    },
)
inputs = st.fixed_dictionaries({"sha256": st.just(SHA), "size": st.integers(0, 2**63 - 1)})
optional_float = st.none() | finite | st.integers(-(2**70), 2**70)
job = st.fixed_dictionaries(
    {
        "id": st.text(max_size=8),
        "status": st.sampled_from([s.value for s in JobStatus]),
        "created_at": finite | st.integers(-(2**70), 2**70),
    },
    optional={
        "exit_code": st.none() | st.integers(),
        "error": st.none() | st.text(max_size=8),
        "started_at": optional_float,
        "finished_at": optional_float,
        "contributor_id": st.none() | st.text(max_size=8),
        "attempts": st.integers(),
        "queue_position": st.none() | st.integers(),
        "args": st.lists(st.text(max_size=4), max_size=3),
        "timeout_s": optional_float,
        "name": st.none() | st.text(max_size=8),
        "requirements": st.lists(st.text(max_size=4), max_size=2),
        "inputs": st.none() | inputs,
        "files_expire_at": optional_float,
        "files_removed_at": optional_float,
        "waiting_reason": st.none() | st.text(max_size=8),
        "estimated_start_s": optional_float,
        "extra": odd,
    },
)
message = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("records"), "records": st.lists(record, max_size=4)},
        optional={"extra": odd},
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["status", "end"]), "job": job}),
)


def oddify(value: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """``value`` with one field, at any depth, replaced by an odd value or removed."""
    # A copy: the odd values sampled include shared lists and dicts (``[[[]]]``), which an
    # edit in place would change for every later example (hypothesis calls that flaky).
    value = copy.deepcopy(value)
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            paths.extend((node, key) for key in node)
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            paths.extend((node, index) for index in range(len(node)))
            for item in node:
                walk(item)

    walk(value)
    if not paths:
        return value
    container, key = data.draw(st.sampled_from(paths))
    if isinstance(container, dict) and data.draw(st.booleans()):
        del container[key]
    else:
        container[key] = data.draw(odd_or_surrogate)
    return value


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


# ------------------------------------------------------------------ agreement


@FUZZ
@given(message)
def test_valid_messages_read_alike(value: dict[str, Any]) -> None:
    """Every well-formed follow message is read to the same values by both readers."""
    raw = dumps(value)
    assert assert_agree(raw)[0] == "ok"
    assert assert_agree(raw.encode("utf-8"))[0] == "ok"


@FUZZ
@given(message, st.data())
def test_odd_fields_are_refused_alike(value: dict[str, Any], data: st.DataObject) -> None:
    """A message with one or two fields made odd (wrong type, out of bounds, a lone
    surrogate, removed) is accepted or refused by both readers alike, with the same close
    code."""
    for _ in range(data.draw(st.integers(1, 2))):
        value = oddify(value, data)
    assert_agree(json.dumps(value).encode("ascii"))


@FUZZ
@given(message, st.data())
def test_broken_json_is_refused_alike(value: dict[str, Any], data: st.DataObject) -> None:
    """Cut, spliced or garbled JSON and bytes that are not UTF-8 are refused alike."""
    # surrogatepass: a lone surrogate the strategy drew becomes bytes that are not UTF-8,
    # one more kind of broken input.
    raw = dumps(value).encode("utf-8", "surrogatepass")
    cut = data.draw(st.integers(0, len(raw)))
    junk = data.draw(st.binary(max_size=4) | st.sampled_from([b"\\ud800", b"NaN", b"\xff", b"}"]))
    assert_agree(raw[:cut] + junk + raw[cut + data.draw(st.integers(0, 3)) :])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=40) | st.binary(max_size=40))
def test_any_short_input_is_refused_alike(raw: str | bytes) -> None:
    """Arbitrary short text or bytes: same verdict, never an exception but ProtocolError."""
    assert_agree(raw)


# ------------------------------------------------------------------ hostile messages, spelled out

JOB = '{"id":"j","status":"running","created_at":1%s}'


@pytest.mark.parametrize(
    "raw",
    [
        '{"type":"records","records":[{"seq":0,"data":"\\ud800"}]}',  # lone surrogate
        '{"type":"records","records":[{"seq":0,"data":"\\ud83d\\ude00"}]}',  # a pair: fine
        '{"type":"records","records":[{"seq":-1,"data":""}]}',
        '{"type":"records","records":[{"seq":1.0,"data":""}]}',
        '{"type":"records","records":[{"seq":true,"data":""}]}',
        '{"type":"records","records":[{"seq":0,"data":"","stream":"tty"}]}',
        '{"type":"records","records":[{"seq":0,"data":"","stream":["stdout"]}]}',
        '{"type":"records","records":{"seq":0}}',
        '{"type":"records"}',
        '{"type":"records","records":[],"x":NaN}',  # pydantic-core reads NaN: ignored
        '{"type":"status","job":' + JOB % ',"timeout_s":NaN' + "}",
        '{"type":"status","job":' + JOB % ',"started_at":-Infinity' + "}",
        '{"type":"status","job":' + JOB % ',"started_at":' + "9" * 400 + "}",
        '{"type":"status","job":' + JOB % ',"attempts":' + "9" * 4300 + "}",
        '{"type":"status","job":' + JOB % ',"attempts":' + "9" * 4301 + "}",
        '{"type":"status","job":' + JOB % ',"exit_code":1e2' + "}",
        '{"type":"status","job":' + JOB % ',"inputs":{"sha256":"' + SHA + '\\n","size":1}' + "}",
        '{"type":"status","job":' + JOB % ',"inputs":{"sha256":"' + SHA + '","size":-1}' + "}",
        '{"type":"status","job":' + JOB % ',"status":"lost"' + "}",
        '{"type":"end","job":' + JOB % ',"args":["a",1]' + "}",
        '{"type":"end","job":null}',
        '{"type":"end"}',
        '{"type":"bye"}',
        '{"type":1}',
        "[]",
        '"end"',
        '\ufeff{"type":"records","records":[]}',
        '{"type":"records","records":[]} x',
        # A fault of the JSON itself wins over an invalid field, as pydantic-core parses first.
        '{"type":"status","job":{"id":1,"status":"queued","created_at":1,"x":"\\ud800"}}',
        '{"type":"records","records":[{"seq":-1,"data":""}],"x":' + "[" * 201 + "]" * 201 + "}",
        '{"type":"records","records":[{"seq":0,"data":"","\\udc00":0}]}',
    ],
)
def test_hostile_messages_are_refused_alike(raw: str) -> None:
    """Spelled-out hostile or odd messages: the same verdict and close code from both."""
    assert_agree(raw.encode("utf-8"))


@pytest.mark.parametrize("extra_depth", [MAX_DEPTH - 3, MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH])
@pytest.mark.parametrize("bracket", ["[]", "{}", '{"a":1}'])
def test_nesting_limit_matches_pydantic_core(extra_depth: int, bracket: str) -> None:
    """An ignored field nested to the edge of pydantic-core's limit: the same verdict."""
    opening, closing = ('{"a":', "}") if bracket == '{"a":1}' else (bracket[0], bracket[1])
    inner = "1" if bracket == '{"a":1}' else ""
    nested = opening * extra_depth + inner + closing * extra_depth
    assert_agree(('{"type":"status","job":' + JOB % f',"x":{nested}' + "}").encode())
    record = '{"seq":0,"data":"","x":' + nested + "}"
    assert_agree(('{"type":"records","records":[' + record + "]}").encode())


def test_records_at_their_bounds() -> None:
    """A record of MAX_RECORD_CHARS is read; one character more is refused, by both."""
    for size, verdict in [(MAX_RECORD_CHARS, "ok"), (MAX_RECORD_CHARS + 1, "refused")]:
        raw = dumps({"type": "records", "records": [{"seq": 0, "data": "é" * size}]})
        assert assert_agree(raw.encode())[0] == verdict


def test_a_message_over_the_size_limit_is_refused_with_1009() -> None:
    """A message over MAX_MESSAGE_BYTES is refused before it is parsed, with 1009."""
    raw = b'{"type":"records","records":[]}' + b" " * MAX_MESSAGE_BYTES
    assert assert_agree(raw) == ("refused", 1009)


def test_decoded_values_have_the_models_types() -> None:
    """Streams and statuses come back as the protocol's enums, numbers as floats."""
    raw = '{"type":"end","job":' + JOB % ',"exit_code":3,"inputs":{"sha256":"%s","size":2}' % SHA
    end = decode_follow_message(raw + "}")
    assert isinstance(end, WireEnd) and end.job.status is JobStatus.RUNNING
    assert type(end.job.created_at) is float and end.job.exit_code == 3
    assert end.job.inputs is not None and end.job.inputs.size == 2
    records = decode_follow_message('{"type":"records","records":[{"seq":5,"data":"x"}]}')
    assert isinstance(records, WireRecords) and records.records[0].stream is Stream.STDOUT
