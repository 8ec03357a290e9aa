"""Quotas on new work: queued jobs per submitter and in all, and the database's size.

Each refusal is a 429 with one sentence saying which limit was hit.
"""

from __future__ import annotations

from fastapi import HTTPException

from compound.coordinator.state import CoordinatorState

MiB = 1024 * 1024


def check_quotas(state: CoordinatorState, owner: str) -> None:
    settings = state.settings
    if state.store.database_bytes() > settings.max_database_bytes:
        raise HTTPException(
            429,
            f"the coordinator's database is over its {settings.max_database_bytes // MiB} MiB "
            "limit; no new jobs are accepted until space is freed",
        )
    if state.store.count_queued() >= settings.max_queued_total:
        raise HTTPException(
            429, f"the queue is full ({settings.max_queued_total} jobs); try again later"
        )
    if state.store.count_queued(owner) >= settings.max_queued_per_submitter:
        raise HTTPException(
            429,
            f"you already have {settings.max_queued_per_submitter} queued jobs; "
            "wait for some to start",
        )
