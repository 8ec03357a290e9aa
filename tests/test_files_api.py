"""Jobs' files at the coordinator's edge, over real sockets: inputs up and down, artifacts up
and down, ownership, hostile uploads and retention. The contributor is a scripted peer
(tests/fake_agent.py) speaking the real protocol, since the coordinator is under test.
"""

from __future__ import annotations

import io
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from compound.agent.runners.docker.in_container.files import name_problem
from compound.coordinator.routes.artifact_tar import ArtifactLimits, BadArtifacts, extract
from compound.coordinator.storage.blobs import BlobStore
from compound.protocol.output_names import output_name_problem
from fake_agent import FakeAgent
from files_support import blob_files, sha256, start_secured, tar_of, tar_with
from support import Coordinator, wait_until
from test_auth import bearer

pytestmark = pytest.mark.timeout(90)

MiB = 1024 * 1024


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Coordinator, dict[str, str]]]:
    server, tokens = start_secured(tmp_path / "coordinator", ["--max-input-mib", "1"])
    yield server, tokens
    server.stop()


def upload(server: Coordinator, token: str, data: bytes, **headers: str) -> Any:
    return server.api("PUT", "/api/v1/inputs", content=data, headers={**bearer(token), **headers})


def submit(server: Coordinator, token: str, **fields: Any) -> Any:
    return server.api(
        "POST", "/api/v1/jobs", json={"script": "print(1)", **fields}, headers=bearer(token)
    )


def running_job(
    server: Coordinator, tokens: dict[str, str], **fields: Any
) -> tuple[FakeAgent, dict[str, Any]]:
    """alice's job, handed to a scripted contributor with the worker token."""
    response = submit(server, tokens["alice"], **fields)
    assert response.status_code == 201, response.text
    agent = FakeAgent(server, token=tokens["worker"])
    job = agent.recv_type("job")
    assert job["job_id"] == response.json()["id"]
    return agent, job


def put_artifacts(
    server: Coordinator, token: str, job: dict[str, Any], data: bytes, lease_id: str | None = None
) -> Any:
    return server.api(
        "PUT",
        f"/api/v1/jobs/{job['job_id']}/artifacts",
        content=data,
        headers={
            **(bearer(token) if token else {}),
            "X-Compound-Lease": lease_id or job["lease_id"],
            "X-Compound-SHA256": sha256(data),
        },
    )


# ---------------------------------------------------------------- inputs


