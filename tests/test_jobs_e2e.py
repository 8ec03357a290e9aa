"""End to end over real sockets: a real coordinator, a real agent, real Docker containers."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable

import pytest
from websockets.sync.client import connect

from support import Agent, Coordinator, follow, stream_text, wait_until

RUNTIMES = pytest.mark.parametrize("runtime", ["runc", "runsc"])


def run_to_end(
    coordinator: Coordinator, script: str, **fields: object
) -> tuple[list[dict[str, object]], dict[str, object]]:
    job_id = coordinator.submit(textwrap.dedent(script), **fields)
    return follow(coordinator, job_id)


@RUNTIMES
def test_output_exit_code_and_stderr_are_separate(
    coordinator: Coordinator, start_agent: Callable[..., Agent], runtime: str
) -> None:
    """stdout and stderr arrive on their own streams and the exit code is the script's."""
    agent = start_agent(runtime=runtime)
    records, job = run_to_end(
        coordinator,
        """
        import sys
        print("to stdout")
        print("to stderr", file=sys.stderr)
        sys.exit(7)
    """,
    )
    assert stream_text(records, "stdout") == "to stdout\n"
    assert stream_text(records, "stderr") == "to stderr\n"
    assert job["status"] == "failed" and job["exit_code"] == 7
    assert job["contributor_id"] == agent.node_id


def test_success_args_and_env(coordinator: Coordinator, agent: Agent) -> None:
    """Arguments and environment reach the script; exit 0 is success."""
    records, job = run_to_end(
        coordinator,
        """
        import os, sys
        print(sys.argv[1:], os.environ["GREETING"])
    """,
        args=["one", "two words", "--flag"],
        env={"GREETING": "hi"},
    )
    assert stream_text(records) == "['one', 'two words', '--flag'] hi\n"
    assert job["status"] == "succeeded" and job["exit_code"] == 0


def test_unicode_and_last_line_without_newline(coordinator: Coordinator, agent: Agent) -> None:
    """UTF-8 text, including a final line with no newline, arrives byte-identical."""
    text = "héllo wörld ✓ 日本語 🎉\nemoji 👩‍💻 and tabs\tend"
    records, job = run_to_end(
        coordinator,
        f"""
        import sys
        sys.stdout.write({text!r})
    """,
    )
    assert stream_text(records) == text
    assert job["status"] == "succeeded"


@RUNTIMES
def test_one_mebibyte_line(
    coordinator: Coordinator, start_agent: Callable[..., Agent], runtime: str
) -> None:
    """A single 1 MiB line (multi-byte characters included) arrives intact."""
    start_agent(runtime=runtime)
    records, job = run_to_end(
        coordinator,
        """
        import sys
        sys.stdout.write("é" * (512 * 1024) + "\\n")
        sys.stdout.write("x" * (1024 * 1024) + "\\n")
    """,
    )
    assert stream_text(records) == "é" * (512 * 1024) + "\n" + "x" * (1024 * 1024) + "\n"
    assert job["status"] == "succeeded"


@RUNTIMES
def test_invalid_utf8_is_replaced(
    coordinator: Coordinator, start_agent: Callable[..., Agent], runtime: str
) -> None:
    """Bytes that are not UTF-8 become U+FFFD and the rest of the output is intact."""
    start_agent(runtime=runtime)
    records, job = run_to_end(
        coordinator,
        """
        import sys
        sys.stdout.buffer.write(b"ok \\xff\\xfe bad\\n\\xe2\\x82 cut\\nafter\\n")
        sys.stdout.flush()
    """,
    )
    assert stream_text(records) == "ok \ufffd\ufffd bad\n\ufffd cut\nafter\n"
    assert job["status"] == "succeeded"


@RUNTIMES
def test_hundred_thousand_lines_intact(
    coordinator: Coordinator, start_agent: Callable[..., Agent], runtime: str
) -> None:
    """100,000 lines arrive complete, in order, each exactly once."""
    start_agent(runtime=runtime)
    records, job = run_to_end(
        coordinator,
        """
        for i in range(100_000):
            print(f"line {i}")
    """,
    )
    assert job["status"] == "succeeded"
    lines = stream_text(records).splitlines()
    assert lines == [f"line {i}" for i in range(100_000)]
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(set(seqs))


