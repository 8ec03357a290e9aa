"""Fuzzing the edges: the HTTP API against its schema, the protocol decoders, the agent socket.

Everything runs against the real thing: a coordinator process on a free loopback port, real
HTTP requests, a fake agent speaking the real protocol over a real WebSocket. Every fuzzer is
bounded (a fixed number of examples, no per-example deadline) and derandomized, so CI sees
the inputs a laptop sees. The socket fuzzers do not shrink: each example talks to a live
coordinator, and a failing sequence is printed as drawn and replays as drawn.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from compound.protocol import (
    ProtocolError,
    parse_agent_message,
    parse_coordinator_message,
    parse_follow_message,
    serialize,
)
from support import Coordinator

HEALTH_TIMEOUT_S = 1.0
REPLY_TIMEOUT_S = 5.0
SENTENCE_MAX_CHARS = 500
INT64_MAX = 2**63 - 1
CLOSE_CODES = {1002, 1007, 1008, 1009}
SUBMIT_PATHS = ("/api/v1/jobs", "/submit-job")

JSONDict = dict[str, Any]


# ------------------------------------------------------------------ shared checks


def assert_sentence(detail: object) -> None:
    """A 4xx detail is one sentence: a single line of text, no structure, no traceback."""
    assert isinstance(detail, str), f"detail is not a string: {detail!r}"
    assert detail.strip(), "detail is empty"
    assert "\n" not in detail and len(detail) <= SENTENCE_MAX_CHARS, f"not a sentence: {detail!r}"
    assert "Traceback" not in detail, detail


def assert_healthy(coordinator: Coordinator) -> None:
    response = httpx.get(coordinator.url + "/healthz", timeout=HEALTH_TIMEOUT_S)
    assert response.status_code == 200, response.text


def stored_log(coordinator: Coordinator, job_id: str, max_pages: int = 100) -> list[JSONDict]:
    """The job's stored log, paged with ``after``; fails if a page does not move forward.
    Each record names an attempt (checked here); it is left out of what is returned, to
    compare the records with what the agent sent."""
    records: list[JSONDict] = []
    after = -1
    for _ in range(max_pages):
        response = coordinator.api("GET", f"/api/v1/jobs/{job_id}/logs", params={"after": after})
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["records"]:
            return records
        assert all(type(r.get("attempt")) is int and r["attempt"] >= 1 for r in page["records"])
        records.extend({k: v for k, v in r.items() if k != "attempt"} for r in page["records"])
        assert page["last_seq"] > after, f"paging after seq {after} returns it again"
        after = page["last_seq"]
    raise AssertionError(f"the log of job {job_id} has no end after {max_pages} pages")


def assert_contiguous(job_id: str, records: list[JSONDict]) -> None:
    seqs = [record["seq"] for record in records]
    assert seqs == list(range(len(seqs))), f"job {job_id} stored seqs {seqs[:30]}"


def without_notes(records: list[JSONDict]) -> list[JSONDict]:
    return [record for record in records if record["stream"] != "system"]


def post_json_bytes(coordinator: Coordinator, path: str, body: bytes) -> httpx.Response:
    return httpx.post(
        coordinator.url + path,
        content=body,
        headers={"content-type": "application/json"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def api_coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """The coordinator the HTTP fuzzers hammer; no agent, so submitted jobs just queue."""
    server = Coordinator(data_dir=tmp_path_factory.mktemp("fuzz-api")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http_coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """A coordinator for the HTTP regressions, apart from the fuzzer's many queued jobs."""
    server = Coordinator(data_dir=tmp_path_factory.mktemp("fuzz-http")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def socket_coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coordinator]:
    """The socket fuzzer's coordinator: leases long enough never to expire mid-run."""
    server = Coordinator(
        data_dir=tmp_path_factory.mktemp("fuzz-socket"), lease_timeout_s=120.0
    ).start()
    yield server
    server.stop()


# ------------------------------------------------------------------ 1. the HTTP API (schemathesis)


@pytest.fixture(scope="module")
def api_schema(api_coordinator: Coordinator) -> schemathesis.BaseSchema:
    """The coordinator's own /openapi.json, fuzzed deterministically against the live server."""
    raw = httpx.get(api_coordinator.url + "/openapi.json", timeout=10).json()
    # /submit-job reads the same body as /api/v1/jobs by hand and documents none: give the
    # fuzzer its shape so the seed endpoint's body is fuzzed too.
    body = raw["paths"]["/api/v1/jobs"]["post"]["requestBody"]
    raw["paths"]["/submit-job"]["post"]["requestBody"] = body
    config = schemathesis.Config.from_dict({"base-url": api_coordinator.url})
    return schemathesis.openapi.from_dict(raw, config=config)


