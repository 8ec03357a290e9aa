"""Reading the outputs tar a contributor uploads: any bytes at all, so every entry is checked.

Only directories and regular files are accepted; a link, device, fifo, sparse file, an
absolute path, a ``..`` part, an empty path, too many entries, more bytes than allowed or a
tar header over 64 KiB refuse the whole upload with one sentence. A file whose name cannot
be kept (``compound.protocol.output_names``: a backslash, a control character, not UTF-8,
too long) is skipped and named, the rest kept. The tar is read by ``tar_reader`` (bounded
memory whatever the bytes) and files are written to temporary blobs in chunks as they are
read; the caller moves them into the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from compound.coordinator.routes.tar_reader import TarEntry, TarFormatError, read_entries
from compound.coordinator.storage.blobs import BlobStore, Received
from compound.protocol.output_names import output_name_problem

_CHUNK_BYTES = 256 * 1024
# Skipped names listed in the answer (each cut to 200 characters); the rest are counted.
MAX_SKIPPED_LISTED = 20


class BadArtifacts(Exception):
    """A sentence saying why the upload was refused."""


@dataclass(frozen=True)
class ArtifactLimits:
    max_files: int
    max_bytes: int
    max_path_chars: int


@dataclass(frozen=True)
class ExtractedFile:
    path: str
    blob: Received


@dataclass
class Extraction:
    files: list[ExtractedFile] = field(default_factory=list)
    # "'name' holds a backslash" for each file skipped (the first MAX_SKIPPED_LISTED).
    skipped: list[str] = field(default_factory=list)
    skipped_count: int = 0


def extract(tar_path: Path, blobs: BlobStore, limits: ArtifactLimits) -> Extraction:
    """The regular files of the tar at ``tar_path`` as temporary blobs, and the files
    skipped for their names; BadArtifacts (and nothing left behind) if any entry breaks the
    rules."""
    extraction = Extraction()
    try:
        with tar_path.open("rb") as source:
            _extract_into(source, blobs, limits, extraction)
    except BaseException:
        for item in extraction.files:
            item.blob.path.unlink(missing_ok=True)
        raise
    return extraction


def _extract_into(
    source: BinaryIO, blobs: BlobStore, limits: ArtifactLimits, extraction: Extraction
) -> None:
    seen: set[str] = set()
    total = 0
    entries = 0
    try:
        for entry in read_entries(source):
            # Every entry counts, folders and skipped files too: each costs reading a header.
            entries += 1
            if entries > limits.max_files:
                raise BadArtifacts(f"the outputs hold more than {limits.max_files} entries")
            if entry.kind == "directory":
                continue
            path = _checked(entry)
            problem = output_name_problem(path, limits.max_path_chars)
            if problem is not None:
                extraction.skipped_count += 1
                if len(extraction.skipped) < MAX_SKIPPED_LISTED:
                    extraction.skipped.append(f"{path[:200]!r} {problem}")
                continue
            if path in seen:
                raise BadArtifacts(f"the outputs name {path!r} twice")
            seen.add(path)
            total += entry.size
            if total > limits.max_bytes:
                raise BadArtifacts(f"the outputs are over {limits.max_bytes} bytes")
            extraction.files.append(ExtractedFile(path, _copy(source, entry, blobs)))
    except TarFormatError as exc:
        raise BadArtifacts(f"the outputs are not a valid tar: {exc}") from None


def _checked(entry: TarEntry) -> str:
    """The entry's path, normalized, if it is a plain file with a safe relative path."""
    name = entry.name
    if entry.kind != "file" or entry.sparse:
        kind = "a sparse file" if entry.sparse else entry.kind
        raise BadArtifacts(f"the outputs may hold only files and folders ({name[:80]!r} is {kind})")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise BadArtifacts(f"an output path leaves the outputs folder ({name[:80]!r})")
    parts = [part for part in pure.parts if part not in ("", ".")]
    if not parts:
        raise BadArtifacts("an output file has an empty path")
    return "/".join(parts)


def _copy(source: BinaryIO, entry: TarEntry, blobs: BlobStore) -> Received:
    temp = blobs.new_temp()
    digest = hashlib.sha256()
    left = entry.size
    try:
        source.seek(entry.offset)
        with temp.open("wb") as out:
            while left > 0:
                chunk = source.read(min(_CHUNK_BYTES, left))
                if not chunk:
                    raise BadArtifacts(f"the outputs end inside {entry.name[:80]!r}")
                left -= len(chunk)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return Received(temp, digest.hexdigest(), entry.size)
