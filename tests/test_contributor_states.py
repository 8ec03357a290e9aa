"""What the coordinator and submitters see of contributors' states and of waiting jobs.

A real coordinator on port 0 and FakeAgents (real protocol clients over real sockets): each
contributor state shows in the API, the CLI and the contributors page; each reason a queued
job waits shows in its view, with an estimate of its start once jobs have started.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from websockets.sync.client import connect

from compound.protocol import WaitingReason
from fake_agent import FakeAgent
from support import Coordinator, run_cli, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    """A coordinator that keeps silent FakeAgents (they send no heartbeat) for a minute."""
    server = Coordinator(data_dir=tmp_path / "coordinator", lease_timeout_s=60).start()
    yield server
    server.stop()


def pause(agent: FakeAgent, lending: str, reason: str | None = None) -> None:
    agent.send({"type": "availability", "lending": lending, "reason": reason})


def waiting_for(coordinator: Coordinator, job_id: str, reason: WaitingReason) -> dict[str, Any]:
    """The job's view once it says it waits for ``reason``."""
    job: dict[str, Any] = wait_until(
        lambda: (view := coordinator.job(job_id))["waiting_reason"] == reason.value and view,
        20,
        f"job {job_id} to wait: {reason.value}",
    )
    return job


def test_each_state_shows_in_the_api_and_a_paused_contributor_gets_no_job(
    coordinator: Coordinator,
) -> None:
    """A contributor is idle, busy with a job, paused with its reason (and given no job),
    draining, busy again once active, and offline with its last state and reason kept."""
    agent = FakeAgent(coordinator)
    row = coordinator.wait_for_contributor(agent.node_id, "idle")
    assert row["reason"] is None and row["last_state"] is None and row["busy"] is False

    first = agent.recv_type("job") if coordinator.submit("print(1)") else None
    assert first is not None
    assert coordinator.wait_for_contributor(agent.node_id, "busy")["busy"] is True

    pause(agent, "paused", "on battery")
    row = coordinator.wait_for_contributor(agent.node_id, "paused")
    assert row["reason"] == "on battery" and row["busy"] is True  # its job is frozen, kept
    agent.run(first, [("stdout", "1\n")])
    coordinator.wait_for_status(first["job_id"], {"succeeded"})
    assert coordinator.wait_for_contributor(agent.node_id, "paused")["busy"] is False

    second = coordinator.submit("print(2)")
    job = waiting_for(coordinator, second, WaitingReason.ALL_PAUSED)
    assert job["status"] == "queued" and job["estimated_start_s"] is None

    pause(agent, "draining", "stopping")
    row = coordinator.wait_for_contributor(agent.node_id, "draining")
    assert row["reason"] == "stopping"
    assert coordinator.job(second)["status"] == "queued"

    pause(agent, "active")
    given = agent.recv_type("job")
    assert given["job_id"] == second  # what it was not given while paused, it gets now
    row = coordinator.wait_for_contributor(agent.node_id, "busy")
    assert row["reason"] is None

    pause(agent, "paused", "for the night")
    coordinator.wait_for_contributor(agent.node_id, "paused")
    agent.close()
    row = coordinator.wait_for_contributor(agent.node_id, "offline")
    assert row["last_state"] == "paused" and row["reason"] == "for the night"


def test_each_waiting_reason_appears_for_its_situation(coordinator: Coordinator) -> None:
    """Nobody online, nobody installing packages, everybody busy: each queued job says
    why it waits, and the estimate of its start appears once a job has started."""
    lonely = coordinator.submit("print('alone')")
    job = waiting_for(coordinator, lonely, WaitingReason.NO_CONTRIBUTOR)
    assert job["estimated_start_s"] is None and job["queue_position"] == 1

    agent = FakeAgent(coordinator)  # installs no packages (no `deps` in its hello)
    assert agent.recv_type("job")["job_id"] == lonely
    with_packages = coordinator.submit("print('pkg')", requirements=["greeter==1.0"])
    job = waiting_for(coordinator, with_packages, WaitingReason.NO_PACKAGES)
    assert job["estimated_start_s"] is None

    plain = coordinator.submit("print('plain')")
    job = waiting_for(coordinator, plain, WaitingReason.ALL_BUSY)
    assert job["queue_position"] == 2
    # One job started a moment ago: a rate, so an estimate (a number of seconds).
    assert isinstance(job["estimated_start_s"], float) and job["estimated_start_s"] > 0
    listed = {j["id"]: j for j in coordinator.api("GET", "/api/v1/jobs").json()["jobs"]}
    assert listed[plain]["waiting_reason"] == WaitingReason.ALL_BUSY.value
    assert listed[lonely]["waiting_reason"] is None  # it runs

    pause(agent, "paused", "gaming")
    job = waiting_for(coordinator, plain, WaitingReason.ALL_PAUSED)
    assert job["estimated_start_s"] is None
    agent.close()