def test_first_line_arrives_while_the_job_runs(coordinator: Coordinator, agent: Agent) -> None:
    """Output streams live: the first line is seen while the script is still running."""
    job_id = coordinator.submit("import time\nprint('first')\ntime.sleep(60)\nprint('never')\n")
    received: list[dict[str, object]] = []
    with connect(f"{coordinator.ws_url}/api/v1/jobs/{job_id}/follow") as websocket:
        while "first\n" not in stream_text(received):
            message = json.loads(websocket.recv(timeout=30))
            if message["type"] == "records":
                received.extend(message["records"])
    assert stream_text(received) == "first\n"
    assert coordinator.job(job_id)["status"] == "running"
    coordinator.api("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert coordinator.wait_for_status(job_id, {"cancelled"})["status"] == "cancelled"


def test_jobs_wait_in_fifo_queue_without_contributors(
    coordinator: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """With no contributor, jobs are queued (never rejected) and run in submission order."""
    first = coordinator.submit("print('first')")
    second = coordinator.submit("print('second')")
    assert coordinator.job(first)["status"] == "queued"
    assert coordinator.job(first)["queue_position"] == 1
    assert coordinator.job(second)["queue_position"] == 2
    start_agent()
    done_first = coordinator.wait_for_status(first, {"succeeded"})
    done_second = coordinator.wait_for_status(second, {"succeeded"})
    assert done_first["started_at"] <= done_second["started_at"]
    assert stream_text(coordinator.logs(second)) == "second\n"


def test_late_subscriber_gets_full_log_then_end(coordinator: Coordinator, agent: Agent) -> None:
    """A follower arriving after the end gets every record, and `after` skips what it has."""
    # Alternating streams: records never join two streams, so the log has many records.
    script = "import sys\nfor i in range(50):\n    print(i, flush=True)\n"
    script += "    print(i, file=sys.stderr, flush=True)\n"
    job_id = coordinator.submit(script)
    coordinator.wait_for_status(job_id, {"succeeded"})
    records, job = follow(coordinator, job_id)
    expected = "".join(f"{i}\n" for i in range(50))
    assert stream_text(records) == expected and stream_text(records, "stderr") == expected
    assert job["status"] == "succeeded"
    middle = len(records) // 2
    assert middle >= 1
    later, _ = follow(coordinator, job_id, after=records[middle - 1]["seq"])
    assert later == records[middle:]


def test_many_lines_make_few_records_and_an_identical_log(
    coordinator: Coordinator, agent: Agent
) -> None:
    """100,000 lines are stored as far fewer records (a record per read of the pipe), and
    the stored log and the followed log are both byte-identical to what the script wrote."""
    job_id = coordinator.submit("for i in range(100000):\n    print(f'line {i}')\n")
    records, job = follow(coordinator, job_id)
    expected = "".join(f"line {i}\n" for i in range(100000))
    assert job["status"] == "succeeded"
    assert stream_text(records) == expected
    stored = coordinator.logs(job_id)
    assert stream_text(stored) == expected and len(stored) <= 1000


def test_subscriber_joining_mid_job_sees_no_gap(coordinator: Coordinator, agent: Agent) -> None:
    """Joining while a job runs gives the history, then live records, without gap or repeat."""
    job_id = coordinator.submit(
        textwrap.dedent("""
        import time
        for i in range(40):
            print(i, flush=True)
            time.sleep(0.05)
    """)
    )
    wait_until(
        lambda: stream_text(coordinator.logs(job_id)).count("\n") >= 5, 30, "five lines of output"
    )
    records, job = follow(coordinator, job_id)
    assert stream_text(records) == "".join(f"{i}\n" for i in range(40))
    assert job["status"] == "succeeded"


def test_cancel_running_job(coordinator: Coordinator, agent: Agent) -> None:
    """Cancelling a running job stops its container and ends it as cancelled."""
    job_id = coordinator.submit("import time\nprint('started', flush=True)\ntime.sleep(120)\n")
    wait_until(lambda: coordinator.logs(job_id), 30, "the job to start")
    response = coordinator.api("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202
    started = time.monotonic()
    job = coordinator.wait_for_status(job_id, {"cancelled"}, timeout_s=30)
    assert time.monotonic() - started < 15
    assert job["finished_at"] is not None
    again = coordinator.api("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409


def test_cancel_queued_job(coordinator: Coordinator) -> None:
    """A queued job is cancelled at once and never runs."""
    job_id = coordinator.submit("print('never')")
    response = coordinator.api("POST", f"/api/v1/jobs/{job_id}/cancel")
    assert response.json()["status"] == "cancelled"
    assert coordinator.logs(job_id) == []


def test_timeout(coordinator: Coordinator, agent: Agent) -> None:
    """A job past its timeout_s is stopped and ends as timed_out."""
    records, job = run_to_end(
        coordinator,
        """
        import time
        print("waiting", flush=True)
        time.sleep(120)
    """,
        timeout_s=2,
    )
    assert job["status"] == "timed_out"
    assert stream_text(records) == "waiting\n"


def test_sigterm_handler_gets_grace_period(coordinator: Coordinator, agent: Agent) -> None:
    """Cancellation is SIGTERM first: a script can clean up before it is killed."""
    job_id = coordinator.submit(
        textwrap.dedent("""
        import signal, sys, time
        def bye(*_):
            print("cleaning up", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(120)
    """)
    )
    wait_until(lambda: coordinator.logs(job_id), 30, "the job to start")
    coordinator.api("POST", f"/api/v1/jobs/{job_id}/cancel")
    records, job = follow(coordinator, job_id)
    assert stream_text(records) == "ready\ncleaning up\n"
    assert job["status"] == "cancelled"


def test_job_history_is_recorded(coordinator: Coordinator, agent: Agent) -> None:
    """Health and listing reflect the work done."""
    job_id = coordinator.submit("print('x')")
    coordinator.wait_for_status(job_id, {"succeeded"})
    listing = coordinator.api("GET", "/api/v1/jobs").json()["jobs"]
    assert listing[0]["id"] == job_id
    health = coordinator.api("GET", "/healthz").json()
    assert health["status"] == "ok" and health["contributors_online"] == 1
    contributors = coordinator.contributors()
    assert contributors[0]["id"] == agent.node_id and contributors[0]["state"] != "offline"


def test_output_cap_drops_the_rest_and_the_job_goes_on(
    coordinator: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """Past the agent's output cap, output is dropped with one note; the job still ends
    normally with its own exit code."""
    start_agent(extra_args=["--max-output-mib", "1"])
    records, job = run_to_end(
        coordinator,
        """
        import sys
        for _ in range(3):
            sys.stdout.write("x" * (1024 * 1024))
        sys.stdout.flush()
        sys.exit(5)
    """,
    )
    assert stream_text(records) == "x" * (1024 * 1024)
    notes = [r for r in records if r["stream"] == "system"]
    assert len(notes) == 1 and "output limit of 1 MiB" in str(notes[0]["data"])
    assert job["status"] == "failed" and job["exit_code"] == 5
