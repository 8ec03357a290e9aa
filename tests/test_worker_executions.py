"""The agent's worker when a job comes back to the same agent under a new lease: the old
execution's output never lands in the new attempt's log (found by the fault harness, seed
108: a frozen agent's job was requeued, given back to it, and both executions' lines mixed).

The runner here is a stand-in for Docker that emits output when the test says so: what is
under test is the worker's bookkeeping, not the sandbox (the Docker runner has its own
tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest

from compound.agent.events import EventSink
from compound.agent.outbox import Outbox
from compound.agent.runners.base import OutputSink, RunResult, RunSpec
from compound.agent.worker import Worker
from compound.protocol import Job, JobStatus, Stream


class SteppedRunner:
    """Each run prints what the test feeds it, until it is cancelled."""

    runtime = "test"

    def __init__(self) -> None:
        self.sinks: list[OutputSink] = []
        self.started = asyncio.Event()

    async def prepare(self) -> None:
        return None

    async def run(self, spec: RunSpec, on_output: OutputSink, cancel: asyncio.Event) -> RunResult:
        self.sinks.append(on_output)
        self.started.set()
        await cancel.wait()
        return RunResult(JobStatus.CANCELLED, None)


class Rig(NamedTuple):
    """A worker under test, the runner it starts runs on and the outbox it reports to."""

    runner: SteppedRunner
    outbox: Outbox
    worker: Worker


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    """A worker over a SteppedRunner and a fresh outbox; whatever still runs is stopped at
    the end."""
    runner = SteppedRunner()
    outbox = Outbox()
    worker = Worker(runner, outbox, EventSink(json=False), max_output_bytes=1 << 20)  # type: ignore[arg-type]
    yield Rig(runner, outbox, worker)
    await worker.stop_all(5)


def _job(lease_id: str, first_seq: int) -> Job:
    return Job(job_id="j", lease_id=lease_id, script="", first_seq=first_seq)


async def test_an_abandoned_execution_writes_nothing_into_the_next_attempts_log(rig: Rig) -> None:
    """Attempt 1 is abandoned (the coordinator took the job away) but its container still
    prints; the job comes back under a new lease: only attempt 2's output is in its log."""
    runner, outbox, worker = rig
    worker.start(_job("lease-1", first_seq=0))
    await asyncio.wait_for(runner.started.wait(), 5)
    old_sink = runner.sinks[0]
    await old_sink(Stream.STDOUT, b"old 0\n")
    worker.abandon("j", "lease expired")
    runner.started.clear()
    worker.start(_job("lease-2", first_seq=5))
    await asyncio.wait_for(runner.started.wait(), 5)
    new_sink = runner.sinks[1]
    # The old container is still being stopped and prints on; the new one starts printing.
    await old_sink(Stream.STDOUT, b"old 1\nold 2\n")
    await new_sink(Stream.STDOUT, b"new 0\nnew 1\n")
    job_log = outbox.jobs["j"]
    assert job_log.lease_id == "lease-2"
    if job_log.gather is not None:
        job_log.gather()
    text = "".join(record.data for record in job_log.records)
    assert text == "new 0\nnew 1\n", text
    assert job_log.records[0].seq == 5


async def test_a_job_given_again_under_a_new_lease_replaces_the_old_run(rig: Rig) -> None:
    """The job comes back under a new lease while its old run still goes (no abandon came
    first: the old lease expired while the agent was frozen): the old run is dropped and the
    job runs again under the new lease (found by the fault harness, seed 1: the job stayed
    running for ever, its new lease renewed by heartbeats, its old run's reports refused)."""
    runner, outbox, worker = rig
    worker.start(_job("lease-1", first_seq=0))
    await asyncio.wait_for(runner.started.wait(), 5)
    runner.started.clear()
    worker.start(_job("lease-1", first_seq=0))  # the same assignment again: nothing new
    assert len(runner.sinks) == 1
    worker.start(_job("lease-2", first_seq=3))
    await asyncio.wait_for(runner.started.wait(), 5)
    assert len(runner.sinks) == 2
    assert worker.executions["j"].job.lease_id == "lease-2"
    assert outbox.jobs["j"].lease_id == "lease-2"
    await runner.sinks[0](Stream.STDOUT, b"old\n")
    await runner.sinks[1](Stream.STDOUT, b"new\n")
    job_log = outbox.jobs["j"]
    if job_log.gather is not None:
        job_log.gather()
    assert "".join(record.data for record in job_log.records) == "new\n"


async def test_an_abandon_naming_an_earlier_lease_leaves_the_new_run_alone(rig: Rig) -> None:
    """The coordinator refuses a resent report of the old run (lease 1) after giving the job
    again (lease 2): that abandon stops nothing; one naming lease 2 stops the run."""
    runner, outbox, worker = rig
    worker.start(_job("lease-1", first_seq=0))
    await asyncio.wait_for(runner.started.wait(), 5)
    runner.started.clear()
    worker.start(_job("lease-2", first_seq=3))
    await asyncio.wait_for(runner.started.wait(), 5)
    worker.abandon("j", "lease not held", lease_id="lease-1")
    assert worker.executions["j"].job.lease_id == "lease-2"
    assert outbox.jobs["j"].lease_id == "lease-2"
    worker.abandon("j", "lease expired", lease_id="lease-2")
    assert "j" not in worker.executions and "j" not in outbox.jobs
