"""The pure parts: message parsing, job lifecycle, output records, backoff, outbox."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from compound.agent.backoff import MAX_DELAY_S, reconnect_delay_s
from compound.agent.outbox import MAX_BATCH_RECORDS, Outbox
from compound.agent.output import OutputCollector
from compound.protocol import (
    MAX_MESSAGE_BYTES,
    MAX_RECORD_CHARS,
    Hello,
    IllegalTransition,
    JobStatus,
    LogRecord,
    ProtocolError,
    Stream,
    can_transition,
    check_transition,
    parse_agent_message,
    parse_coordinator_message,
    serialize,
)


def test_messages_round_trip() -> None:
    """What serialize writes, the parser reads back as the same message."""
    hello = Hello(protocol_version=1, node_id="n", name="box", cores=2, memory_bytes=1)
    assert parse_agent_message(serialize(hello)) == hello


def test_seed_messages_parse() -> None:
    """The seed's bare messages are valid: log with a line, done without fields."""
    log = parse_agent_message('{"type": "log", "line": "hi"}')
    assert log.type == "log" and log.line == "hi"
    assert parse_agent_message('{"type": "done"}').type == "done"
    job = parse_coordinator_message(
        '{"type": "job", "job_id": "j", "lease_id": "l", "script": "print(1)"}'
    )
    assert job.type == "job"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{", 1007),
        (b"\xff", 1007),
        ("[]", 1002),
        ('{"type": "nope"}', 1002),
        ('{"type": "heartbeat", "cpu_percent": "high"}', 1002),
        ("x" * (MAX_MESSAGE_BYTES + 1), 1009),
    ],
)
def test_bad_messages_map_to_close_codes(raw: str | bytes, code: int) -> None:
    """Bad input never raises anything but ProtocolError, which names its close code."""
    with pytest.raises(ProtocolError) as error:
        parse_agent_message(raw)
    assert error.value.close_code == code


def test_lifecycle_transitions() -> None:
    """Terminal statuses are final; running jobs can be requeued; queued ones cancelled."""
    assert can_transition(JobStatus.QUEUED, JobStatus.RUNNING)
    assert can_transition(JobStatus.RUNNING, JobStatus.QUEUED)
    assert can_transition(JobStatus.QUEUED, JobStatus.CANCELLED)
    for terminal in (
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
        JobStatus.TIMED_OUT,
    ):
        assert terminal.is_terminal
        for target in JobStatus:
            with pytest.raises(IllegalTransition):
                check_transition(terminal, target)
    with pytest.raises(IllegalTransition):
        check_transition(JobStatus.QUEUED, JobStatus.SUCCEEDED)


def collect(chunks: list[tuple[Stream, bytes]], cap: int = 1 << 30) -> list[LogRecord]:
    records: list[LogRecord] = []
    collector = OutputCollector(first_seq=5, max_output_bytes=cap, sink=records.append)
    for stream, data in chunks:
        collector.feed(stream, data)
    collector.close()
    return records


def text_of(records: list[LogRecord], stream: Stream) -> str:
    return "".join(r.data for r in records if r.stream is stream)


def test_records_rebuild_the_exact_output_whatever_the_chunking() -> None:
    """Cut anywhere (inside a UTF-8 character too), records join back to the exact text."""
    text = ("ligne é 日本 🎉\n" * 500 + "x" * (3 * MAX_RECORD_CHARS) + "\nno newline").encode()
    rng = random.Random(7)
    cuts = sorted(rng.sample(range(1, len(text)), 300))
    chunks = [
        (Stream.STDOUT, text[a:b]) for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)
    ]
    records = collect(chunks)
    assert text_of(records, Stream.STDOUT) == text.decode()
    assert [r.seq for r in records] == list(range(5, 5 + len(records)))
    assert all(len(r.data) <= MAX_RECORD_CHARS for r in records)