# Every operation of the schema, fuzzed; the first test keeps this list equal to the schema's.
OPERATIONS = [
    ("POST", "/submit-job"),
    ("POST", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs"),
    ("GET", "/api/v1/jobs/{job_id}"),
    ("GET", "/api/v1/jobs/{job_id}/logs"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"),
    ("GET", "/api/v1/contributors"),
    ("GET", "/healthz"),
    ("PUT", "/api/v1/inputs"),
    ("GET", "/api/v1/jobs/{job_id}/inputs"),
    ("PUT", "/api/v1/jobs/{job_id}/artifacts"),
    ("GET", "/api/v1/jobs/{job_id}/artifacts"),
    ("GET", "/api/v1/jobs/{job_id}/artifacts/{path}"),
    ("GET", "/api/v1/audit"),
    ("GET", "/metrics"),
]


@schemathesis.check
def detail_is_a_sentence(ctx: Any, response: schemathesis.Response, case: Any) -> bool | None:
    """Every 4xx answer is JSON whose ``detail`` is one sentence."""
    if 400 <= response.status_code < 500:
        try:
            body = json.loads(response.content)
        except ValueError:
            raise AssertionError(f"{response.status_code} body is not JSON") from None
        assert isinstance(body, dict), f"{response.status_code} body is not an object"
        assert_sentence(body.get("detail"))
    return None


def test_every_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    """The fuzzed operations are exactly the schema's: a new endpoint is fuzzed too."""
    labels = {f"{method} {path}" for method, path in OPERATIONS}
    assert len(api_schema) == len(labels)
    assert all(api_schema[path][method].label in labels for method, path in OPERATIONS)


# schemathesis' own pytest integration (`from_fixture(...).parametrize()`) fails under
# pytest 9 ("'Function' object has no attribute '_nodeid'"); its public strategies do not.
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_api_never_errors_and_answers_4xx_with_a_sentence(
    api_schema: schemathesis.BaseSchema, api_coordinator: Coordinator, method: str, path: str
) -> None:
    """Each operation fed schema-valid and schema-violating input: no 5xx, every 4xx a
    one-sentence detail, and after an accepted submission the job list still answers."""
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(schemathesis.GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(case=cases)
    def run(case: Any) -> None:
        note(case.as_curl_command())
        response = case.call(timeout=30)
        case.validate_response(response, checks=[not_a_server_error, detail_is_a_sentence])
        if path in SUBMIT_PATHS and response.status_code < 300:
            listing = api_coordinator.api("GET", "/api/v1/jobs")
            assert listing.status_code == 200, f"listing broke after {case.body!r}"

    run()


# ------------------------------------------------------------------ HTTP regressions


SURROGATE = "\ud800"


@pytest.mark.parametrize(
    "fields",
    [
        {"script": "print(1)", "args": [SURROGATE]},
        {"script": "print(1)", "env": {"A": SURROGATE}},
        {"script": f"print('{SURROGATE}')"},
    ],
    ids=["args", "env-value", "script"],
)
def test_lone_surrogates_are_refused(http_coordinator: Coordinator, fields: JSONDict) -> None:
    """A lone surrogate (a valid JSON escape, not valid Unicode) is refused with a sentence,
    and the job list and new submissions keep working afterwards."""
    body = json.dumps(fields).encode()  # ensure_ascii: the surrogate travels as \ud800
    assert b"\\ud800" in body
    response = post_json_bytes(http_coordinator, "/api/v1/jobs", body)
    assert response.status_code in (400, 422), response.text
    assert_sentence(response.json()["detail"])
    assert http_coordinator.api("GET", "/api/v1/jobs").status_code == 200
    job_id = http_coordinator.submit("print('fine')")
    listed = http_coordinator.api("GET", "/api/v1/jobs", params={"limit": 1000})
    assert listed.status_code == 200
    assert job_id in [job["id"] for job in listed.json()["jobs"]]


@pytest.mark.parametrize("path", SUBMIT_PATHS)
def test_deeply_nested_body_is_400(http_coordinator: Coordinator, path: str) -> None:
    """100,000 nested arrays are a bad request answered with a sentence, not a crash."""
    response = post_json_bytes(http_coordinator, path, b"[" * 100_000)
    assert response.status_code == 400, response.text
    assert_sentence(response.json()["detail"])
    assert_healthy(http_coordinator)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"env": {"FOO\n": "1"}}, "environment"),
        ({"timeout_s": "5"}, "timeout_s"),
    ],
    ids=["env-name-with-newline", "timeout-as-string"],
)
def test_loose_fields_are_422(http_coordinator: Coordinator, fields: JSONDict, words: str) -> None:
    """An env name with a trailing newline and a timeout given as a string are refused."""
    body = json.dumps({"script": "print(1)", **fields}).encode()
    response = post_json_bytes(http_coordinator, "/api/v1/jobs", body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert_sentence(detail)
    assert words in detail


# ------------------------------------------------------------------ 2. the protocol decoders

DECODERS: list[Callable[[str | bytes], Any]] = [
    parse_agent_message,
    parse_coordinator_message,
    parse_follow_message,
]

RECORD = {"seq": 0, "stream": "stdout", "data": "hi\n"}
JOB_VIEW = {"id": "j", "status": "running", "created_at": 1.5, "attempts": 1, "args": ["a"]}
# One valid-looking message of each type, with the decoder meant to read it.
MESSAGES: list[tuple[Callable[[str | bytes], Any], JSONDict]] = [
    (
        parse_agent_message,
        {
            "type": "hello",
            "protocol_version": 1,
            "node_id": "n",
            "name": "box",
            "cores": 2,
            "memory_bytes": 1024,
            "running": [{"job_id": "j", "lease_id": "l"}],
        },
    ),
    (
        parse_agent_message,
        {"type": "heartbeat", "cpu_percent": 12.5, "ram_free_bytes": 1, "ram_total_bytes": 2},
    ),
    (
        parse_agent_message,
        {"type": "log", "job_id": "j", "lease_id": "l", "records": [RECORD, {**RECORD, "seq": 1}]},
    ),
    (parse_agent_message, {"type": "log", "line": "seed line"}),
    (
        parse_agent_message,
        {"type": "done", "job_id": "j", "lease_id": "l", "status": "failed", "exit_code": 3},
    ),
    (
        parse_coordinator_message,
        {"type": "welcome", "contributor_id": "c", "heartbeat_interval_s": 5.0, "acked": {"j": 3}},
    ),
    (
        parse_coordinator_message,
        {"type": "job", "job_id": "j", "lease_id": "l", "script": "print(1)", "timeout_s": 9.0},
    ),
    (parse_coordinator_message, {"type": "ack", "job_id": "j", "seq": 4, "done": False}),
    (parse_coordinator_message, {"type": "cancel", "job_id": "j"}),
    (parse_coordinator_message, {"type": "abandon", "job_id": "j", "reason": "lease expired"}),
    (parse_follow_message, {"type": "records", "records": [RECORD]}),
    (parse_follow_message, {"type": "status", "job": JOB_VIEW}),
    (parse_follow_message, {"type": "end", "job": {**JOB_VIEW, "status": "succeeded"}}),
]

odd_values = st.one_of(
    st.sampled_from(
        [2**63, 2**63 - 1, 2**64, -(2**63) - 1, -1, 0, True, False, None, "5", "", SURROGATE]
    ),
    st.sampled_from([[], {}, [[[[]]]], {"type": "hello"}, "\udfff\ud800", "\x00"]),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 0.5]),
    st.integers(),
    st.floats(),  # NaN and infinities included: json.dumps writes them as NaN / Infinity
    st.text(alphabet=st.characters(codec=None, categories=None), max_size=8),
)


