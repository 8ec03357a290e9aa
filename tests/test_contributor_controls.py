"""The contributor page's lending controls in a real browser (Debian's Chromium), against the
real desktop app server (`compound app --serve-only`), a real agent and real containers:
pause freezes a running job and resume continues it, idle-only set on the page pauses the
agent (and freezes its job) while a CPU hog outside the sandbox runs, hours that exclude now
pause the agent with the reason shown, how long the machine stays calm before lending again
is set and kept (junk refused), the CLI and the page control the same agent, and another
origin's POST to the controls is refused."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from compound.agent.default_share import Machine, default_lending
from compound.agent.runners.base import Limits
from support import Coordinator, run_cli, wait_until
from test_agent_controls import COUNTER, counted, cpu_hog, idle_threshold, paused_in_docker
from test_contributor_page import UI_TIMEOUT_MS, ServedApp, expect_connected, serve_app

# The agent keeps heartbeating while paused; a long lease keeps these tests free of races.
LEASE_TIMEOUT_S = 60.0
# The app starts its agent with the defaults: a look every 2 s, and lending again once the
# machine stayed idle for 30 s (a burst of other work on a shared machine starts that over).
IDLE_RESUME_MS = 150_000


@pytest.fixture
def patient(tmp_path: Path) -> Iterator[Coordinator]:
    server = Coordinator(
        data_dir=tmp_path / "patient", lease_timeout_s=LEASE_TIMEOUT_S, extra_args=[]
    ).start()
    yield server
    server.stop()


@pytest.fixture
def app(docker_engine: str, patient: Coordinator, tmp_path: Path) -> Iterator[ServedApp]:
    served = serve_app(patient, tmp_path / "config")
    yield served
    served.stop()


def contribute(page: Page, app: ServedApp) -> None:
    """Open the contributor page in the app and start its agent."""
    page.goto(app.url)
    page.goto(app.base_url + "/contributor.html")
    page.get_by_test_id("agent-toggle").click()
    expect_connected(page)
    expect(page.get_by_test_id("lending-state")).to_have_text("Active", timeout=UI_TIMEOUT_MS)


def cli_status(app: ServedApp) -> dict[str, Any]:
    done = run_cli("agent", "status", "--json", "--state-dir", str(app.config_dir / "agent"))
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.timeout(180)
def test_pause_on_the_page_freezes_the_job_and_resume_continues_it(
    app: ServedApp, patient: Coordinator, page: Page
) -> None:
    """Pause: the job's container is paused in Docker, it prints nothing, the page says the
    agent is paused by its donor and the job frozen; Resume: it counts on."""
    contribute(page, app)
    job_id = patient.submit(COUNTER, timeout_s=150)
    wait_until(lambda: counted(patient, job_id) >= 3, 60, "the job counting")
    jobs = page.get_by_test_id("agent-jobs")
    expect(jobs).to_contain_text(job_id, timeout=UI_TIMEOUT_MS)

    page.get_by_test_id("agent-pause").click()
    expect(page.get_by_test_id("lending-state")).to_have_text("Paused")
    expect(page.get_by_test_id("lending-reason")).to_have_text("paused by its donor")
    expect(page.get_by_test_id("controls-message")).to_contain_text("Paused")
    wait_until(lambda: paused_in_docker(job_id), 10, "the container paused")
    frozen = page.get_by_test_id("agent-job").filter(has_text=job_id)
    expect(frozen).to_have_attribute("data-frozen", "true", timeout=UI_TIMEOUT_MS)
    expect(frozen).to_contain_text("frozen")
    expect(page.get_by_test_id("job-title")).to_have_text("Job frozen (paused)")
    assert cli_status(app)["lending"] == "paused"
    time.sleep(1.0)  # what was printed before the freeze reaches the coordinator
    frozen_at = counted(patient, job_id)
    time.sleep(1.5)
    assert counted(patient, job_id) == frozen_at, "the job ran while paused"

    page.get_by_test_id("agent-resume").click()
    expect(page.get_by_test_id("lending-state")).to_have_text("Active")
    expect(page.get_by_test_id("lending-reason")).to_have_text("takes jobs")
    wait_until(lambda: counted(patient, job_id) > frozen_at + 3, 30, "the job counting again")
    assert not paused_in_docker(job_id)
    expect(frozen).to_have_attribute("data-frozen", "false", timeout=UI_TIMEOUT_MS)
    expect(page.get_by_test_id("job-title")).to_have_text("Running a job")
    run_cli("cancel", job_id, coordinator=patient)


def machine_cpu_percent(page: Page) -> int | None:
    """The machine's own CPU use as the idle-only row shows it, None before a reading."""
    match = re.search(r"(\d+)%", page.get_by_test_id("donor-idle-cpu-percent-reading").inner_text())
    return int(match.group(1)) if match else None


