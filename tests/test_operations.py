"""What an operator runs on: /metrics, JSON logs, the audit trail and backups, against real
coordinators with fake contributors over real sockets (no Docker)."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fake_agent import FakeAgent, job_with_output
from support import Coordinator, product_env, wait_until


def _scrape(coordinator: Coordinator, **kwargs: object) -> dict[tuple[str, tuple[str, ...]], float]:
    response = coordinator.api("GET", "/metrics", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.values()))] = sample.value
    return samples


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compound", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=product_env(),
    )


def test_metrics_move_as_jobs_pass(coordinator: Coordinator) -> None:
    """A scrape during a run shows the counters and the gauges move as jobs pass."""
    before = _scrape(coordinator)
    assert before["compound_jobs_submitted_total", ()] == 0
    assert before["compound_jobs_queued", ()] == 0
    queued = [coordinator.submit("print(1)") for _ in range(2)]
    waiting = _scrape(coordinator)
    assert waiting["compound_jobs_submitted_total", ()] == 2
    assert waiting["compound_jobs_queued", ()] == 2
    assert waiting["compound_oldest_queued_job_age_seconds", ()] > 0
    agent = FakeAgent(coordinator)
    try:
        job = agent.recv_type("job")
        running = _scrape(coordinator)
        assert running["compound_jobs_queued", ()] == 1
        assert running["compound_contributors", ("active",)] == 1
        assert running["compound_slots", ("busy",)] == 1
        assert running["compound_connections_open", ("websocket",)] >= 1
        assert running["compound_job_queue_wait_seconds_count", ()] == 1
        agent.run(job, [("stdout", "hello\n"), ("stderr", "world\n")])
        coordinator.wait_for_status(job["job_id"], {"succeeded"}, timeout_s=30)
        second = agent.recv_type("job")
        agent.send({"type": "done", **_failure(second)})
        coordinator.wait_for_status(second["job_id"], {"failed"}, timeout_s=30)
    finally:
        agent.close()
    assert {job["job_id"], second["job_id"]} == set(queued)
    after = _scrape(coordinator)
    assert after["compound_jobs_finished_total", ("succeeded",)] == 1
    assert after["compound_jobs_finished_total", ("failed",)] == 1
    assert after["compound_jobs_queued", ()] == 0
    assert after["compound_oldest_queued_job_age_seconds", ()] == 0
    assert after["compound_log_records_total", ()] == 2
    assert after["compound_log_bytes_total", ()] == len("hello\nworld\n")
    assert after["compound_job_run_seconds_count", ()] == 2
    assert after["compound_http_requests_total", ()] > before["compound_http_requests_total", ()]
    refused = coordinator.api("GET", "/api/v1/jobs?limit=0")
    assert refused.status_code == 422
    assert _scrape(coordinator)["compound_refusals_total", ("invalid",)] == 1
    # No job or contributor id is a label.
    text = coordinator.api("GET", "/metrics").text
    assert job["job_id"] not in text and agent.node_id not in text


def _failure(job: dict[str, object]) -> dict[str, object]:
    return {
        "job_id": job["job_id"],
        "lease_id": job["lease_id"],
        "status": "failed",
        "exit_code": 3,
        "last_seq": int(job["first_seq"]) - 1,  # type: ignore[call-overload]
    }


def test_metrics_need_an_admin_token_off_loopback(tmp_path: Path) -> None:
    """With tokens, an admin token may scrape; the rule lets loopback clients in without one."""
    data_dir = tmp_path / "coordinator"
    admin = _cli("token", "create", "--data-dir", str(data_dir), "--role", "admin", "--name", "a")
    assert admin.returncode == 0, admin.stderr
    coordinator = Coordinator(data_dir=data_dir).start()
    try:
        token = admin.stdout.strip()
        samples = _scrape(coordinator, headers={"Authorization": f"Bearer {token}"})
        assert ("compound_jobs_submitted_total", ()) in samples
        assert coordinator.api("GET", "/metrics").status_code == 200  # loopback
    finally:
        coordinator.stop()
    from starlette.requests import Request

    from compound.coordinator.routes.metrics_route import _may_scrape
    from compound.coordinator.storage.tokens import Principal
    from compound.protocol.auth import Role

    def request(client: str, principal: Principal | None) -> Request:
        scope = {"type": "http", "client": (client, 1), "headers": []}
        if principal is not None:
            scope["compound.principal"] = principal
        return Request(scope)

    assert _may_scrape(request("127.0.0.1", None))
    assert not _may_scrape(request("192.0.2.7", None))
    assert not _may_scrape(request("192.0.2.7", Principal("s", Role.SUBMITTER)))
    assert _may_scrape(request("192.0.2.7", Principal("a", Role.ADMIN)))


def test_json_logs_parse_line_by_line(tmp_path: Path) -> None:
    """With --log-format json every log line is one JSON object, ids as fields."""
    coordinator = Coordinator(data_dir=tmp_path / "c", extra_args=["--log-format", "json"]).start()
    try:
        agent = FakeAgent(coordinator)
        agent.close()
        coordinator.output.wait_for(
            lambda line: "disconnected" in line, 30, "the contributor's disconnection"
        )
    finally:
        coordinator.stop()
    lines = [
        line
        for line in coordinator.output.lines
        if line and not line.startswith("Compound coordinator listening on")
    ]
    parsed = [json.loads(line) for line in lines]
    assert all({"ts", "level", "logger", "message"} <= set(entry) for entry in parsed)
    assert any(entry.get("contributor_id") == agent.node_id for entry in parsed), parsed
    assert any(entry["logger"].startswith("uvicorn") for entry in parsed), parsed


def test_audit_lists_tokens_created_revoked_and_cancels(tmp_path: Path) -> None:
    """The trail lists a token created and revoked, and an admin's cancel of another's job."""
    data_dir = tmp_path / "coordinator"
    tokens = {}
    for role, name in (("admin", "ops"), ("submitter", "alice"), ("submitter", "bob")):
        made = _cli("token", "create", "--data-dir", str(data_dir), "--role", role, "--name", name)
        assert made.returncode == 0, made.stderr
        tokens[name] = made.stdout.strip()
    assert _cli("token", "revoke", "bob", "--data-dir", str(data_dir)).returncode == 0
    coordinator = Coordinator(data_dir=data_dir).start()
    try:
        alice = {"Authorization": f"Bearer {tokens['alice']}"}
        admin = {"Authorization": f"Bearer {tokens['ops']}"}
        job_id = coordinator.api(
            "POST", "/api/v1/jobs", json={"script": "print(1)"}, headers=alice
        ).json()["id"]
        own = coordinator.api("POST", f"/api/v1/jobs/{job_id}/cancel", headers=alice)
        assert own.status_code == 202
        second = coordinator.api(
            "POST", "/api/v1/jobs", json={"script": "print(2)"}, headers=alice
        ).json()["id"]
        assert (
            coordinator.api("POST", f"/api/v1/jobs/{second}/cancel", headers=admin).status_code
            == 202
        )
        assert coordinator.api("GET", "/api/v1/audit", headers=alice).status_code == 403
        answer = coordinator.api("GET", "/api/v1/audit", headers=admin)
        assert answer.status_code == 200, answer.text
        over_api = [(e["action"], e["target"]) for e in answer.json()["entries"]]
    finally:
        coordinator.stop()
    expected = [
        ("token.create", "ops"),
        ("token.create", "alice"),
        ("token.create", "bob"),
        ("token.revoke", "bob"),
        ("job.cancel", second),  # alice's own cancel is not an admin action
    ]
    assert over_api == expected
    listed = _cli("admin", "audit", "--data-dir", str(data_dir), "--json")
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(e["action"], e["target"]) for e in entries] == expected
    assert entries[-1]["actor"] == "ops"
    assert entries[0]["actor"].startswith("command line")
    table = _cli("admin", "audit", "--data-dir", str(data_dir))
    assert "token.revoke" in table.stdout and "bob" in table.stdout


def _input_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"input bytes\n"
        info = tarfile.TarInfo("data.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_backup_under_load_restores_the_same_jobs_and_logs(tmp_path: Path) -> None:
    """A backup taken while jobs run restores to a coordinator listing the same jobs and logs."""
    source = Coordinator(data_dir=tmp_path / "source").start()
    backup_dir = tmp_path / "backup"
    try:
        finished_before = [
            job_with_output(source, [("stdout", f"line {n}\n") for n in range(50)])
            for _ in range(3)
        ]
        tar = _input_tar()
        upload = source.api("PUT", "/api/v1/inputs", content=tar)
        assert upload.status_code == 201, upload.text
        sha256 = hashlib.sha256(tar).hexdigest()
        with_inputs = source.api(
            "POST",
            "/api/v1/jobs",
            json={"script": "print(1)", "inputs": {"sha256": sha256, "size": len(tar)}},
        ).json()["id"]
        stop = threading.Event()
        load = threading.Thread(target=_keep_running_jobs, args=(source, stop), daemon=True)
        load.start()
        wait_until(
            lambda: len(source.api("GET", "/api/v1/jobs?limit=1000").json()["jobs"]) > 8, 60, "load"
        )
        taken = _cli("admin", "backup", str(backup_dir), "--data-dir", str(source.data_dir))
        assert taken.returncode == 0, taken.stderr
        stop.set()
        load.join(60)
        original_jobs = {
            job["id"]: job for job in source.api("GET", "/api/v1/jobs?limit=1000").json()["jobs"]
        }
        original_logs = {job_id: source.logs(job_id) for job_id in original_jobs}
    finally:
        source.stop()
    assert (backup_dir / "blobs" / sha256[:2] / sha256).read_bytes() == tar
    check = sqlite3.connect(backup_dir / "compound.sqlite3")
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    restored = Coordinator(data_dir=backup_dir).start()
    try:
        jobs = {
            job["id"]: job for job in restored.api("GET", "/api/v1/jobs?limit=1000").json()["jobs"]
        }
        assert set(finished_before) | {with_inputs} <= set(jobs)
        assert set(jobs) <= set(original_jobs)
        for job_id, job in jobs.items():
            logs = restored.logs(job_id)
            if job["status"] in ("succeeded", "failed"):
                # Ended before the copy: its log can no longer change.
                assert logs == original_logs[job_id], job_id
            else:
                assert logs == original_logs[job_id][: len(logs)], job_id
        assert restored.job(finished_before[0])["status"] == "succeeded"
        assert len(restored.logs(finished_before[0])) == 50
    finally:
        restored.stop()


def _keep_running_jobs(coordinator: Coordinator, stop: threading.Event) -> None:
    """A contributor finishing job after job, each with output, until ``stop``."""
    agent = FakeAgent(coordinator)
    try:
        while not stop.is_set():
            coordinator.submit("print('load')")
            job = agent.recv_type("job")
            agent.run(job, [("stdout", f"record {n}\n") for n in range(20)])
    except (httpx.HTTPError, OSError):
        pass
    finally:
        agent.close()