def mutate(message: JSONDict, data: st.DataObject) -> JSONDict:
    """Replace, remove or add one field, possibly one level down, with an odd value."""
    message = json.loads(json.dumps(message))
    target = message
    nested = [key for key, value in message.items() if isinstance(value, dict | list)]
    deeper: bool = data.draw(st.booleans(), label="go deeper")
    if nested and deeper:
        inner = message[data.draw(st.sampled_from(nested), label="into")]
        target = inner[0] if isinstance(inner, list) and inner else inner
        if not isinstance(target, dict):
            return message
    keys = [*sorted(target), "extra_field"]
    key = data.draw(st.sampled_from(keys), label="field")
    if data.draw(st.booleans(), label="remove") and key in target:
        del target[key]
    else:
        target[key] = data.draw(odd_values, label="value")
    return message


def assert_decodes_or_refuses(decode: Callable[[str | bytes], Any], raw: str | bytes) -> None:
    """The decoder's contract: a ProtocolError with a close code, or a message that
    re-serializes to UTF-8 JSON which decodes back to the same message."""
    try:
        message = decode(raw)
    except ProtocolError as error:
        assert error.close_code in CLOSE_CODES, (error.close_code, error.reason)
        assert "Traceback" not in error.reason
        return
    wire = serialize(message)
    try:
        encoded = wire.encode("utf-8")
    except UnicodeEncodeError:
        raise AssertionError(f"{decode.__name__} returned a message with no UTF-8 form") from None
    json.loads(encoded)
    try:
        again = decode(encoded)
    except ProtocolError as error:
        raise AssertionError(
            f"{decode.__name__} took {raw!r} but refuses its own serialization {wire}: "
            f"{error.reason}"
        ) from None
    assert again == message, f"{decode.__name__}: {raw!r} -> {wire} -> {again!r}"