def test_inputs_over_the_cap_are_refused_before_anything_is_stored(
    secured: tuple[Coordinator, dict[str, str]],
) -> None:
    """Over --max-input-mib, declared or only counted (chunked), answers 413 and stores
    nothing; a submission naming such inputs is refused and no job is queued."""
    server, tokens = secured
    big = b"\0" * (MiB + 1)
    declared = upload(server, tokens["alice"], big)
    assert declared.status_code == 413
    assert "1 MiB" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"\1" * (MiB // 2)

    counted = upload(server, tokens["alice"], chunks())  # type: ignore[arg-type]
    assert counted.status_code == 413
    assert blob_files(server.data_dir) == []
    assert list((server.data_dir / "blobs" / "incoming").iterdir()) == []
    refused = submit(server, tokens["alice"], inputs={"sha256": sha256(big), "size": len(big)})
    assert refused.status_code == 422
    assert "upload them" in refused.json()["detail"]
    assert server.api("GET", "/api/v1/jobs", headers=bearer(tokens["alice"])).json()["jobs"] == []


def test_an_input_tar_damaged_in_transit_is_refused(
    secured: tuple[Coordinator, dict[str, str]],
) -> None:
    """A body that does not match its X-Compound-SHA256 gets 422 and is not kept."""
    server, tokens = secured
    data = tar_of({"a.txt": b"hello"})
    response = upload(server, tokens["alice"], data, **{"X-Compound-SHA256": "0" * 64})
    assert response.status_code == 422
    assert "SHA-256" in response.json()["detail"]
    assert blob_files(server.data_dir) == []
    malformed = upload(server, tokens["alice"], data, **{"X-Compound-SHA256": "nope"})
    assert malformed.status_code == 400


def test_inputs_are_stored_once_and_usable_only_by_their_uploader(
    secured: tuple[Coordinator, dict[str, str]],
) -> None:
    """The same bytes from two submitters are one blob; each may name them, having uploaded
    them, but bob cannot name alice's inputs by their hash alone; contributors cannot upload."""
    server, tokens = secured
    data = tar_of({"data.csv": b"1,2,3\n"})
    ref = upload(server, tokens["alice"], data).json()
    assert ref == {"sha256": sha256(data), "size": len(data)}
    refused = submit(server, tokens["bob"], inputs=ref)
    assert refused.status_code == 422
    assert submit(server, tokens["alice"], inputs={**ref, "size": 1}).status_code == 422
    assert submit(server, tokens["alice"], inputs=ref).status_code == 201
    assert upload(server, tokens["bob"], data).status_code == 201
    assert submit(server, tokens["bob"], inputs=ref).status_code == 201
    assert len(blob_files(server.data_dir)) == 1
    assert upload(server, tokens["worker"], data).status_code == 403


def test_only_the_lease_holder_downloads_a_jobs_inputs(
    secured: tuple[Coordinator, dict[str, str]],
) -> None:
    """The job message names the inputs; its lease holder gets the exact bytes with their
    hash; another contributor token, a wrong lease id or a submitter get 403."""
    server, tokens = secured
    data = tar_of({"data.csv": b"x" * 5000, "images/a.png": b"\x89PNG"})
    ref = upload(server, tokens["alice"], data).json()
    agent, job = running_job(server, tokens, inputs=ref)
    assert job["inputs"] == ref
    path = f"/api/v1/jobs/{job['job_id']}/inputs"
    lease = {"X-Compound-Lease": job["lease_id"]}
    got = server.api("GET", path, headers={**bearer(tokens["worker"]), **lease})
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["x-compound-sha256"] == ref["sha256"]
    for token, headers in [
        (tokens["intruder"], lease),
        (tokens["worker"], {"X-Compound-Lease": "0" * 32}),
        (tokens["worker"], {}),
        (tokens["alice"], lease),
    ]:
        assert server.api("GET", path, headers={**bearer(token), **headers}).status_code == 403
    agent.close()


# ---------------------------------------------------------------- artifacts


def test_artifacts_come_back_to_their_owner_only_as_attachments(
    secured: tuple[Coordinator, dict[str, str]],
) -> None:
    """The lease holder's tar becomes the job's listed files; alice downloads each byte for
    byte as an attachment that never renders; bob's answer is as for an unknown job."""
    server, tokens = secured
    agent, job = running_job(server, tokens)
    files = {
        "result.bin": bytes(range(256)) * 10,
        "page.html": b"<script>1</script>",
        "sub/dir/notes.txt": "héllo\n".encode(),
    }
    response = put_artifacts(server, tokens["worker"], job, tar_of(files))
    assert response.status_code == 201, response.text
    agent.done(job, -1)
    wait_until(
        lambda: (
            server.api(
                "GET", f"/api/v1/jobs/{job['job_id']}", headers=bearer(tokens["alice"])
            ).json()["status"]
            == "succeeded"
        ),
        30,
        "the job to end",
    )
    base = f"/api/v1/jobs/{job['job_id']}/artifacts"
    listed = server.api("GET", base, headers=bearer(tokens["alice"])).json()["artifacts"]
    assert {a["path"]: a["size"] for a in listed} == {k: len(v) for k, v in files.items()}
    for path, data in files.items():
        got = server.api("GET", f"{base}/{path}", headers=bearer(tokens["alice"]))
        assert got.status_code == 200
        assert got.content == data
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"].startswith("attachment")
        assert got.headers["x-content-type-options"] == "nosniff"
    assert server.api("GET", base, headers=bearer(tokens["bob"])).status_code == 404
    assert server.api("GET", f"{base}/page.html", headers=bearer(tokens["bob"])).status_code == 404
    assert server.api("GET", f"{base}/nope", headers=bearer(tokens["alice"])).status_code == 404
    agent.close()


def test_only_the_lease_holder_may_return_artifacts(
    secured: tuple[Coordinator, dict[str, str]],
) -> None:
    """Another contributor token, a wrong lease id or a submitter get 403; nothing is kept."""
    server, tokens = secured
    agent, job = running_job(server, tokens)
    data = tar_of({"x.txt": b"forged"})
    assert put_artifacts(server, tokens["intruder"], job, data).status_code == 403
    assert put_artifacts(server, tokens["worker"], job, data, lease_id="f" * 32).status_code == 403
    assert put_artifacts(server, tokens["alice"], job, data).status_code == 403
    base = f"/api/v1/jobs/{job['job_id']}/artifacts"
    assert server.api("GET", base, headers=bearer(tokens["alice"])).json()["artifacts"] == []
    assert blob_files(server.data_dir) == []
    agent.close()


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **fields: Any) -> Any:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    for key, value in fields.items():
        setattr(info, key, value)
    return info


