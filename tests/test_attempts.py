"""The submitter can tell: a job that ran twice keeps its attempts apart. Its records carry
their attempt; `compound logs` prints the last attempt's output alone, byte for byte, and
`compound submit` says on stderr when its job moved, then shows the new attempt's output.
The coordinator's tests run on SQLite and on PostgreSQL (``both_backends``)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from fake_agent import FakeAgent, job_with_output
from pg_cluster import Backend
from support import Coordinator, follow, product_env, run_cli, stream_text, wait_until

# Long enough that no lease expires in a test: every move is the hand-back's.
LEASE_TIMEOUT_S = 60.0
FIRST = [("stdout", "partial output of attempt 1\n"), ("stderr", "warning 1\n")]
SECOND = [
    ("stdout", "attempt two, line 1\n"),
    ("stderr", "warning 2\n"),
    ("stdout", "é ü \u2603 \r\n"),
    ("stdout", "no newline at the end"),
]
SECOND_STDOUT = "attempt two, line 1\né ü \u2603 \r\nno newline at the end"


@pytest.fixture
def coordinator(tmp_path: Path, backend: Backend) -> Iterator[Coordinator]:
    """A coordinator whose leases outlast every test here, its state on ``backend``."""
    server = Coordinator(
        data_dir=tmp_path / "c",
        lease_timeout_s=LEASE_TIMEOUT_S,
        extra_args=backend.coordinator_args,
    ).start()
    yield server
    server.stop()


def hand_back_first_attempt(
    coordinator: Coordinator, job_id: str, before_hand_back: Any = None
) -> None:
    """A fake contributor takes the job, reports FIRST, says it is stopping and hands the
    job back (``before_hand_back`` is called once its output is stored)."""
    leaving = FakeAgent(coordinator)
    given = leaving.recv_type("job")
    assert given["job_id"] == job_id
    next_seq = leaving.report(given, FIRST, given["first_seq"])
    if before_hand_back is not None:
        before_hand_back()
    leaving.send({"type": "availability", "lending": "draining", "reason": "stopping"})
    leaving.send(
        {
            "type": "done",
            "job_id": job_id,
            "lease_id": given["lease_id"],
            "handback": "stopping",
            "last_seq": next_seq - 1,
        }
    )
    assert leaving.recv_type("ack")["done"] is True
    leaving.close()


def run_second_attempt(coordinator: Coordinator, job_id: str) -> None:
    """Another fake contributor runs the job again, to success, reporting SECOND."""
    staying = FakeAgent(coordinator)
    given = staying.recv_type("job")
    assert given["job_id"] == job_id
    staying.run(given, SECOND)
    coordinator.wait_for_status(job_id, {"succeeded"}, timeout_s=30)
    staying.close()


def ran_twice(coordinator: Coordinator) -> str:
    job_id = coordinator.submit("print('run by fake agents')")
    hand_back_first_attempt(coordinator, job_id)
    run_second_attempt(coordinator, job_id)
    return job_id


@pytest.mark.both_backends
def test_records_carry_their_attempt_in_pages_and_follow_streams(
    coordinator: Coordinator,
) -> None:
    """Every record of a job handed back once names attempt 1 or 2, in the REST pages and on
    the follow socket alike; the hand-back's note belongs to attempt 1 and names it."""
    job_id = ran_twice(coordinator)
    records = coordinator.logs(job_id)
    assert [r["data"] for r in records if r["attempt"] == 2] == [d for _, d in SECOND]
    first = [r for r in records if r["attempt"] == 1]
    assert [r["data"] for r in first if r["stream"] != "system"] == [d for _, d in FIRST]
    notes = stream_text(first, "system")
    assert "attempt 1 handed back (stopping)" in notes
    page = coordinator.api("GET", f"/api/v1/jobs/{job_id}/logs").json()
    assert page["last_attempt"] == 2
    followed, job = follow(coordinator, job_id)
    assert [(r["seq"], r["attempt"]) for r in followed] == [
        (r["seq"], r["attempt"]) for r in records
    ]
    assert job["status"] == "succeeded"