@pytest.mark.parametrize("decode", DECODERS, ids=lambda decode: decode.__name__)
@settings(max_examples=300, deadline=None, derandomize=True)
@given(raw=st.binary(max_size=200) | st.text(st.characters(codec=None, categories=None)))
def test_decoders_take_any_bytes_or_text(
    decode: Callable[[str | bytes], Any], raw: str | bytes
) -> None:
    """Arbitrary bytes and text (lone surrogates included) never raise but ProtocolError."""
    assert_decodes_or_refuses(decode, raw)


@pytest.mark.parametrize(
    ("decode", "base"), MESSAGES, ids=[message["type"] for _, message in MESSAGES]
)
@settings(max_examples=200, deadline=None, derandomize=True)
@given(data=st.data(), mutations=st.integers(1, 3), as_bytes=st.booleans())
def test_decoders_take_mutated_messages(
    decode: Callable[[str | bytes], Any],
    base: JSONDict,
    data: st.DataObject,
    mutations: int,
    as_bytes: bool,
) -> None:
    """Valid-looking messages with a wrong type, a huge or negative number, a bool, a lone
    surrogate escape, a missing or an extra field: a ProtocolError or a faithful message."""
    assert_decodes_or_refuses(decode, json.dumps(base))
    message = base
    for _ in range(mutations):
        message = mutate(message, data)
    raw = json.dumps(message)  # ensure_ascii: surrogates travel as \ud800 escapes
    note(f"raw: {raw}")
    assert_decodes_or_refuses(decode, raw.encode() if as_bytes else raw)


@pytest.mark.parametrize("decode", DECODERS, ids=lambda decode: decode.__name__)
@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000,
        '{"type": "log", "records": ' + "[" * 100_000,
        '{"type": "log", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"type": "log", "x": ' + '{"a": ' * 100_000 + "1" + "}" * 100_001,
        '{"type": "heartbeat", "cpu_percent": NaN}',
        '{"type": "welcome", "contributor_id": "c", "heartbeat_interval_s": Infinity}',
    ],
    ids=["arrays", "open-records", "nested-arrays", "nested-objects", "nan", "infinity"],
)
def test_decoders_take_pathological_json(decode: Callable[[str | bytes], Any], raw: str) -> None:
    """Deep nesting and JSON's non-standard NaN/Infinity: refused or faithful, never a crash."""
    assert_decodes_or_refuses(decode, raw)


# ------------------------------------------------------------------ 3. the contributor socket


@dataclass(frozen=True)
class Closed:
    """The coordinator closed the socket; ``code`` None means without a close frame."""

    code: int | None
    reason: str


Event = JSONDict | Closed


