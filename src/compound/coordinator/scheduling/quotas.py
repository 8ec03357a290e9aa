"""Quotas on new work that the queue decides: queued jobs per submitter and in all.

What a submitter may *store* (jobs, database bytes, file bytes, each per submitter with a
fair share of the global caps) is checked in the transaction that stores it
(``storage.usage``). Each refusal is a :class:`QuotaExceeded` with one sentence saying which
limit was hit (the routes answer it with 429, or 413 for files).
"""

from __future__ import annotations

from collections.abc import Callable

from compound.coordinator.settings import CoordinatorSettings
from compound.coordinator.storage.usage import QuotaExceeded, StoreLimits

__all__ = ["QuotaExceeded", "Quotas", "store_limits"]


def store_limits(settings: CoordinatorSettings) -> StoreLimits:
    """The storage quotas ``settings`` set."""
    return StoreLimits(
        max_jobs_per_owner=settings.max_jobs_per_submitter,
        max_db_bytes_per_owner=settings.max_database_bytes_per_submitter,
        max_db_bytes=settings.max_database_bytes,
        max_file_bytes_per_owner=settings.max_file_bytes_per_submitter,
        max_file_bytes=settings.max_file_bytes,
    )


class Quotas:
    def __init__(
        self, settings: CoordinatorSettings, count_queued: Callable[[str | None], int]
    ) -> None:
        self._settings = settings
        self._count_queued = count_queued

    def check_new_job(self, owner: str) -> None:
        """Raise QuotaExceeded if ``owner`` may not queue one more job now."""
        settings = self._settings
        if self._count_queued(None) >= settings.max_queued_total:
            raise QuotaExceeded(
                f"the queue is full ({settings.max_queued_total} jobs); try again later"
            )
        if self._count_queued(owner) >= settings.max_queued_per_submitter:
            raise QuotaExceeded(
                f"you already have {settings.max_queued_per_submitter} queued jobs; "
                "wait for some to start"
            )
