"""Big jobs do not stall: 100,000 lines through `compound submit`, again and again.

Output comes a line at a time (jobs run unbuffered). When the agent kept pace with the job it
shipped each line as its own Log message; the coordinator spends a transaction, an ack and a
follower wake-up on each, so 1 run in ~10 ended seconds (up to ~20 s) after the job did.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from compound.agent.outbox import MAX_BATCH_RECORDS, Outbox
from compound.protocol import LogRecord
from support import Agent, Coordinator, run_cli

LINES = 100_000
RUNS = 20
SCRIPT = f"for i in range({LINES}):\n    print(f'line {{i}}')\n"
EXPECTED = "".join(f"line {i}\n" for i in range(LINES)).encode()


@pytest.mark.timeout(600)
def test_hundred_thousand_lines_twenty_times_without_a_stall(
    coordinator: Coordinator, agent: Agent, tmp_path: Path
) -> None:
    """20 runs in a row on one agent: none fails, none is cut short, none takes twice the median."""
    script = tmp_path / "lines.py"
    script.write_text(SCRIPT)
    durations: list[float] = []
    for run in range(RUNS):
        started = time.monotonic()
        result = run_cli("submit", str(script), coordinator=coordinator, timeout_s=120)
        durations.append(time.monotonic() - started)
        assert result.returncode == 0, f"run {run} failed: {result.stderr.decode()[-2000:]}"
        assert result.stdout == EXPECTED, f"run {run}: output incomplete or altered"
    median = statistics.median(durations)
    slow = [f"run {i}: {d:.1f} s" for i, d in enumerate(durations) if d > 2 * median]
    assert not slow, f"slower than twice the median ({median:.1f} s): {slow}"


def test_partial_batches_wait_for_the_ack_of_what_is_in_flight() -> None:
    """Lines arriving one by one while a batch is unacknowledged go out together, not one each."""
    outbox = Outbox()
    job = outbox.open("j", "lease", first_seq=0)
    outbox.add("j", LogRecord(seq=0, data="0\n"))
    first = job.pending_batch()
    assert job.may_send(first)  # nothing in flight: live output is not delayed
    job.sent_seq = first[-1].seq
    for seq in range(1, 50):
        outbox.add("j", LogRecord(seq=seq, data=f"{seq}\n"))
        assert not job.may_send(job.pending_batch())  # held: seq 0 is not acknowledged yet
    job.acknowledge(0)
    batch = job.pending_batch()
    assert [r.seq for r in batch] == list(range(1, 50)) and job.may_send(batch)
    job.sent_seq = batch[-1].seq
    for seq in range(50, 50 + 2 * MAX_BATCH_RECORDS):
        outbox.add("j", LogRecord(seq=seq, data=f"{seq}\n"))
    # A full batch goes at once, ack or not: bulk output keeps streaming.
    full = job.pending_batch()
    assert len(full) == MAX_BATCH_RECORDS and job.may_send(full)
