"""The coordinator's data directory: private to its user, database files included.

The database holds every submitted script and its output, so the directory is 0700 and
the SQLite files 0600, also when they already existed with looser modes. The database file
is created here, before SQLite opens it, so it never exists with the default mode; SQLite
gives its -wal and -shm files the database file's mode.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
# SQLite's companions of the database file in WAL mode.
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


class DataDirError(Exception):
    """A sentence for the operator: why the data directory cannot be used."""


def prepare_data_dir(data_dir: Path, database_path: Path) -> None:
    """Create (or tighten) the directory and the database files; check we can write there."""
    try:
        data_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        data_dir.chmod(DIR_MODE)
        _create_private(database_path)
        for suffix in SQLITE_SUFFIXES:
            path = database_path.with_name(database_path.name + suffix)
            if path.exists():
                path.chmod(FILE_MODE)
        probe = data_dir / ".write-test"
        probe.touch(mode=FILE_MODE)
        probe.unlink()
    except OSError as exc:
        raise DataDirError(f"cannot use {data_dir} for its database: {exc.strerror}") from None


def _create_private(path: Path) -> None:
    # O_CREAT with the mode, rather than touch-then-chmod: no moment with a looser mode.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