class FakeAgent:
    """A contributor speaking the real protocol over a real WebSocket, one step at a time."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.node_id = f"fake-{uuid.uuid4().hex[:12]}"
        self.offers: list[JSONDict] = []
        self._taken = 0
        self._stack = contextlib.ExitStack()
        self.websocket: ClientConnection = self._stack.enter_context(
            connect(
                f"{coordinator.ws_url}/ws/contributor",
                max_size=None,
                open_timeout=10,
                close_timeout=2,
            )
        )
        hello = {
            "type": "hello",
            "protocol_version": 1,
            "node_id": self.node_id,
            "name": "fake agent",
            "cores": 1,
            "memory_bytes": 2**30,
        }
        self.send(json.dumps(hello))
        welcome = self.next_event()
        assert isinstance(welcome, dict) and welcome["type"] == "welcome", welcome

    def send(self, raw: str | bytes) -> None:
        # A socket the coordinator already closed reports its close on the next read.
        with contextlib.suppress(ConnectionClosed):
            self.websocket.send(raw)

    def _receive(self, deadline: float) -> Event:
        try:
            raw = self.websocket.recv(timeout=max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as closed:
            frame = closed.rcvd
            return Closed(frame.code if frame else None, frame.reason if frame else "")
        except TimeoutError:
            raise AssertionError("no message from the coordinator in time") from None
        message: JSONDict = json.loads(raw)
        if message["type"] == "job":
            self.offers.append(message)
        return message

    def next_event(self, timeout_s: float = REPLY_TIMEOUT_S) -> Event:
        """The next message other than a job offer (offers are kept), or the close."""
        deadline = time.monotonic() + timeout_s
        while True:
            event = self._receive(deadline)
            if isinstance(event, Closed) or event["type"] != "job":
                return event

    def take_job(self, timeout_s: float = REPLY_TIMEOUT_S) -> JSONDict:
        """The next job offered to this agent (a `job` message with its lease and first_seq)."""
        deadline = time.monotonic() + timeout_s
        while len(self.offers) <= self._taken:
            event = self._receive(deadline)
            assert isinstance(event, dict) and event["type"] == "job", f"not a job offer: {event}"
        self._taken += 1
        return self.offers[self._taken - 1]

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> FakeAgent:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def log_message(job_id: str, lease_id: str, records: list[JSONDict]) -> str:
    return json.dumps({"type": "log", "job_id": job_id, "lease_id": lease_id, "records": records})


def numbered(first_seq: int, chunks: list[tuple[str, str]]) -> list[JSONDict]:
    return [
        {"seq": first_seq + i, "stream": stream, "data": data}
        for i, (stream, data) in enumerate(chunks)
    ]


def assert_closed_1008(event: Event) -> None:
    assert isinstance(event, Closed), f"expected a close with 1008, got {event}"
    assert event.code == 1008, f"expected close code 1008, got {event}"
    assert event.reason and "Traceback" not in event.reason


def start_job(coordinator: Coordinator) -> tuple[FakeAgent, JSONDict]:
    """A fresh fake agent and the job it is given (submitting one so there is one)."""
    agent = FakeAgent(coordinator)
    coordinator.submit("print('fuzz')")
    return agent, agent.take_job()


@pytest.fixture
def fake_agents(
    coordinator: Coordinator,
) -> Iterator[Callable[[], tuple[FakeAgent, JSONDict]]]:
    started: list[FakeAgent] = []

    def start() -> tuple[FakeAgent, JSONDict]:
        agent, job = start_job(coordinator)
        started.append(agent)
        return agent, job

    yield start
    for agent in started:
        agent.close()


def test_valid_batches_are_acked_and_resends_ignored(
    coordinator: Coordinator, fake_agents: Callable[[], tuple[FakeAgent, JSONDict]]
) -> None:
    """Contiguous batches are acked with their last seq; a resent stored batch is acked and
    stored once; `done` is acked and the stored log is exactly what was sent."""
    agent, job = fake_agents()
    first = job["first_seq"]
    batches = [
        numbered(first, [("stdout", "a\n"), ("stderr", "b\n")]),
        numbered(first + 2, [("stdout", "c")]),
    ]
    for batch in [*batches, batches[0]]:
        agent.send(log_message(job["job_id"], job["lease_id"], batch))
        ack = agent.next_event()
        assert isinstance(ack, dict) and ack["type"] == "ack" and ack["job_id"] == job["job_id"]
        assert batch[-1]["seq"] <= ack["seq"] <= first + 2, ack
    done = {"type": "done", "job_id": job["job_id"], "lease_id": job["lease_id"], "exit_code": 0}
    agent.send(json.dumps(done))
    finished = agent.next_event()
    assert isinstance(finished, dict) and finished["type"] == "ack" and finished["done"]
    stored = stored_log(coordinator, job["job_id"])
    assert_contiguous(job["job_id"], stored)
    assert without_notes(stored)[-3:] == batches[0] + batches[1]


class Follower:
    """Follows a job's log over the real WebSocket in a thread, collecting what arrives."""

    def __init__(self, coordinator: Coordinator, job_id: str) -> None:
        self.messages: list[JSONDict] = []
        self._stack = contextlib.ExitStack()
        self.websocket = self._stack.enter_context(
            connect(
                f"{coordinator.ws_url}/api/v1/jobs/{job_id}/follow?after=-1",
                max_size=None,
                close_timeout=1,
            )
        )
        first = json.loads(self.websocket.recv(timeout=REPLY_TIMEOUT_S))
        assert first["type"] == "status"
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            while len(self.messages) < 10_000:  # enough to tell a flood
                self.messages.append(json.loads(self.websocket.recv(timeout=30)))

    def records(self) -> list[JSONDict]:
        return [r for m in list(self.messages) if m["type"] == "records" for r in m["records"]]

    def close(self) -> None:
        self._stack.close()
        self._thread.join(5)


