"""What one submitter may store, against a real coordinator with tokens on: jobs, scripts,
logs, uploads and output files count per submitter, the global caps are shared fairly, and
retention gives the database's space back. Small caps set by flags keep each test fast.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from compound.coordinator.storage import usage
from fake_agent import FakeAgent
from files_support import sha256, start_secured, tar_of
from support import Coordinator, wait_until
from test_auth import bearer

pytestmark = pytest.mark.timeout(120)

KiB = 1024
MiB = 1024 * KiB


def big_script(kib: int, tag: str) -> str:
    """A script of about ``kib`` KiB, distinct per ``tag``."""
    return f"# {tag}\n# " + "x" * (kib * KiB) + "\nprint(1)\n"


def submit(server: Coordinator, token: str, script: str = "print(1)") -> httpx.Response:
    return server.api("POST", "/api/v1/jobs", json={"script": script}, headers=bearer(token))


def fill(server: Coordinator, token: str, kib: int, most: int = 200) -> tuple[list[str], str]:
    """Submit ``kib`` KiB scripts as ``token`` until one is refused: the accepted job ids and
    the refusal's sentence (which must be a 429)."""
    accepted: list[str] = []
    for number in range(most):
        response = submit(server, token, big_script(kib, f"{token[:8]}-{number}"))
        if response.status_code != 201:
            assert response.status_code == 429, response.text
            detail: str = response.json()["detail"]
            assert "\n" not in detail
            return accepted, detail
        accepted.append(response.json()["id"])
    raise AssertionError(f"no quota refused {most} submissions of {kib} KiB")


def database_bytes(data_dir: Path) -> int:
    """The database file and its write-ahead log, on disk."""
    path = data_dir / "compound.sqlite3"
    return sum(
        os.stat(f"{path}{suffix}").st_size
        for suffix in ("", "-wal")
        if os.path.exists(f"{path}{suffix}")
    )


def upload(server: Coordinator, token: str, data: bytes) -> httpx.Response:
    headers = {**bearer(token), "X-Compound-SHA256": sha256(data)}
    return server.api("PUT", "/api/v1/inputs", content=data, headers=headers)


# ---------------------------------------------------------------- jobs and the database


def test_one_submitter_filling_the_database_does_not_lock_out_another(tmp_path: Path) -> None:
    """alice alone fills the shared --max-db-mib with large scripts and gets 429, naming her
    share; bob, storing nothing, still submits (his fair share is free)."""
    server, tokens = start_secured(tmp_path / "coordinator", ["--max-db-mib", "2"])
    try:
        accepted, detail = fill(server, tokens["alice"], 300)
        assert 3 <= len(accepted) <= 8, len(accepted)
        assert "database is at its 2 MiB limit" in detail and "your share" in detail, detail
        response = submit(server, tokens["bob"], big_script(300, "bob"))
        assert response.status_code == 201, response.text
        assert submit(server, tokens["alice"]).status_code == 429
    finally:
        server.stop()


def test_per_submitter_quotas_on_database_bytes_and_jobs(tmp_path: Path) -> None:
    """Past --max-db-mib-per-submitter (scripts) or --max-jobs-per-submitter (kept jobs) a
    submitter gets 429 with a sentence naming its quota; another submitter is unaffected."""
    server, tokens = start_secured(
        tmp_path / "coordinator",
        ["--max-db-mib-per-submitter", "1", "--max-jobs-per-submitter", "5"],
    )
    try:
        accepted, detail = fill(server, tokens["alice"], 300)
        assert len(accepted) == 3
        assert "of your 1 MiB quota" in detail, detail
        for _ in range(5):
            assert submit(server, tokens["bob"]).status_code == 201
        refused = submit(server, tokens["bob"])
        assert refused.status_code == 429
        assert "you have 5 jobs stored" in refused.json()["detail"]
    finally:
        server.stop()


def test_retention_gives_the_space_back_and_the_submitter_may_submit_again(
    tmp_path: Path,
) -> None:
    """Once retention removed alice's cancelled jobs, their scripts are gone, the database
    file with its WAL shrinks on disk, and alice's submissions are accepted again."""
    data_dir = tmp_path / "coordinator"
    days = str(1.0 / 86400)  # one second
    server, tokens = start_secured(
        data_dir,
        ["--max-db-mib", "2", "--retention-days", days, "--retention-sweep-s", "0.2"],
    )
    try:
        accepted, _detail = fill(server, tokens["alice"], 400)
        peak = database_bytes(data_dir)
        assert peak > len(accepted) * 400 * KiB
        for job_id in accepted:
            cancelled = server.api(
                "POST", f"/api/v1/jobs/{job_id}/cancel", headers=bearer(tokens["alice"])
            )
            assert cancelled.status_code == 202, cancelled.text
        wait_until(
            lambda: database_bytes(data_dir) < peak // 3,
            30,
            f"the database ({database_bytes(data_dir)} bytes, was {peak}) to shrink",
        )
        job = server.api("GET", f"/api/v1/jobs/{accepted[0]}", headers=bearer(tokens["alice"]))
        assert job.json()["files_removed_at"] is not None
        response = submit(server, tokens["alice"], big_script(400, "again"))
        assert response.status_code == 201, response.text
    finally:
        server.stop()


