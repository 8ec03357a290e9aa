"""Jobs' files end to end: the CLI, the real coordinator, a real agent and real Docker."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from support import Agent, Coordinator, product_env, run_cli, stream_text

pytestmark = pytest.mark.timeout(120)

# Checks its inputs from inside the sandbox (hashes), then writes outputs.
CHECKING_JOB = """
import hashlib, os, pathlib, sys
expected = dict(arg.split("=", 1) for arg in sys.argv[1:])
for name, digest in expected.items():
    got = hashlib.sha256(pathlib.Path(name).read_bytes()).hexdigest()
    assert got == digest, (name, got, digest)
out = pathlib.Path("outputs")
(out / "sub").mkdir(parents=True, exist_ok=True)
(out / "result.bin").write_bytes(bytes(range(256)) * 100)
(out / "sub" / "notes.txt").write_text("all inputs verified\\n")
print("verified", len(expected), flush=True)
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _submit(
    coordinator: Coordinator, tmp_path: Path, *extra: str, exit_code: int = 0
) -> tuple[subprocess.CompletedProcess[bytes], Path]:
    """`compound submit` of the checking job with a file and a folder, outputs to a folder."""
    script = tmp_path / "job.py"
    script.write_text(CHECKING_JOB)
    data = tmp_path / "data.csv"
    data.write_bytes(b"x,y\n" + b"1,2\n" * 20_000)
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(bytes(range(256)) * 40)
    outputs = tmp_path / "got"
    checks = [f"data.csv={_digest(data)}", f"images/a.png={_digest(images / 'a.png')}"]
    command = [
        *(sys.executable, "-m", "compound", "submit", str(script), "-c", coordinator.url),
        *("--input", str(data), "--input", str(images), "--outputs", str(outputs)),
        *("--env", f"EXIT_CODE={exit_code}", *extra, "--", *checks),
    ]
    result = subprocess.run(command, capture_output=True, env=product_env(), timeout=110)
    return result, outputs