HOSTILE = {
    "symlink": tar_with([_member("link", tarfile.SYMTYPE, linkname="/etc/passwd")]),
    "hard link": tar_with([_member("a", size=1), _member("b", tarfile.LNKTYPE, linkname="a")]),
    "device": tar_with([_member("dev", tarfile.CHRTYPE, devmajor=1, devminor=3)]),
    "fifo": tar_with([_member("pipe", tarfile.FIFOTYPE)]),
    "parent": tar_of({"../escape.txt": b"x"}),
    "deep parent": tar_of({"a/../../escape.txt": b"x"}),
    "absolute": tar_of({"/etc/cron.d/x": b"x"}),
    "too many": tar_of({f"f{i}": b"" for i in range(11)}),
    "too big": tar_of({"big": b"\0" * 3000}),
    "duplicate": tar_of({"a": b"1", "./a": b"2"}),
    "not a tar": b"\x7fELF" + b"\0" * 2000,
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_artifact_tars_are_refused_whole(tmp_path: Path, kind: str) -> None:
    """Links, devices, fifos, paths out of the folder, too many files, too many bytes, a
    name twice or not a tar at all: 422 with a sentence, nothing stored."""
    limits = ["--max-artifact-files", "10", "--max-artifact-mib", str(2 / 1024)]
    server = Coordinator(data_dir=tmp_path / "c", extra_args=limits).start()
    try:
        job_id = server.submit("print(1)")
        agent = FakeAgent(server)
        job = agent.recv_type("job")
        assert job["job_id"] == job_id
        response = put_artifacts(server, "", job, HOSTILE[kind])
        assert response.status_code in (413, 422), response.text
        assert "Traceback" not in response.text
        listed = server.api("GET", f"/api/v1/jobs/{job_id}/artifacts").json()["artifacts"]
        assert listed == []
        assert blob_files(server.data_dir) == []
        assert list((server.data_dir / "blobs" / "incoming").iterdir()) == []
        agent.close()
    finally:
        server.stop()


UNKEEPABLE = {
    "back\\slash.txt": "holds a backslash",
    "new\nline.txt": "holds a control character",
    "bell\a.txt": "holds a control character",
    "p" * 1100: "is longer than 1024 characters",
}


def test_names_that_cannot_be_kept_are_skipped_and_the_rest_stored(tmp_path: Path) -> None:
    """A backslash, a control character or an overlong name skips that file only (named in
    the answer): the other files are stored, and every listed file can be downloaded."""
    server = Coordinator(data_dir=tmp_path / "c").start()
    try:
        job_id = server.submit("print(1)")
        agent = FakeAgent(server)
        job = agent.recv_type("job")
        kept = {"first.txt": b"1", "sub/last.txt": b"2"}
        response = put_artifacts(
            server, "", job, tar_of({**dict.fromkeys(UNKEEPABLE, b"lost"), **kept})
        )
        assert response.status_code == 201, response.text
        answer = response.json()
        assert answer["skipped_count"] == len(UNKEEPABLE)
        for name, problem in UNKEEPABLE.items():
            assert any(f"{name[:200]!r} {problem}" == line for line in answer["skipped"])
        base = f"/api/v1/jobs/{job_id}/artifacts"
        listed = server.api("GET", base).json()["artifacts"]
        assert [a["path"] for a in listed] == sorted(kept)
        for artifact in listed:
            got = server.api("GET", f"{base}/{artifact['path']}")
            assert got.status_code == 200 and got.content == kept[artifact["path"]]
        agent.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    "name",
    [
        *UNKEEPABLE,
        "ok.txt",
        "sub/ok",
        "é/ü",
        "tab\tx",
        "del\x7f",
        "c1\x85",
        "bad\udcff",
        "p" * 1024,
    ],
)
def test_the_launcher_and_the_coordinator_keep_the_same_names(name: str) -> None:
    """The launcher's copy of the name rule (standard library only) agrees with the
    protocol's, so nothing the launcher sends is skipped again at the coordinator."""
    assert name_problem(name) == output_name_problem(name)


HEADER_BYTES = 32 * MiB


def _huge_header_tar(path: Path, kind: bytes) -> None:
    """A tar whose first header is a PAX or GNU long-name header of 32 MiB (well formed, so
    a reader that takes it whole takes all of it), then a small file."""
    info = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    info.type = kind
    info.size = HEADER_BYTES
    with path.open("wb") as out:
        out.write(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"))
        if kind == tarfile.XHDTYPE:
            prefix = f"{HEADER_BYTES} comment=".encode()
            out.write(prefix)
            left = HEADER_BYTES - len(prefix) - 1
        else:
            left = HEADER_BYTES - 1
        while left:
            out.write(b"x" * min(MiB, left))
            left -= min(MiB, left)
        out.write(b"\n" if kind == tarfile.XHDTYPE else b"\0")
        out.write(tar_of({"after.txt": b"x"}))


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME], ids=["pax", "gnu"])
def test_a_huge_tar_header_is_refused_in_bounded_memory(tmp_path: Path, kind: bytes) -> None:
    """A 32 MiB PAX or GNU long-name header is refused with a sentence while the parser's
    memory stays under 1 MiB (measured with tracemalloc), and nothing is left behind."""
    tar = tmp_path / "outputs.tar"
    _huge_header_tar(tar, kind)
    blobs = BlobStore(tmp_path / "blobs")
    limits = ArtifactLimits(max_files=10_000, max_bytes=100 * MiB, max_path_chars=1024)
    refusal = None
    tracemalloc.start()
    try:
        try:
            extract(tar, blobs, limits)
        except BadArtifacts as exc:
            refusal = str(exc)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < MiB, f"the parser peaked at {peak_bytes / MiB:.1f} MiB"
    assert refusal is not None and "more than the 64 KiB allowed" in refusal, refusal
    assert list((tmp_path / "blobs" / "incoming").iterdir()) == []


