"""`compound submit --input/--outputs` and `compound artifacts` against a real coordinator.

The contributor is a scripted peer that fetches the inputs the way the agent does and
returns output files, so the CLI's packing, upload, checks and downloads are tested whole
without the container side.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from fake_agent import FakeAgent
from files_support import return_outputs, sha256
from support import Coordinator, product_env, run_cli

pytestmark = pytest.mark.timeout(90)


def fetch_inputs(server: Coordinator, job: dict[str, Any]) -> dict[str, bytes]:
    """The job's inputs as the lease holder gets them: name -> bytes of each file (folders
    as names ending in /)."""
    response = server.api(
        "GET",
        f"/api/v1/jobs/{job['job_id']}/inputs",
        headers={"X-Compound-Lease": job["lease_id"]},
    )
    assert response.status_code == 200, response.text
    assert sha256(response.content) == job["inputs"]["sha256"]
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(response.content)) as archive:
        for member in archive:
            assert member.isfile() or member.isdir(), member.name
            extracted = archive.extractfile(member) if member.isfile() else None
            found[member.name + ("/" if member.isdir() else "")] = (
                extracted.read() if extracted else b""
            )
    return found


def test_submit_sends_files_and_folders_and_brings_outputs_back(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    """A file and a folder arrive byte-identical under their base names; what the job
    returned lands in --outputs DIR byte-identical, also when the job failed."""
    script = tmp_path / "job.py"
    script.write_text("print(1)\n")
    data = tmp_path / "data.csv"
    data.write_bytes(b"a,b\n" * 1000 + bytes(range(256)))
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    (images / "one.png").write_bytes(b"\x89PNG" + b"\0" * 100)
    (images / "nested" / "two.png").write_bytes(b"\x89PNG2")
    outputs = tmp_path / "got"
    cli = subprocess.Popen(
        [
            *(sys.executable, "-m", "compound", "submit", str(script), "-c", coordinator.url),
            *("--input", str(data), "--input", str(images), "--outputs", str(outputs)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=product_env(),
    )
    agent = FakeAgent(coordinator)
    try:
        job = agent.recv_type("job")
        assert fetch_inputs(coordinator, job) == {
            "data.csv": data.read_bytes(),
            "images/": b"",
            "images/nested/": b"",
            "images/nested/two.png": b"\x89PNG2",
            "images/one.png": (images / "one.png").read_bytes(),
        }
        returned = {"result.txt": b"42\n", "plots/p.svg": b"<svg/>", "blob.bin": bytes(range(256))}
        return_outputs(coordinator, job, returned)
        agent.done(job, -1, exit_code=3)
        _, stderr = cli.communicate(timeout=60)
    finally:
        agent.close()
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 3, stderr.decode()
    assert "3 output file(s)" in stderr.decode()
    for name, content in returned.items():
        assert (outputs / name).read_bytes() == content
    assert not list(outputs.rglob(".compound-*"))


def test_artifacts_command_downloads_into_the_chosen_folder(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    """`compound artifacts ID -o DIR` writes each output file, checked by hash; `compound
    status` says until when the coordinator keeps them."""
    job_id = coordinator.submit("print(1)")
    agent = FakeAgent(coordinator)
    job = agent.recv_type("job")
    return_outputs(coordinator, job, {"a.txt": b"alpha", "deep/b.bin": b"\0\1\2"})
    agent.done(job, -1)
    agent.close()
    coordinator.wait_for_status(job_id, {"succeeded"})
    target = tmp_path / "out"
    result = run_cli("artifacts", job_id, "-o", str(target), coordinator=coordinator)
    assert result.returncode == 0, result.stderr.decode()
    assert (target / "a.txt").read_bytes() == b"alpha"
    assert (target / "deep" / "b.bin").read_bytes() == b"\0\1\2"
    status = run_cli("status", job_id, coordinator=coordinator)
    assert "files kept until" in status.stdout.decode()
    unknown = run_cli("artifacts", "nope", "-o", str(target), coordinator=coordinator)
    assert unknown.returncode == 3
    assert "no job" in unknown.stderr.decode()


def test_artifacts_command_downloads_every_listed_file_past_unkeepable_names(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    """Outputs returned with a backslash name and a newline name: those two are skipped, the
    files before and after them are kept, and `compound artifacts` downloads every one."""
    job_id = coordinator.submit("print(1)")
    agent = FakeAgent(coordinator)
    job = agent.recv_type("job")
    returned = {"a.txt": b"1", "b\\c.txt": b"x", "m\nn.txt": b"y", "z/last.txt": b"2"}
    return_outputs(coordinator, job, returned)
    agent.done(job, -1)
    agent.close()
    coordinator.wait_for_status(job_id, {"succeeded"})
    target = tmp_path / "out"
    result = run_cli("artifacts", job_id, "-o", str(target), coordinator=coordinator)
    assert result.returncode == 0, result.stderr.decode()
    assert "2 output file(s)" in result.stderr.decode()
    assert (target / "a.txt").read_bytes() == b"1"
    assert (target / "z" / "last.txt").read_bytes() == b"2"


def test_inputs_the_cli_cannot_send_are_refused_before_anything_is_sent(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    """Two inputs with one base name, a symbolic link, a missing path: one sentence each,
    exit 2, and no job queued."""
    script = tmp_path / "job.py"
    script.write_text("print(1)\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "data.csv").write_text("1")
    (tmp_path / "b" / "data.csv").write_text("2")
    (tmp_path / "link").symlink_to(tmp_path / "a")
    cases = {
        "two inputs are named 'data.csv'": [
            tmp_path / "a" / "data.csv",
            tmp_path / "b" / "data.csv",
        ],
        "symbolic link": [tmp_path / "link"],
        "no such file": [tmp_path / "missing"],
    }
    for sentence, paths in cases.items():
        inputs = [arg for path in paths for arg in ("--input", str(path))]
        result = run_cli("submit", str(script), *inputs, coordinator=coordinator)
        assert result.returncode == 2, result.stderr.decode()
        assert sentence in result.stderr.decode()
        assert "Traceback" not in result.stderr.decode()
    assert coordinator.api("GET", "/api/v1/jobs").json()["jobs"] == []


def test_inputs_over_the_coordinators_cap_are_refused_before_the_upload(tmp_path: Path) -> None:
    """The CLI checks the coordinator's cap (from /healthz) first: one sentence, exit 2, no
    upload and no job."""
    server = Coordinator(data_dir=tmp_path / "c", extra_args=["--max-input-mib", "0.01"]).start()
    try:
        script = tmp_path / "job.py"
        script.write_text("print(1)\n")
        big = tmp_path / "big.bin"
        big.write_bytes(b"\0" * 20_000)
        result = run_cli("submit", str(script), "--input", str(big), coordinator=server)
        assert result.returncode == 2
        assert (
            "the input files hold 20 KiB, over the coordinator's 10 KiB cap"
            in result.stderr.decode()
        )
        assert server.api("GET", "/api/v1/jobs").json()["jobs"] == []
        assert not list((server.data_dir / "blobs").glob("*/*"))
    finally:
        server.stop()