def test_a_read_becomes_one_record_of_all_its_complete_lines() -> None:
    """A read's complete lines make one record; its partial last line waits for the rest,
    unless the other stream writes meanwhile: then it goes out first, keeping the order."""
    chunks = [(Stream.STDOUT, b"a\nb\nc"), (Stream.STDERR, b"e1\ne2\n"), (Stream.STDOUT, b"d\ne\n")]

    async def in_a_loop() -> list[LogRecord]:  # a loop lets the partial line wait
        return collect(chunks)

    records = asyncio.run(in_a_loop())
    assert [(r.stream, r.data) for r in records] == [
        (Stream.STDOUT, "a\nb\n"),
        (Stream.STDOUT, "c"),
        (Stream.STDERR, "e1\ne2\n"),
        (Stream.STDOUT, "d\ne\n"),
    ]


def test_many_writes_in_one_turn_make_few_full_records() -> None:
    """100,000 one-line frames handed over in one turn of the loop make full records only."""
    frames = [(Stream.STDOUT, f"line {i}\n".encode()) for i in range(100_000)]

    async def in_a_loop() -> list[LogRecord]:
        return collect(frames)

    records = asyncio.run(in_a_loop())
    text = "".join(f"line {i}\n" for i in range(100_000))
    assert text_of(records, Stream.STDOUT) == text
    assert len(records) <= len(text) // MAX_RECORD_CHARS + 2
    assert all(len(r.data) > MAX_RECORD_CHARS - 20 for r in records[:-1])