def test_what_the_launcher_writes_is_read_back_exactly(tmp_path: Path) -> None:
    """A PAX tar as the launcher writes it (long and non-ASCII names in PAX headers, folders,
    empty and multi-block files) is read back name for name and byte for byte."""
    files = {
        "plain.txt": b"hello",
        "été/ünïcode.txt": b"\xff" * 513,
        "d" * 150 + "/" + "n" * 200 + ".bin": bytes(range(256)) * 40,
        "empty": b"",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        archive.addfile(_member("été", tarfile.DIRTYPE))
        for name, data in files.items():
            archive.addfile(_member(name, size=len(data)), io.BytesIO(data))
    tar = tmp_path / "outputs.tar"
    tar.write_bytes(buffer.getvalue())
    blobs = BlobStore(tmp_path / "blobs")
    limits = ArtifactLimits(max_files=10, max_bytes=MiB, max_path_chars=1024)
    extraction = extract(tar, blobs, limits)
    assert extraction.skipped == []
    read = {item.path: item.blob.path.read_bytes() for item in extraction.files}
    assert read == files


# ---------------------------------------------------------------- retention


def short_retention(data_dir: Path, retention_s: float) -> Coordinator:
    """A coordinator keeping finished jobs' files ``retention_s`` and sweeping 5 times a s."""
    days = str(retention_s / 86400)
    return Coordinator(
        data_dir=data_dir, extra_args=["--retention-days", days, "--retention-sweep-s", "0.2"]
    ).start()


def test_retention_removes_an_expired_jobs_files_but_keeps_shared_blobs(tmp_path: Path) -> None:
    """With a short retention the finished job's logs, artifacts and inputs go (its row and
    files_removed_at stay); an input blob a queued job still names is kept."""
    data_dir = tmp_path / "c"
    server = short_retention(data_dir, 1.0)
    try:
        shared = tar_of({"in.txt": b"shared input"})
        ref = server.api("PUT", "/api/v1/inputs", content=shared).json()
        job_id = server.submit("print(1)", inputs=ref)
        agent = FakeAgent(server)
        job = agent.recv_type("job")
        agent.log(job, [0], "some output\n")
        assert put_artifacts(server, "", job, tar_of({"out.txt": b"result"})).status_code == 201
        view = server.job(job_id)
        assert view["files_expire_at"] is None  # not finished yet
        agent.done(job, 0)
        finished = server.wait_for_status(job_id, {"succeeded"})
        assert finished["files_expire_at"] == pytest.approx(finished["finished_at"] + 1)
        agent.close()  # the next job stays queued: its inputs must survive
        kept_job = server.submit("print(2)", inputs=ref)
        assert server.output is not None
        server.output.wait_for(
            lambda line: "retention: removed the files of 1 job(s)" in line, 30, "the sweep"
        )
        removed = server.job(job_id)
        assert removed["files_removed_at"] is not None
        assert removed["files_expire_at"] is None
        assert server.logs(job_id) == []
        assert server.api("GET", f"/api/v1/jobs/{job_id}/artifacts").json()["artifacts"] == []
        assert [p.name for p in blob_files(data_dir)] == [ref["sha256"]]
        assert server.job(kept_job)["status"] == "queued"
    finally:
        server.stop()


def test_retention_removes_a_blob_once_nothing_refers_to_it(tmp_path: Path) -> None:
    """An upload no job kept, and a cancelled job's inputs, are removed after the retention."""
    data_dir = tmp_path / "c"
    server = short_retention(data_dir, 0.5)
    try:
        ref = server.api("PUT", "/api/v1/inputs", content=tar_of({"a": b"1"})).json()
        job_id = server.submit("print(1)", inputs=ref)
        server.api("POST", f"/api/v1/jobs/{job_id}/cancel")
        wait_until(lambda: not blob_files(data_dir), 30, "the blob to be removed")
        assert server.job(job_id)["files_removed_at"] is not None
    finally:
        server.stop()