@pytest.mark.both_backends
def test_logs_print_the_last_attempt_alone_and_any_other_on_request(
    coordinator: Coordinator,
) -> None:
    """`compound logs ID` prints attempt 2's stdout byte for byte; `--attempt 1` prints
    attempt 1's; `--all` prints both with a line on stderr where each starts."""
    job_id = ran_twice(coordinator)
    last = run_cli("logs", job_id, coordinator=coordinator)
    assert last.returncode == 0, last.stderr
    assert last.stdout == SECOND_STDOUT.encode()
    assert b"warning 2\n" in last.stderr and b"warning 1" not in last.stderr
    earlier = run_cli("logs", job_id, "--attempt", "1", coordinator=coordinator)
    assert earlier.returncode == 0, earlier.stderr
    assert earlier.stdout == b"partial output of attempt 1\n"
    assert b"attempt 1 handed back" in earlier.stderr
    everything = run_cli("logs", job_id, "--all", coordinator=coordinator)
    assert everything.stdout == b"partial output of attempt 1\n" + SECOND_STDOUT.encode()
    assert b"--- attempt 2 of job" in everything.stderr
    missing = run_cli("logs", job_id, "--attempt", "3", coordinator=coordinator)
    assert missing.returncode == 2 and b"has no attempt 3" in missing.stderr


@pytest.mark.both_backends
def test_submit_says_when_its_job_moved_and_ends_with_the_new_attempts_output(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    """`compound submit` following live: attempt 1's output shows, then a line on stderr
    says it was handed back, and stdout (a file) ends as exactly attempt 2's output."""
    script = tmp_path / "job.py"
    script.write_text("print('run by fake agents')\n")
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        cli = subprocess.Popen(
            [sys.executable, "-m", "compound", "submit", str(script), "-c", coordinator.url],
            stdout=out,
            stderr=err,
            env=product_env(),
        )
    try:
        job_id = wait_until(
            lambda: (
                (jobs := coordinator.api("GET", "/api/v1/jobs").json()["jobs"]) and jobs[0]["id"]
            ),
            30,
            "the submitted job",
        )
        hand_back_first_attempt(
            coordinator,
            job_id,
            # Shown live before it is handed back: the submitter did see attempt 1.
            lambda: wait_until(
                lambda: out_path.read_bytes() == b"partial output of attempt 1\n",
                30,
                "attempt 1's output on the submitter's stdout",
            ),
        )
        wait_until(
            lambda: b"waiting for attempt 2" in err_path.read_bytes(),
            30,
            "the submitter to say the job moved",
        )
        run_second_attempt(coordinator, job_id)
        assert cli.wait(timeout=30) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
    assert out_path.read_bytes() == SECOND_STDOUT.encode()
    stderr = err_path.read_text()
    assert f"compound: attempt 1 of job {job_id} was handed back" in stderr
    assert stderr.index("warning 1") < stderr.index("waiting for attempt 2")
    assert stderr.index("waiting for attempt 2") < stderr.index("warning 2")


def test_the_submitter_page_marks_where_a_new_attempt_starts(
    coordinator: Coordinator, page: Page
) -> None:
    """The submitter page shows both attempts' output with a line naming attempt 2 where it
    starts, under the strict CSP."""
    job_id = ran_twice(coordinator)
    page.goto(f"{coordinator.url}/submitter.html?job={job_id}")
    expect(page.get_by_test_id("status-badge")).to_have_text("Complete ✓", timeout=30_000)
    page.evaluate("window.compoundLog.flushNow()")
    shown = page.evaluate("window.compoundLog.text()")
    assert "partial output of attempt 1\n" in shown
    assert shown.index("partial output of attempt 1") < shown.index("── attempt 2 ──")
    assert shown.index("── attempt 2 ──") < shown.index("attempt two, line 1")


def test_a_database_from_before_attempts_opens_and_reads(tmp_path: Path) -> None:
    """A database whose tables lack the attempt columns gets them on start: its records
    read as attempt 1's and `compound logs` prints them all."""
    data_dir = tmp_path / "old"
    coordinator = Coordinator(data_dir=data_dir).start()
    job_id = job_with_output(coordinator, [("stdout", "old line\n"), ("stdout", "tail")])
    coordinator.stop()
    database = sqlite3.connect(data_dir / "compound.sqlite3")
    database.execute("ALTER TABLE log_records DROP COLUMN attempt")
    database.execute("ALTER TABLE jobs DROP COLUMN last_attempt")
    # As a database of the release before attempts says it is (schema revision 0002).
    database.execute("UPDATE alembic_version SET version_num = '0002'")
    database.commit()
    database.close()
    coordinator = Coordinator(data_dir=data_dir).start()
    try:
        records = coordinator.logs(job_id)
        assert [(r["data"], r["attempt"]) for r in records] == [("old line\n", 1), ("tail", 1)]
        printed = run_cli("logs", job_id, coordinator=coordinator)
        assert printed.returncode == 0 and printed.stdout == b"old line\ntail"
        again = job_with_output(coordinator, [("stdout", "new\n")])
        assert [r["attempt"] for r in coordinator.logs(again)] == [1]
    finally:
        coordinator.stop()
