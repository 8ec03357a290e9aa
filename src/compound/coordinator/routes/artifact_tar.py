"""Reading the outputs tar a contributor uploads: any bytes at all, so every entry is checked.

Only directories and regular files are accepted; a link, device, fifo, sparse file, an
absolute path, a ``..`` part, a path too long, too many files or more bytes than allowed
refuse the whole upload with one sentence. Files are written to temporary blobs as they are
read (never held in memory); the caller moves them into the store.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from compound.coordinator.storage.blobs import BlobStore, Received

_CHUNK_BYTES = 1024 * 1024


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


def extract(tar_path: Path, blobs: BlobStore, limits: ArtifactLimits) -> list[ExtractedFile]:
    """The regular files of the tar at ``tar_path`` as temporary blobs; BadArtifacts (and
    nothing left behind) if any entry breaks the rules."""
    extracted: list[ExtractedFile] = []
    try:
        _extract_into(tar_path, blobs, limits, extracted)
    except BaseException:
        for item in extracted:
            item.blob.path.unlink(missing_ok=True)
        raise
    return extracted


def _extract_into(
    tar_path: Path, blobs: BlobStore, limits: ArtifactLimits, extracted: list[ExtractedFile]
) -> None:
    seen: set[str] = set()
    total = 0
    try:
        with tarfile.open(tar_path, mode="r:") as archive:
            for member in archive:
                if member.isdir():
                    continue
                path = _checked(member, limits)
                if path in seen:
                    raise BadArtifacts(f"the outputs name {path!r} twice")
                seen.add(path)
                if len(seen) > limits.max_files:
                    raise BadArtifacts(f"the outputs hold more than {limits.max_files} files")
                total += member.size
                if total > limits.max_bytes:
                    raise BadArtifacts(f"the outputs are over {limits.max_bytes} bytes")
                extracted.append(ExtractedFile(path, _copy(archive, member, blobs)))
    except (tarfile.TarError, EOFError, UnicodeError, ValueError, OverflowError) as exc:
        raise BadArtifacts(f"the outputs are not a valid tar ({type(exc).__name__})") from None


def _checked(member: tarfile.TarInfo, limits: ArtifactLimits) -> str:
    """The member's path, normalized, if it is a plain file with a safe relative path."""
    name = member.name
    if not member.isreg() or member.issparse():
        raise BadArtifacts(f"the outputs may hold only files and folders ({name[:80]!r})")
    if "\x00" in name or len(name) > limits.max_path_chars:
        raise BadArtifacts("an output path is too long or holds a NUL character")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or "\\" in name:
        raise BadArtifacts(f"an output path leaves the outputs folder ({name[:80]!r})")
    parts = [part for part in pure.parts if part not in ("", ".")]
    if not parts:
        raise BadArtifacts("an output file has an empty path")
    return "/".join(parts)


def _copy(archive: tarfile.TarFile, member: tarfile.TarInfo, blobs: BlobStore) -> Received:
    source = archive.extractfile(member)
    if source is None:
        raise BadArtifacts(f"cannot read {member.name[:80]!r} from the outputs")
    temp = blobs.new_temp()
    digest = hashlib.sha256()
    size = 0
    try:
        with source, temp.open("wb") as out:
            while chunk := source.read(_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return Received(temp, digest.hexdigest(), size)
