"""Helpers for the tests of jobs' files: tars built in memory, hashes, a secured coordinator."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from support import Coordinator
from test_auth import make_token

TOKEN_NAMES = {
    "admin": ("admin", "root"),
    "alice": ("submitter", "alice"),
    "bob": ("submitter", "bob"),
    "worker": ("contributor", "worker"),
    "intruder": ("contributor", "intruder"),
}


def start_secured(
    data_dir: Path, extra_args: list[str] | None = None
) -> tuple[Coordinator, dict[str, str]]:
    """A coordinator with auth on; tokens by name: alice and bob submit, worker and intruder
    contribute, admin administers."""
    tokens = {key: make_token(data_dir, role, name) for key, (role, name) in TOKEN_NAMES.items()}
    server = Coordinator(data_dir=data_dir, extra_args=extra_args or []).start()
    return server, tokens


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes]) -> bytes:
    """A tar holding these regular files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_with(members: Iterable[tarfile.TarInfo]) -> bytes:
    """A tar of header-only members (links, devices, ...), as a hostile peer would send."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for member in members:
            archive.addfile(member, io.BytesIO(b"x" * member.size) if member.size else None)
    return buffer.getvalue()


def blob_files(data_dir: Path) -> list[Path]:
    """Every stored blob (not the temporary files of uploads in progress)."""
    root = data_dir / "blobs"
    if not root.exists():
        return []
    return [p for p in root.glob("*/*") if p.is_file() and p.parent.name != "incoming"]


def return_outputs(server: Coordinator, job: dict[str, Any], files: dict[str, bytes]) -> None:
    """Return ``files`` as the job's outputs, the way the agent does (open-mode lease holder)."""
    data = tar_of(files)
    response = server.api(
        "PUT",
        f"/api/v1/jobs/{job['job_id']}/artifacts",
        content=data,
        headers={"X-Compound-Lease": job["lease_id"], "X-Compound-SHA256": sha256(data)},
    )
    assert response.status_code == 201, response.text
