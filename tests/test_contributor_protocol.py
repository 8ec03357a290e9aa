"""The contributor protocol state machine (routes/contributor_protocol.py), driven without a
socket: hello and versions, hello only first, the seed dialect, answers, ending status."""

from __future__ import annotations

import pytest

from compound.coordinator.routes.contributor_protocol import (
    ContributorConversation,
    ending_status,
)
from compound.protocol import (
    CLOSE_PROTOCOL_ERROR,
    PROTOCOL_VERSION,
    Abandon,
    Ack,
    Done,
    Heartbeat,
    Hello,
    JobStatus,
    Log,
    LogRecord,
    ProtocolError,
)


def _hello(version: int = PROTOCOL_VERSION) -> Hello:
    return Hello(protocol_version=version, node_id="n1", name="laptop", cores=2, memory_bytes=1)


def _heartbeat() -> Heartbeat:
    return Heartbeat(cpu_percent=1.0, ram_free_bytes=1, ram_total_bytes=2)


def test_a_hello_of_our_version_opens_the_conversation() -> None:
    """The hello is the connection's identity; no report comes with it."""
    conversation = ContributorConversation()
    hello, report = conversation.open(_hello(), "seed-x")
    assert hello.node_id == "n1" and report is None and not conversation.legacy


def test_another_protocol_version_is_refused_with_1002() -> None:
    """A hello of a version we do not speak closes with a protocol error."""
    with pytest.raises(ProtocolError) as refused:
        ContributorConversation().open(_hello(PROTOCOL_VERSION + 1), "seed-x")
    assert refused.value.close_code == CLOSE_PROTOCOL_ERROR


def test_hello_is_only_allowed_first() -> None:
    """A second hello, or a report before the first message, is a protocol error."""
    conversation = ContributorConversation()
    with pytest.raises(ProtocolError):
        conversation.report(_heartbeat())
    conversation.open(_hello(), "seed-x")
    assert conversation.report(_heartbeat()) == _heartbeat()
    with pytest.raises(ProtocolError):
        conversation.report(_hello())
    with pytest.raises(ProtocolError):
        conversation.open(_hello(), "seed-x")


def test_a_seed_agent_is_given_a_hello_and_its_first_report_kept() -> None:
    """A seed agent starts with a report: it gets a made-up identity and the report is kept."""
    conversation = ContributorConversation()
    first = Log(line="hi")
    hello, report = conversation.open(first, "seed-abc")
    assert conversation.legacy and hello.node_id == "seed-abc" and report is first


def test_seed_reports_are_about_the_one_lease_held() -> None:
    """A seed line becomes the record after the last stored one, under the lease held; with
    no lease or several it names no job (and is refused downstream)."""
    conversation = ContributorConversation()
    conversation.open(Log(line="x"), "seed-1")
    held = [("job", "lease")]
    assert conversation.needs_next_seq(Log(line="hi"))
    adapted = conversation.from_seed(Log(line="hi"), held, next_seq=7)
    assert adapted == Log(job_id="job", lease_id="lease", records=[LogRecord(seq=7, data="hi\n")])
    done = conversation.from_seed(Done(exit_code=0), held)
    assert isinstance(done, Done) and (done.job_id, done.lease_id) == ("job", "lease")
    for none_or_many in ([], [("a", "1"), ("b", "2")]):
        orphan = conversation.from_seed(Done(exit_code=0), none_or_many)
        assert isinstance(orphan, Done) and orphan.job_id is None and orphan.lease_id is None


def test_a_seed_agent_is_sent_nothing_it_does_not_understand() -> None:
    """Welcome, acks and abandons go to v1 agents only."""
    seed, v1 = ContributorConversation(), ContributorConversation()
    seed.open(Log(line="x"), "seed-1")
    v1.open(_hello(), "seed-2")
    assert seed.welcome("n", 5.0, {}) is None and seed.ack("j", 1) is None
    assert seed.abandon("j", "lease") is None
    assert v1.ack("j", 3, done=True) == Ack(job_id="j", seq=3, done=True)
    assert isinstance(v1.abandon("j", "lease"), Abandon) and v1.abandon(None, None) is None
    assert v1.welcome("n", 5.0, {"j": 2}) is not None


@pytest.mark.parametrize(
    ("done", "status"),
    [
        (Done(exit_code=0), JobStatus.SUCCEEDED),
        (Done(exit_code=None), JobStatus.SUCCEEDED),
        (Done(exit_code=3), JobStatus.FAILED),
        (Done(exit_code=137, status=JobStatus.TIMED_OUT), JobStatus.TIMED_OUT),
        (Done(exit_code=143, status=JobStatus.CANCELLED), JobStatus.CANCELLED),
        # A non-final status named in a report is no ending: the exit code decides.
        (Done(exit_code=0, status=JobStatus.RUNNING), JobStatus.SUCCEEDED),
    ],
)
def test_the_ending_status_follows_the_report(done: Done, status: JobStatus) -> None:
    """A final status named by the report wins; otherwise exit code 0 or none succeeds."""
    assert ending_status(done) is status
