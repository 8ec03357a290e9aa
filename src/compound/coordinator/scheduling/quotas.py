"""Quotas on new work: queued jobs per submitter and in all, and the database's size.

Each refusal is a :class:`QuotaExceeded` with one sentence saying which limit was hit (the
routes answer it with 429).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from compound.coordinator.settings import CoordinatorSettings

MiB = 1024 * 1024
# How stale the database size a quota compares with may be.
DATABASE_SIZE_MAX_AGE_S = 1.0


class QuotaExceeded(Exception):
    """New work refused: the message says which limit, in one sentence."""


class DatabaseSize:
    """The database's size on disk, its write-ahead log included; read at most once per
    ``DATABASE_SIZE_MAX_AGE_S`` (two stat calls per submission were 5 % of the
    coordinator's time at a few hundred jobs a second)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._size: tuple[int, float] = (0, -DATABASE_SIZE_MAX_AGE_S)  # bytes, monotonic

    def bytes(self) -> int:
        size, read_at = self._size
        now = time.monotonic()
        if now - read_at < DATABASE_SIZE_MAX_AGE_S:
            return size
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                size += os.stat(f"{self._path}{suffix}").st_size
        self._size = (size, now)
        return size


class Quotas:
    def __init__(
        self,
        settings: CoordinatorSettings,
        count_queued: Callable[[str | None], int],
        database: DatabaseSize,
    ) -> None:
        self._settings = settings
        self._count_queued = count_queued
        self._database = database

    def check_new_job(self, owner: str) -> None:
        """Raise QuotaExceeded if ``owner`` may not queue one more job now."""
        settings = self._settings
        if self._database.bytes() > settings.max_database_bytes:
            raise QuotaExceeded(
                f"the coordinator's database is over its {settings.max_database_bytes // MiB} "
                "MiB limit; no new jobs are accepted until space is freed"
            )
        if self._count_queued(None) >= settings.max_queued_total:
            raise QuotaExceeded(
                f"the queue is full ({settings.max_queued_total} jobs); try again later"
            )
        if self._count_queued(owner) >= settings.max_queued_per_submitter:
            raise QuotaExceeded(
                f"you already have {settings.max_queued_per_submitter} queued jobs; "
                "wait for some to start"
            )
