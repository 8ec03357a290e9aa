"""`compound admin backup`: a consistent copy of a data directory, taken while it is in use.

The database is copied with SQLite's online backup API in one step: the copy is the
database as of one read transaction (in WAL mode the coordinator's writers go on meanwhile).
Then the blobs that copy refers to (inputs, uploads, artifacts; content-addressed, never
changed once written) are copied beside it. The destination is a data directory a
coordinator can start on. PostgreSQL is not used; see the README for what to do if it is.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from compound.coordinator.storage.blobs import SHA256
from compound.coordinator.storage.data_dir import DataDirError, prepare_data_dir

DATABASE_NAME = "compound.sqlite3"
BLOBS_NAME = "blobs"
_REFERENCED_BLOBS = (
    "SELECT inputs_sha256 FROM jobs WHERE inputs_sha256 IS NOT NULL"
    " UNION SELECT sha256 FROM uploads UNION SELECT sha256 FROM artifacts"
)


@dataclass(frozen=True)
class BackupReport:
    database_bytes: int
    blobs: int
    blob_bytes: int
    # Referenced by the copy but gone from the source meanwhile (retention removed them).
    missing_blobs: int


def backup(data_dir: Path, dest: Path) -> BackupReport:
    """Copy ``data_dir`` to ``dest`` (new or empty); DataDirError with a sentence if not."""
    source = data_dir / DATABASE_NAME
    if not source.is_file():
        raise DataDirError(f"no coordinator database in {data_dir}")
    if dest.exists() and any(dest.iterdir()):
        raise DataDirError(f"{dest} is not empty: back up into a new directory")
    target = dest / DATABASE_NAME
    prepare_data_dir(dest, target)
    _copy_database(source, target)
    return _copy_blobs(data_dir / BLOBS_NAME, dest / BLOBS_NAME, target)


def _copy_database(source: Path, target: Path) -> None:
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        # pages=-1: every page in one step, under one read transaction, so the copy is one
        # moment of the database (in steps, a write between two would restart the copy).
        src.backup(dst, pages=-1)
        dst.execute("PRAGMA journal_mode=WAL")
        dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        dst.close()
        src.close()


def _blob_path(root: Path, sha256: str) -> Path:
    """Where ``blobs.BlobStore`` keeps a blob. Not a BlobStore on the source: opening one
    clears its incoming uploads, which a running coordinator is writing."""
    return root / sha256[:2] / sha256


def _copy_blobs(source: Path, dest_root: Path, database: Path) -> BackupReport:
    conn = sqlite3.connect(database)
    try:
        referenced = [row[0] for row in conn.execute(_REFERENCED_BLOBS)]
    finally:
        conn.close()
    copied = copied_bytes = missing = 0
    for sha256 in referenced:
        path = _blob_path(source, str(sha256))
        if not SHA256.fullmatch(str(sha256)) or not path.is_file():
            missing += 1
            continue
        destination = _blob_path(dest_root, sha256)
        destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        copied += 1
        copied_bytes += destination.stat().st_size
    return BackupReport(database.stat().st_size, copied, copied_bytes, missing)