def test_a_big_read_is_cut_at_newlines_within_the_record_bound() -> None:
    """Past MAX_RECORD_CHARS a read is cut after its last newline that fits, else at the bound."""
    line = "y" * 999 + "\n"
    text = line * 200 + "z" * (MAX_RECORD_CHARS + 5) + "\n"
    records = collect([(Stream.STDOUT, text.encode())])
    assert text_of(records, Stream.STDOUT) == text
    assert all(len(r.data) <= MAX_RECORD_CHARS for r in records)
    full_lines = [r for r in records if r.data.startswith("y")]
    assert all(r.data.endswith("\n") for r in full_lines)
    assert len(full_lines[0].data) == (MAX_RECORD_CHARS // 1000) * 1000
    assert len(records) <= 6


def test_invalid_utf8_becomes_replacement_characters() -> None:
    """Invalid bytes, and a character cut by the end of output, become U+FFFD."""
    records = collect([(Stream.STDERR, b"a\xffb\n"), (Stream.STDERR, b"\xe2\x82")])
    assert text_of(records, Stream.STDERR) == "a\ufffdb\n\ufffd"


def test_output_cap_drops_the_rest_with_one_note() -> None:
    """Past the cap, output is dropped and a single system note says so."""
    records = collect([(Stream.STDOUT, b"12345\n" * 10)] * 3, cap=20)
    assert text_of(records, Stream.STDOUT) == "12345\n12345\n12345\n12"
    notes = [r for r in records if r.stream is Stream.SYSTEM]
    assert len(notes) == 1 and "output limit" in notes[0].data


def test_backoff_grows_and_is_capped() -> None:
    """Delays grow exponentially with jitter and never exceed the cap."""
    rng = random.Random(1)
    delays = [reconnect_delay_s(attempt, rng) for attempt in range(30)]
    assert delays[0] <= 0.5 < delays[5]
    assert max(delays) <= MAX_DELAY_S


def test_outbox_resends_unacknowledged_records_after_rewind() -> None:
    """Acked records are dropped; after a reconnect everything else is sent again."""
    outbox = Outbox()
    job = outbox.open("j", "lease", first_seq=0)
    for seq in range(MAX_BATCH_RECORDS + 10):
        outbox.add("j", LogRecord(seq=seq, data=f"{seq}\n"))
    first = job.pending_batch(now=0.0)
    assert len(first) == MAX_BATCH_RECORDS
    job.sent_seq = first[-1].seq
    job.acknowledge(99)
    outbox.rewind()
    again = job.pending_batch(now=0.0)
    assert again[0].seq == 100 and len(job.records) == MAX_BATCH_RECORDS + 10 - 100
    assert json.loads(serialize(again[0]))["seq"] == 100


def test_log_tail_answers_only_what_it_covers() -> None:
    """The in-memory tail serves contiguous stored records and defers the rest to the DB."""
    from compound.coordinator.storage.log_tail import LogTails

    tails = LogTails(bytes_per_job=6)  # each record below is 2 bytes
    records = [LogRecord(seq=seq, data=f"{seq}\n") for seq in range(10)]
    sizes = [2] * 10
    assert tails.after("j", -1, 100, 1000) is None  # never seen: ask the database
    tails.stored("j", records[:4], sizes[:4])
    assert tails.after("j", -1, 100, 1000).records == records[:4]
    tails.stored("j", records[4:8], sizes[4:8])
    page = tails.after("j", 5, 100, 1000)
    assert page.records == records[6:8] and not page.more
    assert tails.after("j", 7, 100, 1000).records == []  # nothing newer has been stored
    tails.stored("j", records[8:], sizes[8:])  # past twice the cap: trimmed to the newest
    assert tails.after("j", 0, 100, 1000) is None
    page = tails.after("j", 7, 1, 1000)
    assert page.records == records[8:9] and page.more
    tails.forget("j")
    assert tails.after("j", 7, 100, 1000) is None


def test_log_tail_cuts_pages_by_bytes_and_restarts_on_a_gap() -> None:
    """A page holds at least one record and no more bytes than asked; a gap starts over."""
    from compound.coordinator.storage.log_tail import LogTails

    tails = LogTails()
    records = [LogRecord(seq=seq, data="x" * 100) for seq in range(10)]
    tails.stored("j", records, [100] * 10)
    page = tails.after("j", -1, 100, 250)
    assert [r.seq for r in page.records] == [0, 1] and page.more
    assert [r.seq for r in tails.after("j", -1, 100, 1).records] == [0]
    tails.stored("j", [LogRecord(seq=20, data="y")], [1])  # not contiguous: start over
    assert tails.after("j", 5, 100, 1000) is None
    assert [r.seq for r in tails.after("j", 19, 100, 1000).records] == [20]


def test_log_tail_bounds_memory_over_all_jobs() -> None:
    """Past the total byte budget, the least recently written job's tail is dropped."""
    from compound.coordinator.storage.log_tail import LogTails

    tails = LogTails(bytes_per_job=1000, bytes_total=250)
    for job in ("a", "b", "c"):
        tails.stored(job, [LogRecord(seq=0, data="z" * 100)], [100])
    assert tails.after("a", -1, 10, 1000) is None
    assert tails.after("c", -1, 10, 1000) is not None


@pytest.mark.parametrize(
    ("seqs", "stored", "first", "kept"),
    [
        ([0, 1, 2], -1, 0, [0, 1, 2]),
        ([3, 4], 4, 0, []),  # a resend already stored: acknowledged, ignored
        ([3, 4, 5], 3, 0, [4, 5]),  # overlaps what is stored: only the new part
        ([7, 8], 6, 7, [7, 8]),  # a requeued job's second lease
    ],
)
def test_check_batch_accepts_contiguous_batches(
    seqs: list[int], stored: int, first: int, kept: list[int]
) -> None:
    """Batches contiguous with what is stored are accepted; only new records are kept."""
    from compound.coordinator.storage.reports import Accept, check_batch

    verdict = check_batch([LogRecord(seq=s, data="x") for s in seqs], stored, first)
    assert isinstance(verdict, Accept)
    assert [r.seq for r in verdict.records] == kept


@pytest.mark.parametrize(
    ("seqs", "stored", "first", "words"),
    [
        ([0, 0, 1], -1, 0, "consecutive"),
        ([1, 0], -1, 0, "consecutive"),
        ([5], 0, 0, "gap"),
        ([2**62], -1, 0, "gap"),
        ([2**63], -1, 0, "range"),
        ([3, 4], 6, 5, "start at 5"),
    ],
)
def test_check_batch_refuses_violations(
    seqs: list[int], stored: int, first: int, words: str
) -> None:
    """Duplicates, disorder, gaps, numbers past int64 or before the lease are violations."""
    from compound.coordinator.storage.reports import Violation, check_batch

    verdict = check_batch([LogRecord(seq=s, data="x") for s in seqs], stored, first)
    assert isinstance(verdict, Violation) and words in verdict.reason


def test_check_ending_needs_every_announced_record() -> None:
    """A job may not end before the records it announced have arrived."""
    from compound.coordinator.storage.reports import check_ending

    assert check_ending(4, 4) is None and check_ending(None, 4) is None
    violation = check_ending(9, 4)
    assert violation is not None and "9" in violation.reason