def test_duplicate_seqs_close_1008_without_flooding_the_follower(
    coordinator: Coordinator, fake_agents: Callable[[], tuple[FakeAgent, JSONDict]]
) -> None:
    """A batch numbered 0, 0, 1 closes the agent's socket with 1008 and stores nothing; the
    job's follower gets no record twice, and the coordinator stays responsive."""
    agent, job = fake_agents()
    first, job_id = job["first_seq"], job["job_id"]
    before = stored_log(coordinator, job_id)
    follower = Follower(coordinator, job_id)
    try:
        records = numbered(first, [("stdout", "x\n"), ("stdout", "y\n"), ("stdout", "z\n")])
        records[1]["seq"] = first  # 0, 0, 1
        records[2]["seq"] = first + 1
        agent.send(log_message(job_id, job["lease_id"], records))
        assert_closed_1008(agent.next_event())
        watch_until = time.monotonic() + 1.0  # a flood, if any, shows within a second
        while time.monotonic() < watch_until:
            assert_healthy(coordinator)
        seqs = [record["seq"] for record in follower.records()]
        assert len(seqs) == len(set(seqs)), f"the follower got seqs {seqs[:10]} ({len(seqs)})"
    finally:
        follower.close()
    stored = stored_log(coordinator, job_id)
    assert_contiguous(job_id, stored)
    assert without_notes(stored) == without_notes(before)


def test_gap_closes_1008_and_stores_nothing_of_the_batch(
    coordinator: Coordinator, fake_agents: Callable[[], tuple[FakeAgent, JSONDict]]
) -> None:
    """Seq 0 then a batch at seq 5: the second batch closes the socket with 1008, unstored."""
    agent, job = fake_agents()
    first, job_id, lease_id = job["first_seq"], job["job_id"], job["lease_id"]
    agent.send(log_message(job_id, lease_id, numbered(first, [("stdout", "zero\n")])))
    ack = agent.next_event()
    assert isinstance(ack, dict) and ack["type"] == "ack" and ack["seq"] == first, ack
    agent.send(log_message(job_id, lease_id, numbered(first + 5, [("stdout", "five\n")])))
    assert_closed_1008(agent.next_event())
    assert_healthy(coordinator)
    stored = stored_log(coordinator, job_id)
    assert_contiguous(job_id, stored)
    assert [r["data"] for r in without_notes(stored)][-1] == "zero\n"


@pytest.mark.parametrize("huge", [2**62, 2**63], ids=["2**62", "2**63"])
def test_huge_seqs_close_1008(
    coordinator: Coordinator,
    fake_agents: Callable[[], tuple[FakeAgent, JSONDict]],
    huge: int,
) -> None:
    """A seq far past the next one (2**62) or outside int64 (2**63) is a 1008 close with a
    reason, not a dropped socket, and nothing of it is stored."""
    agent, job = fake_agents()
    job_id = job["job_id"]
    record = {"seq": huge, "stream": "stdout", "data": "huge\n"}
    agent.send(log_message(job_id, job["lease_id"], [record]))
    assert_closed_1008(agent.next_event())
    assert_healthy(coordinator)
    stored = stored_log(coordinator, job_id)
    assert_contiguous(job_id, stored)
    assert "huge\n" not in [r["data"] for r in stored]


def test_violation_is_handled_like_a_lost_contributor(coordinator: Coordinator) -> None:
    """After a 1008 close the job is requeued once (the next lease starts after the stored
    log), and a second violation fails it with "contributor lost"."""
    with FakeAgent(coordinator) as agent:
        job_id = coordinator.submit("print('twice')")
        job = agent.take_job()
        assert job["job_id"] == job_id and job["first_seq"] == 0
        agent.send(log_message(job_id, job["lease_id"], numbered(0, [("stdout", "one\n")])))
        assert isinstance(agent.next_event(), dict)
        agent.send(log_message(job_id, job["lease_id"], numbered(7, [("stdout", "gap\n")])))
        assert_closed_1008(agent.next_event())
    coordinator.wait_for_status(job_id, {"queued"}, timeout_s=30)

    with FakeAgent(coordinator) as second:
        again = second.take_job(timeout_s=30)
        assert again["job_id"] == job_id and again["lease_id"] != job["lease_id"]
        stored = stored_log(coordinator, job_id)
        assert_contiguous(job_id, stored)
        first = again["first_seq"]
        assert first == len(stored)
        second.send(log_message(job_id, again["lease_id"], numbered(first, [("stdout", "two\n")])))
        ack = second.next_event()
        assert isinstance(ack, dict) and ack["type"] == "ack" and ack["seq"] == first, ack
        twice = [{"seq": first + 1, "stream": "stdout", "data": "dup\n"}] * 2
        second.send(log_message(job_id, again["lease_id"], twice))
        assert_closed_1008(second.next_event())
    failed = coordinator.wait_for_status(job_id, {"failed"}, timeout_s=30)
    assert failed["error"] == "contributor lost"
    final = stored_log(coordinator, job_id)
    assert_contiguous(job_id, final)
    assert [r["data"] for r in without_notes(final)] == ["one\n", "two\n"]