@pytest.mark.timeout(360)
def test_idle_only_set_on_the_page_pauses_while_a_cpu_hog_runs(
    app: ServedApp, patient: Coordinator, page: Page
) -> None:
    """Only when idle, set on the page: a busy loop on every core outside the sandbox pauses
    the agent with the reason and freezes its job (it prints nothing); once the hog has ended
    and the machine stayed idle, it lends again and the job counts on."""
    # Headless Chromium composites in software: the page's endless pulses over its blurred
    # panels would cost most of a core, itself "the donor using the machine". A donor's
    # reduced-motion preference stops them (with a GPU they cost next to nothing).
    page.emulate_media(reduced_motion="reduce")
    contribute(page, app)
    job_id = patient.submit(COUNTER, timeout_s=200)
    wait_until(lambda: counted(patient, job_id) >= 3, 60, "the job counting")
    threshold = idle_threshold()
    idle = page.get_by_test_id("donor-idle-cpu-percent")
    expect(idle).to_have_value("off", timeout=UI_TIMEOUT_MS)
    idle.fill(str(threshold))
    idle.press("Enter")
    expect(page.get_by_test_id("donor-idle-cpu-percent-current")).to_have_text(f"now {threshold}")
    state = page.get_by_test_id("lending-state")
    expect(state).to_have_text("Active")
    wait_until(
        lambda: (used := machine_cpu_percent(page)) is not None and used <= threshold,
        30,
        "the page showing an idle machine",
    )
    frozen = page.get_by_test_id("agent-job").filter(has_text=job_id)
    with cpu_hog():
        expect(state).to_have_text("Paused", timeout=UI_TIMEOUT_MS)
        expect(page.get_by_test_id("lending-reason")).to_have_text(
            f"its donor is using the machine (CPU over {threshold}%)"
        )
        wait_until(lambda: paused_in_docker(job_id), 10, "the container paused")
        expect(frozen).to_have_attribute("data-frozen", "true", timeout=UI_TIMEOUT_MS)
        expect(page.get_by_test_id("job-title")).to_have_text("Job frozen (paused)")
        wait_until(
            lambda: (used := machine_cpu_percent(page)) is not None and used > threshold,
            UI_TIMEOUT_MS / 1000,
            "the page showing the hog's CPU use",
        )
        time.sleep(1.0)  # what was printed before the freeze reaches the coordinator
        frozen_at = counted(patient, job_id)
        time.sleep(1.5)
        assert counted(patient, job_id) == frozen_at, "the job ran while paused"
    expect(state).to_have_text("Active", timeout=IDLE_RESUME_MS)
    expect(page.get_by_test_id("lending-reason")).to_have_text("takes jobs")
    wait_until(lambda: counted(patient, job_id) > frozen_at + 3, 30, "the job counting again")
    expect(frozen).to_have_attribute("data-frozen", "false", timeout=UI_TIMEOUT_MS)
    assert cli_status(app)["settings"]["idle-cpu-percent"] == str(threshold)
    run_cli("cancel", job_id, coordinator=patient)


@pytest.mark.timeout(180)
def test_hours_set_on_the_page_pause_the_agent_with_the_reason(
    app: ServedApp, patient: Coordinator, page: Page
) -> None:
    """Hours that exclude now pause the agent (the page shows why, no job comes); a bad value
    is refused with a sentence; always lifts it; a pause from the CLI shows on the page."""
    contribute(page, app)
    hours = page.get_by_test_id("donor-hours")
    expect(hours).to_have_value("always", timeout=UI_TIMEOUT_MS)
    # The app starts its agent with no --slots: the machine's default (agent/default_share).
    slots = default_lending(Machine.here(), Limits()).slots
    expect(page.get_by_test_id("donor-slots-current")).to_have_text(f"now {slots} (default)")

    hours.fill("9 to 5")
    page.get_by_test_id("donor-hours-apply").click()
    message = page.get_by_test_id("controls-message")
    expect(message).to_contain_text("HH:MM-HH:MM")
    expect(hours).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("lending-state")).to_have_text("Active")

    start = (time.localtime().tm_hour + 2) % 24
    window = f"{start:02d}:00-{(start + 1) % 24:02d}:00"
    hours.fill(window)
    hours.press("Enter")
    expect(page.get_by_test_id("lending-state")).to_have_text("Paused")
    expect(page.get_by_test_id("lending-reason")).to_have_text(f"outside its hours ({window})")
    expect(page.get_by_test_id("donor-hours-current")).to_have_text(f"now {window}")
    state = cli_status(app)
    assert state["lending"] == "paused" and state["settings"]["hours"] == window
    job_id = patient.submit("print(1)")
    time.sleep(1.0)
    assert patient.job(job_id)["status"] == "queued"

    page.get_by_test_id("donor-slots").fill("2")
    page.get_by_test_id("donor-slots-apply").click()
    expect(page.get_by_test_id("donor-slots-current")).to_have_text("now 2")
    page.get_by_test_id("donor-on-battery").select_option("pause")
    page.get_by_test_id("donor-on-battery-apply").click()
    expect(page.get_by_test_id("donor-on-battery-current")).to_have_text("now pause")

    hours.fill("always")
    page.get_by_test_id("donor-hours-apply").click()
    expect(page.get_by_test_id("lending-state")).to_have_text("Active")
    patient.wait_for_status(job_id, {"succeeded"}, timeout_s=60)

    state_dir = str(app.config_dir / "agent")
    assert run_cli("agent", "pause", "--state-dir", state_dir).returncode == 0
    expect(page.get_by_test_id("lending-state")).to_have_text("Paused")
    expect(page.get_by_test_id("lending-reason")).to_have_text("paused by its donor")
    assert run_cli("agent", "resume", "--state-dir", state_dir).returncode == 0
    expect(page.get_by_test_id("lending-state")).to_have_text("Active")


