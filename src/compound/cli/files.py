"""A job's files from the terminal: input files and folders packed into one tar and
uploaded, output files downloaded into a folder.

Inputs appear in the job's working directory under their base names, so two with the same
base name are an error here, as are symbolic links (inputs hold files and folders only) and
a total past the cap: each with one sentence, before anything is sent. Downloads are checked
against the SHA-256 the coordinator lists, written next to their target and renamed into
place, and never written outside the chosen folder, whatever path the coordinator names;
one that fails does not stop the others.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from compound.cli.client import ClientError, CoordinatorClient
from compound.protocol.output_names import output_name_problem

MiB = 1024 * 1024
# The default cap, for a coordinator that does not say its own.
DEFAULT_MAX_INPUT_BYTES = 100 * MiB
# Progress is shown for uploads at least this large, on a terminal.
PROGRESS_FROM_BYTES = 4 * MiB


class InputError(Exception):
    """A sentence for the user: the inputs cannot be packed as given."""


def _entries(paths: list[Path]) -> list[tuple[Path, str]]:
    """Every file and folder to pack, with its name in the tar, checked."""
    names: dict[str, Path] = {}
    entries: list[tuple[Path, str]] = []
    for path in paths:
        if not path.exists() and not path.is_symlink():
            raise InputError(f"no such file or folder: {path}")
        base = path.resolve().name if path.name in ("", ".", "..") else path.name
        if base in names:
            raise InputError(
                f"two inputs are named {base!r} ({names[base]} and {path}): inputs appear in "
                "the job's folder under their base names, so these must differ"
            )
        names[base] = path
        entries.extend(_walk(path, base))
    return entries


def _walk(path: Path, name: str) -> list[tuple[Path, str]]:
    if path.is_symlink():
        raise InputError(f"{path} is a symbolic link: inputs hold files and folders only")
    if path.is_file():
        return [(path, name)]
    if not path.is_dir():
        raise InputError(f"{path} is neither a file nor a folder")
    found = [(path, name)]
    for child in sorted(path.iterdir()):
        found.extend(_walk(child, f"{name}/{child.name}"))
    return found


def pack_inputs(paths: list[Path], max_bytes: int, out: BinaryIO) -> None:
    """Write the tar of ``paths`` to ``out``; InputError (nothing written) if they break
    the rules or their files hold more than ``max_bytes``."""
    entries = _entries(paths)
    total = sum(path.stat().st_size for path, _ in entries if path.is_file())
    if total > max_bytes:
        raise InputError(
            f"the input files hold {_size(total)}, over the coordinator's {_size(max_bytes)} cap"
        )
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path, name in entries:
            info = archive.gettarinfo(str(path), arcname=name)
            # Whose files they were here says nothing to the job; the launcher sets modes.
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isreg():
                with path.open("rb") as source:
                    archive.addfile(info, source)
            else:
                archive.addfile(info)


def _size(size: int) -> str:
    return f"{size / 1024:.0f} KiB" if size < MiB else f"{size / MiB:.1f} MiB"


class _Progress:
    """A file-like reader that reports how much of it was read."""

    def __init__(self, source: BinaryIO, size: int, report: Callable[[int, int], None]) -> None:
        self._source = source
        self._size = size
        self._done = 0
        self._report = report

    def read(self, amount: int = -1) -> bytes:
        chunk = self._source.read(amount)
        self._done += len(chunk)
        self._report(self._done, self._size)
        return chunk


def _show_progress(done: int, size: int) -> None:
    end = "\n" if done >= size else ""
    sys.stderr.write(f"\ruploading inputs: {done / MiB:.1f} / {size / MiB:.1f} MiB{end}")
    sys.stderr.flush()


def upload_inputs(client: CoordinatorClient, paths: list[Path]) -> dict[str, Any]:
    """Pack and upload the inputs (checked against the coordinator's cap first); the
    reference a submission names them by."""
    max_bytes = client.max_input_bytes() or DEFAULT_MAX_INPUT_BYTES
    with tempfile.TemporaryFile() as tar:
        pack_inputs(paths, max_bytes, tar)
        size = tar.tell()
        tar.seek(0)
        digest = hashlib.sha256()
        while chunk := tar.read(MiB):
            digest.update(chunk)
        tar.seek(0)
        source: Any = tar
        if size >= PROGRESS_FROM_BYTES and sys.stderr.isatty():
            source = _Progress(tar, size, _show_progress)
        return client.upload_inputs(source, size, digest.hexdigest())


def _local_path(directory: Path, path: str) -> Path:
    """Where output file ``path`` goes under ``directory``; ClientError if it would leave
    or is a name no output may have (see compound.protocol.output_names)."""
    pure = PurePosixPath(path)
    problem = output_name_problem(path)
    if pure.is_absolute() or ".." in pure.parts or problem is not None:
        raise ClientError(f"the coordinator named an unsafe output path {path[:80]!r}")
    return directory.joinpath(*[part for part in pure.parts if part not in ("", ".")])


def download_artifacts(client: CoordinatorClient, job_id: str, directory: Path) -> int:
    """Download every output file of the job into ``directory``; how many there were.

    One file that cannot be had does not stop the others: all are tried, then ClientError
    names the ones that failed.
    """
    artifacts = client.artifacts(job_id)
    failed: list[str] = []
    for artifact in artifacts:
        try:
            _download_one(client, job_id, directory, artifact)
        except ClientError as exc:
            failed.append(str(exc))
    if failed:
        raise ClientError(
            f"{len(failed)} of {len(artifacts)} output file(s) could not be downloaded "
            f"(the others are in {directory}): " + "; ".join(failed[:5])
        )
    return len(artifacts)


def _download_one(
    client: CoordinatorClient, job_id: str, directory: Path, artifact: dict[str, Any]
) -> None:
    target = _local_path(directory, str(artifact["path"]))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".compound-")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "w+b") as sink:
            client.download_artifact(job_id, str(artifact["path"]), sink)
            sink.seek(0)
            digest = hashlib.file_digest(sink, "sha256").hexdigest()
        if digest != artifact["sha256"]:
            raise ClientError(f"{artifact['path']} arrived damaged (SHA-256 mismatch)")
        temp.chmod(0o644)  # mkstemp's 0600 is for the partial file only
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