def test_inputs_arrive_and_outputs_come_back(
    coordinator: Coordinator, agent: Agent, tmp_path: Path
) -> None:
    """A file and a folder arrive byte-identical in the job's folder; what it
    writes under outputs/ comes back byte-identical through the CLI and the API."""
    result, outputs = _submit(coordinator, tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"verified 2\n"
    assert (outputs / "result.bin").read_bytes() == bytes(range(256)) * 100
    assert (outputs / "sub" / "notes.txt").read_text() == "all inputs verified\n"
    job_id = coordinator.api("GET", "/api/v1/jobs").json()["jobs"][0]["id"]
    got = coordinator.api("GET", f"/api/v1/jobs/{job_id}/artifacts/sub/notes.txt")
    assert got.content == b"all inputs verified\n"


def test_a_failing_job_still_returns_its_outputs(
    coordinator: Coordinator, agent: Agent, tmp_path: Path
) -> None:
    """Exit 7 after writing outputs: the CLI exits 7 and the outputs are there."""
    result, outputs = _submit(coordinator, tmp_path, exit_code=7)
    assert result.returncode == 7, result.stderr.decode()
    assert (outputs / "sub" / "notes.txt").exists()


def test_outputs_over_the_cap_return_what_fits_and_one_note(
    coordinator: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """Past the agent's --max-output-files-mib: what fits comes back, and one system note."""
    start_agent(extra_args=["--max-output-files-mib", "1"])
    job_id = coordinator.submit(
        "import pathlib\n"
        "p = pathlib.Path('outputs'); p.mkdir(exist_ok=True)\n"
        "(p / 'a.bin').write_bytes(b'a' * 700_000)\n"
        "(p / 'b.bin').write_bytes(b'b' * 700_000)\n"
    )
    coordinator.wait_for_status(job_id, {"succeeded"})
    listed = coordinator.api("GET", f"/api/v1/jobs/{job_id}/artifacts").json()["artifacts"]
    assert 1 <= len(listed) < 2
    notes = stream_text(coordinator.logs(job_id), "system")
    assert notes.count("[compound]") == 1, notes


def test_outputs_with_names_that_cannot_be_kept_return_the_others(
    coordinator: Coordinator, agent: Agent, tmp_path: Path
) -> None:
    """Outputs named with a backslash and with a newline are skipped with a note naming
    them; the other files come back and `compound artifacts` downloads every listed one."""
    job_id = coordinator.submit(
        "import pathlib\n"
        "p = pathlib.Path('outputs'); (p / 'sub').mkdir(parents=True, exist_ok=True)\n"
        "(p / 'a.txt').write_text('first')\n"
        "(p / 'back\\\\slash.txt').write_text('lost')\n"
        "(p / 'new\\nline.txt').write_text('lost')\n"
        "(p / 'sub' / 'z.txt').write_text('last')\n"
    )
    coordinator.wait_for_status(job_id, {"succeeded"})
    listed = coordinator.api("GET", f"/api/v1/jobs/{job_id}/artifacts").json()["artifacts"]
    assert [a["path"] for a in listed] == ["a.txt", "sub/z.txt"]
    notes = stream_text(coordinator.logs(job_id), "system")
    assert "2 file(s) were skipped because their names cannot be kept" in notes
    assert "'back\\\\slash.txt' holds a backslash" in notes, notes
    assert "'new\\nline.txt' holds a control character" in notes, notes
    target = tmp_path / "got"
    result = run_cli("artifacts", job_id, "-o", str(target), coordinator=coordinator)
    assert result.returncode == 0, result.stderr.decode()
    assert (target / "a.txt").read_text() == "first"
    assert (target / "sub" / "z.txt").read_text() == "last"


def test_outputs_past_the_file_count_cap_say_so(coordinator: Coordinator, agent: Agent) -> None:
    """10,001 small output files: 10,000 come back and the note names the count cap, not
    the byte cap."""
    job_id = coordinator.submit(
        "import pathlib\n"
        "p = pathlib.Path('outputs'); p.mkdir(exist_ok=True)\n"
        "for n in range(10_001):\n"
        "    (p / f'{n:05}.txt').write_text('x')\n"
    )
    coordinator.wait_for_status(job_id, {"succeeded"}, 100)
    notes = stream_text(coordinator.logs(job_id), "system")
    assert "outputs are capped at 10000 files: 1 file(s) were left out" in notes, notes
    assert "MiB" not in notes, notes
    assert (
        len(coordinator.api("GET", f"/api/v1/jobs/{job_id}/artifacts").json()["artifacts"])
        == 10_000
    )


def test_inputs_damaged_on_the_way_fail_the_job_before_it_runs(
    coordinator: Coordinator, agent: Agent, tmp_path: Path
) -> None:
    """The agent checks the tar against the hash the job names: bytes changed after the
    upload fail the job with a sentence, and its script never runs."""
    ref = coordinator.api("PUT", "/api/v1/inputs", content=b"original bytes").json()
    blob = coordinator.data_dir / "blobs" / ref["sha256"][:2] / ref["sha256"]
    blob.write_bytes(b"changed  bytes")  # same size, other content
    job_id = coordinator.submit("print('ran')", inputs=ref)
    job = coordinator.wait_for_status(job_id, {"failed"})
    assert "damaged" in (job["error"] or "")
    records = coordinator.logs(job_id)
    assert stream_text(records) == ""
    assert "SHA-256 does not match" in stream_text(records, "system")


def test_inputs_the_coordinator_no_longer_has_fail_the_job_with_a_sentence(
    coordinator: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """A blob gone from the coordinator's disk: the agent's fetch is refused (404) and the
    job fails saying so, without hanging."""
    ref = coordinator.api("PUT", "/api/v1/inputs", content=b"soon gone").json()
    job_id = coordinator.submit("print('ran')", inputs=ref)
    (coordinator.data_dir / "blobs" / ref["sha256"][:2] / ref["sha256"]).unlink()
    start_agent()
    job = coordinator.wait_for_status(job_id, {"failed"})
    assert "refused to fetch the job's input files (HTTP 404" in (job["error"] or "")


# Writes in its working directory as scripts written for a laptop do.
CWD_JOB = """
import sys
open("results.csv", "w").write("a,b\\n1,2\\n")
with open("plot.png", "wb") as figure:
    figure.write(bytes(range(256)) * 64)
assert open("results.csv").read() == "a,b\\n1,2\\n"
print(__file__, flush=True)
"""


def test_files_written_in_the_working_directory_come_back(
    coordinator: Coordinator, agent: Agent, tmp_path: Path
) -> None:
    """A script writing text and binary files in its working directory (and reading one
    back) succeeds under its own file name, and `compound artifacts` downloads the files."""
    script = tmp_path / "analysis.py"
    script.write_text(CWD_JOB)
    result = run_cli("submit", str(script), coordinator=coordinator)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"/job/analysis.py\n"
    job_id = coordinator.api("GET", "/api/v1/jobs").json()["jobs"][0]["id"]
    target = tmp_path / "got"
    result = run_cli("artifacts", job_id, "-o", str(target), coordinator=coordinator)
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(p.name for p in target.iterdir()) == ["plot.png", "results.csv"]
    assert (target / "results.csv").read_text() == "a,b\n1,2\n"
    assert (target / "plot.png").read_bytes() == bytes(range(256)) * 64