@pytest.mark.timeout(180)
def test_resume_after_calm_set_on_the_page_is_kept(app: ServedApp, page: Page) -> None:
    """Resume after calm (seconds): junk is refused with the sentence and the old value stays;
    120 is acknowledged, shown, kept in donor.json and listed by the CLI."""
    contribute(page, app)
    calm = page.get_by_test_id("donor-idle-resume-s")
    current = page.get_by_test_id("donor-idle-resume-s-current")
    message = page.get_by_test_id("controls-message")
    expect(current).to_have_text("now 30 (default)", timeout=UI_TIMEOUT_MS)
    expect(calm).to_have_value("default")

    calm.fill("120")
    calm.press("Enter")
    expect(current).to_have_text("now 120")
    expect(message).to_contain_text("idle-resume-s set to 120")
    expect(calm).not_to_have_attribute("aria-invalid", "true")

    calm.fill("-5")
    page.get_by_test_id("donor-idle-resume-s-apply").click()
    expect(message).to_contain_text("seconds from 0 to 3600, or default")
    expect(calm).to_have_attribute("aria-invalid", "true")
    expect(current).to_have_text("now 120")
    assert cli_status(app)["settings"]["idle-resume-s"] == "120"
    kept = json.loads((app.config_dir / "agent" / "donor.json").read_text())
    assert kept["idle-resume-s"] == "120"


class _AttackerPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>elsewhere</title><p>another site on this machine</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_origin() -> Iterator[str]:
    """A page on another 127.0.0.1 port: same site as the app (its cookie goes along)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(120)
def test_another_origin_cannot_use_the_controls(
    app: ServedApp, page: Page, other_origin: str
) -> None:
    """A POST to the controls from another origin (its cookie sent along), or without JSON,
    is refused and the agent keeps lending; the page's own POST is taken."""
    contribute(page, app)
    page.goto(other_origin)
    sent = page.evaluate(
        """async (base) => {
            const sent = [];
            for (const path of ["pause", "drain", "set"]) {
                for (const type of ["text/plain", "application/json"]) {
                    try {
                        await fetch(`${base}/local/api/agent/${path}`, {
                            method: "POST", mode: "no-cors", credentials: "include",
                            headers: { "Content-Type": type },
                            body: JSON.stringify({ key: "hours", value: "00:00-00:01" }),
                        });
                        sent.push(path);
                    } catch { /* refused before it left: also fine */ }
                }
            }
            return sent;
        }""",
        app.base_url,
    )
    assert sent, "the browser sent none of the cross-origin requests"
    state = cli_status(app)
    assert state["lending"] == "active" and state["settings"]["hours"] == "always"

    request = page.request
    url = app.base_url + "/local/api/agent/pause"
    foreign = request.post(url, headers={"Origin": other_origin}, data={})
    assert foreign.status == 403
    cross_site = request.post(url, headers={"Sec-Fetch-Site": "same-site"}, data={})
    assert cross_site.status == 403
    plain = request.post(url, headers={"Content-Type": "text/plain"}, data="{}")
    assert plain.status == 415
    assert cli_status(app)["lending"] == "active"

    own = request.post(url, headers={"Origin": app.base_url}, data={})
    assert own.status == 200, own.text()
    assert own.json()["status"]["lending"] == "paused"
    assert cli_status(app)["lending"] == "paused"