# ------------------------------------------------------------------ the socket fuzzer


@dataclass
class LeaseModel:
    """What the coordinator must hold for the job a fake agent leased, per the contract."""

    job_id: str
    lease_id: str
    records: list[JSONDict]  # stored records other than system notes, in order
    last_seq: int
    stored_batches: list[list[JSONDict]] = field(default_factory=list)
    abandoned: bool = False  # the coordinator told the agent to let go of the job
    finished: bool = False
    closed: bool = False


chunk = st.tuples(st.sampled_from(["stdout", "stderr"]), st.text(max_size=10))
chunks = st.lists(chunk, min_size=1, max_size=4)
actions = st.one_of(
    st.tuples(st.just("valid"), chunks),
    st.tuples(st.just("resend"), st.integers(0, 7)),
    st.tuples(st.just("duplicate"), chunks, st.integers(0, 3)),
    st.tuples(st.just("gap"), chunks, st.integers(1, 5)),
    st.tuples(st.just("reversed"), st.lists(chunk, min_size=2, max_size=4)),
    st.tuples(st.just("huge"), st.sampled_from([2**62, INT64_MAX, 2**63, 2**64]), st.booleans()),
    st.tuples(st.just("negative"), chunks),
    st.tuples(st.just("wrong_lease"), chunks),
    st.tuples(st.just("other_job"), chunks),
    st.tuples(st.just("invalid_json"), st.text(max_size=20)),
    st.tuples(st.just("binary"), st.binary(max_size=20)),
    st.just(("surrogate",)),
    st.just(("heartbeat",)),
    st.just(("done",)),
)