def test_a_submitters_logs_stop_at_its_quota(tmp_path: Path) -> None:
    """Log bytes count against the job owner's database quota: past it one note says so and
    the rest of the job's output is acknowledged but not stored."""
    server, tokens = start_secured(tmp_path / "coordinator", ["--max-db-mib-per-submitter", "1"])
    try:
        response = submit(server, tokens["alice"])
        assert response.status_code == 201
        agent = FakeAgent(server, token=tokens["worker"])
        job = agent.recv_type("job")
        line = "y" * (60 * KiB) + "\n"
        for start in range(0, 32, 4):
            agent.log(job, list(range(start, start + 4)), data=line)
            assert agent.recv_type("ack")["seq"] == start + 3
        agent.done(job, last_seq=31)
        assert agent.recv_type("ack").get("done")
        records = logs_of(server, tokens["alice"], job["job_id"])
        stored = sum(len(r["data"]) for r in records if r["stream"] == "stdout")
        assert stored <= MiB
        assert any("of your 1 MiB quota" in r["data"] for r in records if r["stream"] == "system")
        agent.close()
    finally:
        server.stop()


def logs_of(server: Coordinator, token: str, job_id: str) -> list[dict[str, Any]]:
    page = server.api("GET", f"/api/v1/jobs/{job_id}/logs", headers=bearer(token)).json()
    records: list[dict[str, Any]] = page["records"]
    return records


# ---------------------------------------------------------------- files


def test_uploads_and_outputs_past_a_submitters_file_quota_are_refused(tmp_path: Path) -> None:
    """Past --max-files-mib-per-submitter an upload, and a job's output files, get 413 with
    a sentence naming the quota; the same bytes again cost nothing; another submitter's
    uploads and outputs still pass."""
    server, tokens = start_secured(tmp_path / "coordinator", ["--max-files-mib-per-submitter", "1"])
    try:
        first = os.urandom(600 * KiB)
        assert upload(server, tokens["alice"], first).status_code == 201
        refused = upload(server, tokens["alice"], os.urandom(600 * KiB))
        assert refused.status_code == 413
        assert "you may still store" in refused.json()["detail"], refused.text
        assert upload(server, tokens["alice"], first).status_code == 201  # already hers
        assert upload(server, tokens["bob"], os.urandom(600 * KiB)).status_code == 201

        agent = FakeAgent(server, token=tokens["worker"])
        outputs = tar_of({"out.bin": os.urandom(600 * KiB)})
        assert submit(server, tokens["alice"]).status_code == 201
        job = agent.recv_type("job")
        over = put_outputs(server, tokens["worker"], job, outputs)
        assert over.status_code == 413
        assert "do not fit" in over.json()["detail"] and "quota" in over.json()["detail"]
        agent.done(job, last_seq=-1)
        assert submit(server, tokens["bob"]).status_code == 201
        job = agent.recv_type("job")
        passed = put_outputs(server, tokens["worker"], job, tar_of({"o.bin": os.urandom(KiB)}))
        assert passed.status_code == 201, passed.text
        agent.close()
    finally:
        server.stop()


def test_the_shared_file_cap_refuses_the_heaviest_uploader_first(tmp_path: Path) -> None:
    """alice alone fills the shared --max-files-mib and gets 413 naming her share; bob, with
    nothing stored, still uploads within his share."""
    server, tokens = start_secured(tmp_path / "coordinator", ["--max-files-mib", "2"])
    try:
        accepted = 0
        while (
            response := upload(server, tokens["alice"], os.urandom(600 * KiB))
        ).status_code == 201:
            accepted += 1
            assert accepted < 10
        assert response.status_code == 413
        assert accepted == 3
        assert "your share" in response.json()["detail"], response.text
        assert upload(server, tokens["bob"], os.urandom(600 * KiB)).status_code == 201
    finally:
        server.stop()


def put_outputs(
    server: Coordinator, token: str, job: dict[str, Any], data: bytes
) -> httpx.Response:
    return server.api(
        "PUT",
        f"/api/v1/jobs/{job['job_id']}/artifacts",
        content=data,
        headers={
            **bearer(token),
            "X-Compound-Lease": job["lease_id"],
            "X-Compound-SHA256": sha256(data),
        },
    )


# ---------------------------------------------------------------- the rule alone


def test_the_fair_share_rule() -> None:
    """Under the cap an owner is bounded by its own quota; past it, by its share of the cap
    among the owners storing something, so the heaviest is refused and a newcomer is not."""
    rule = partial(usage.room, own_limit=10 * MiB, cap=8 * MiB, what="x", store="database")
    assert rule(held_bytes=0, total_bytes=0, holders=1).bytes == 8 * MiB
    assert rule(held_bytes=2 * MiB, total_bytes=2 * MiB, holders=1).bytes == 6 * MiB
    # The cap reached by one owner: it is refused, a newcomer gets half the cap.
    heavy = rule(held_bytes=8 * MiB, total_bytes=8 * MiB, holders=2)
    assert heavy.bytes <= 0 and "your share being 4 MiB" in heavy.reason
    assert rule(held_bytes=0, total_bytes=8 * MiB, holders=2).bytes == 4 * MiB
    own = usage.room(
        held_bytes=MiB, own_limit=MiB, total_bytes=MiB, cap=8 * MiB, holders=1, what="x", store="y"
    )
    assert own.bytes == 0 and "of your 1 MiB quota" in own.reason