def test_the_follow_socket_tells_a_queued_job_why_it_waits(coordinator: Coordinator) -> None:
    """A follower of a queued job gets a status with its waiting reason, and a new one when
    a contributor joins, pauses, and the reason changes."""
    agent = FakeAgent(coordinator)
    pause(agent, "paused", "lunch")
    coordinator.wait_for_contributor(agent.node_id, "paused")
    job_id = coordinator.submit("print('x')")
    with connect(f"{coordinator.ws_url}/api/v1/jobs/{job_id}/follow") as follower:

        def next_reason() -> str | None:
            while True:
                message = json.loads(follower.recv(timeout=20))
                if message["type"] == "status":
                    reason: str | None = message["job"]["waiting_reason"]
                    return reason

        assert next_reason() == WaitingReason.ALL_PAUSED.value
        agent.close()
        assert next_reason() == WaitingReason.NO_CONTRIBUTOR.value


def test_the_cli_shows_states_reasons_and_why_a_job_waits(coordinator: Coordinator) -> None:
    """`compound contributors` shows a paused contributor's reason; `compound status` and
    `compound jobs` show why a queued job waits."""
    agent = FakeAgent(coordinator)
    pause(agent, "paused", "on battery")
    coordinator.wait_for_contributor(agent.node_id, "paused")
    job_id = coordinator.submit("print('x')")
    waiting_for(coordinator, job_id, WaitingReason.ALL_PAUSED)

    listing = run_cli("contributors", coordinator=coordinator)
    assert listing.returncode == 0, listing.stderr
    assert "paused (on battery)" in listing.stdout.decode()

    status = run_cli("status", job_id, coordinator=coordinator)
    assert status.returncode == 0, status.stderr
    text = " ".join(status.stdout.decode().split())
    assert f"waiting {WaitingReason.ALL_PAUSED.value}" in text

    jobs = run_cli("jobs", coordinator=coordinator)
    words = " ".join(jobs.stdout.decode().split())  # a narrow terminal wraps the cell
    assert "queued: all contributors" in words and "paused or outside their hours" in words
    agent.close()
    coordinator.wait_for_contributor(agent.node_id, "offline")
    listing = run_cli("contributors", coordinator=coordinator)
    assert "offline (was paused: on battery)" in listing.stdout.decode()


def test_the_pages_show_a_paused_contributor_and_why_a_job_waits(
    coordinator: Coordinator, page: Page
) -> None:
    """In a real browser, the contributors page shows a paused contributor's state and
    reason, and the submitter page why the followed job is still queued."""
    agent = FakeAgent(coordinator)
    pause(agent, "paused", "on battery <b>now</b>")
    coordinator.wait_for_contributor(agent.node_id, "paused")
    page.goto(coordinator.url + "/contributors.html")
    row = page.locator(
        f"[data-testid=contributors-table] tr[data-contributor-id='{agent.node_id}']"
    )
    expect(row.get_by_test_id("contributor-state")).to_have_text("Paused")
    # The agent's words are text, never markup.
    expect(row.get_by_test_id("contributor-reason")).to_have_text("on battery <b>now</b>")

    job_id = coordinator.submit("print('x')")
    page.goto(f"{coordinator.url}/submitter.html?job={job_id}")
    expect(page.get_by_test_id("job-waiting")).to_have_text(WaitingReason.ALL_PAUSED.value)
    agent.close()