class SocketFuzz:
    """Runs one drawn sequence of messages for one leased job and checks every reply."""

    def __init__(self, coordinator: Coordinator, other_job_id: str) -> None:
        self.coordinator = coordinator
        self.other_job_id = other_job_id
        self.agent, job = start_job(coordinator)
        stored = stored_log(coordinator, job["job_id"])
        assert_contiguous(job["job_id"], stored)
        assert job["first_seq"] == len(stored), (job, len(stored))
        self.model = LeaseModel(
            job["job_id"], job["lease_id"], without_notes(stored), job["first_seq"] - 1
        )

    def next_records(self, chunk_list: list[tuple[str, str]], skip: int = 0) -> list[JSONDict]:
        return numbered(self.model.last_seq + 1 + skip, chunk_list)

    def run(self, drawn: list[tuple[Any, ...]]) -> None:
        with self.agent:
            for action in drawn:
                if self.model.closed:
                    break
                getattr(self, f"do_{action[0]}")(*action[1:])
            if not self.model.closed and not self.model.finished:
                self.do_done()
        self.check_store()

    def check_store(self) -> None:
        assert_healthy(self.coordinator)
        stored = stored_log(self.coordinator, self.model.job_id)
        assert_contiguous(self.model.job_id, stored)
        assert without_notes(stored) == self.model.records

    # ---------------------------------------------------------- replies

    def send(self, raw: str | bytes) -> Event:
        self.agent.send(raw)
        event = self.agent.next_event()
        if isinstance(event, Closed):
            self.model.closed = True
        return event

    def expect_stored(self, records: list[JSONDict]) -> None:
        event = self.send(log_message(self.model.job_id, self.model.lease_id, records))
        if self.refused(event):
            return
        expected = {"type": "ack", "job_id": self.model.job_id, "seq": records[-1]["seq"]}
        assert isinstance(event, dict) and event.items() >= expected.items(), (records, event)
        self.model.records.extend(records)
        self.model.last_seq = records[-1]["seq"]
        self.model.stored_batches.append(records)

    def expect_violation(self, raw: str | bytes, codes: set[int]) -> None:
        event = self.send(raw)
        if self.refused(event):
            return
        assert isinstance(event, Closed) and event.code in codes, (raw, event, codes)

    def refused(self, event: Event) -> bool:
        """An abandon for a job the agent may no longer hold is a legitimate refusal."""
        if not (self.model.abandoned or self.model.finished):
            return False
        if isinstance(event, dict) and event["type"] == "abandon":
            return bool(event["job_id"] == self.model.job_id)
        return isinstance(event, Closed) and event.code == 1008

    # ---------------------------------------------------------- actions

    def do_valid(self, chunk_list: list[tuple[str, str]]) -> None:
        self.expect_stored(self.next_records(chunk_list))

    def do_resend(self, index: int) -> None:
        if not self.model.stored_batches:
            return
        batch = self.model.stored_batches[index % len(self.model.stored_batches)]
        event = self.send(log_message(self.model.job_id, self.model.lease_id, batch))
        if self.refused(event):
            return
        assert isinstance(event, dict) and event["type"] == "ack", (batch, event)
        assert batch[-1]["seq"] <= event["seq"] <= self.model.last_seq, (batch, event)

    def violate(self, records: list[JSONDict]) -> None:
        self.expect_violation(log_message(self.model.job_id, self.model.lease_id, records), {1008})

    def do_duplicate(self, chunk_list: list[tuple[str, str]], position: int) -> None:
        records = self.next_records(chunk_list)
        index = position % len(records)
        records.insert(index + 1, dict(records[index]))
        self.violate(records)

    def do_gap(self, chunk_list: list[tuple[str, str]], skip: int) -> None:
        self.violate(self.next_records(chunk_list, skip))

    def do_reversed(self, chunk_list: list[tuple[str, str]]) -> None:
        self.violate(self.next_records(chunk_list)[::-1])

    def do_huge(self, seq: int, after_a_valid_one: bool) -> None:
        valid = self.next_records([("stdout", "ok\n")]) if after_a_valid_one else []
        self.violate([*valid, {"seq": seq, "stream": "stdout", "data": "huge\n"}])

    def do_negative(self, chunk_list: list[tuple[str, str]]) -> None:
        records = self.next_records(chunk_list)
        records[0]["seq"] = -1
        raw = log_message(self.model.job_id, self.model.lease_id, records)
        self.expect_violation(raw, {1002, 1008})

    def do_wrong_lease(self, chunk_list: list[tuple[str, str]]) -> None:
        self.refuse_report(self.model.job_id, "0" * 32, chunk_list)

    def do_other_job(self, chunk_list: list[tuple[str, str]]) -> None:
        self.refuse_report(self.other_job_id, self.model.lease_id, chunk_list)

    def refuse_report(self, job_id: str, lease_id: str, chunk_list: list[tuple[str, str]]) -> None:
        event = self.send(log_message(job_id, lease_id, self.next_records(chunk_list)))
        if isinstance(event, Closed):
            assert event.code == 1008, event
            return
        assert event["type"] == "abandon" and event["job_id"] == job_id, event
        self.model.abandoned = self.model.abandoned or job_id == self.model.job_id

    def do_invalid_json(self, text: str) -> None:
        # A trailing ",,}" keeps it invalid whatever the text: inside a string it is unclosed.
        self.expect_violation('{"type": "log" ' + text + " ,,}", {1007})

    def do_binary(self, payload: bytes) -> None:
        self.expect_violation(b"\xff" + payload, {1003, 1007})

    def do_surrogate(self) -> None:
        records = self.next_records([("stdout", SURROGATE)])
        raw = log_message(self.model.job_id, self.model.lease_id, records)
        assert "\\ud800" in raw
        self.expect_violation(raw, {1002, 1007, 1008})

    def do_heartbeat(self) -> None:
        self.agent.send(json.dumps({"type": "heartbeat", "cpu_percent": 1.0}))

    def do_done(self) -> None:
        done = {
            "type": "done",
            "job_id": self.model.job_id,
            "lease_id": self.model.lease_id,
            "status": "succeeded",
            "exit_code": 0,
            "last_seq": self.model.last_seq,
        }
        event = self.send(json.dumps(done))
        if self.refused(event):
            return
        assert isinstance(event, dict) and event["type"] == "ack" and event["done"], event
        assert event["job_id"] == self.model.job_id and event["seq"] >= self.model.last_seq
        self.model.finished = True


def test_contributor_socket_fuzz(socket_coordinator: Coordinator) -> None:
    """Drawn sequences of valid, resent, duplicated, gapped, reordered, huge, foreign and
    malformed messages from a fake agent: every reply is what the contract says, the
    coordinator stays healthy, and every job's log is numbered 0, 1, 2, ... without a hole."""
    other_job_id = socket_coordinator.submit("print('never leased to the fuzzer')")
    socket_coordinator.api("POST", f"/api/v1/jobs/{other_job_id}/cancel")

    @settings(
        max_examples=35,
        deadline=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(drawn=st.lists(actions, min_size=1, max_size=8))
    def run(drawn: list[tuple[Any, ...]]) -> None:
        note(f"actions: {drawn!r}")  # this hypothesis prints no argument values itself
        SocketFuzz(socket_coordinator, other_job_id).run(drawn)

    run()
    jobs = socket_coordinator.api("GET", "/api/v1/jobs", params={"limit": 1000}).json()["jobs"]
    for job in jobs:
        assert_contiguous(job["id"], stored_log(socket_coordinator, job["id"]))
    assert stored_log(socket_coordinator, other_job_id) == []
    assert_healthy(socket_coordinator)
