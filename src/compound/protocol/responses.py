"""The JSON answers of the coordinator's HTTP API, one model per answer (docs/api.md).

The routes return these models, so each answer's shape is written once, checked by
pydantic and published in /openapi.json; clients may parse them with the same models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from compound.protocol.messages import Artifact, JobView, LogRecord
from compound.protocol.status import ContributorState


class _Answer(BaseModel):
    # As the wire messages: a string is never taken for a number; unknown keys are ignored
    # so that an older client reads a newer coordinator's answer.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, allow_inf_nan=False)


class JobList(_Answer):
    """GET /api/v1/jobs: recent jobs, newest first."""

    jobs: list[JobView]


class JobLogs(_Answer):
    """GET /api/v1/jobs/{id}/logs: one page of a job's log records.

    ``last_seq`` is the last record's seq (``after`` when the page is empty); ``complete``
    says the job is over and nothing follows this page. Each record names its ``attempt``;
    ``last_attempt`` is the number of the job's latest one (0 before it first ran): its
    records alone are the output of one clean run.
    """

    records: list[LogRecord]
    last_seq: int
    complete: bool
    job: JobView
    last_attempt: int = 0


class ContributorView(_Answer):
    """A machine as any token sees it: what it offers, not who runs what on it.

    ``state`` is idle, busy, paused, draining or offline; ``reason`` is why it is paused or
    draining, as its agent said; an offline one keeps its ``last_state`` (and reason).
    ``busy`` (it runs at least one job) is kept for older clients.
    """

    name: str
    state: ContributorState
    reason: str | None = None
    last_state: ContributorState | None = None
    cores: int
    memory_bytes: int
    runtime: str
    version: str
    cpu_percent: float | None
    ram_free_bytes: int | None
    ram_total_bytes: int | None
    last_seen: float | None
    busy: bool


class ContributorAdminView(ContributorView):
    """A machine as an admin sees it: also its id, the token that registered it and the
    job it runs (the first, by id, when it runs several)."""

    id: str
    token_name: str | None
    current_job_id: str | None
    # The coordinator it is connected to, or last was ("host:port"), when several share
    # one database; null on a coordinator of its own.
    coordinator: str | None = None


class ContributorList(_Answer):
    """GET /api/v1/contributors: a page of the machines the coordinator has seen, in
    registration order."""

    # The admin view first: an admin's rows must not be narrowed to the public view.
    contributors: list[ContributorAdminView | ContributorView]
    # The ``after`` of the next page; None on the last.
    next: int | None = None


class Health(_Answer):
    """GET /healthz: liveness, with job counts as of the last lease sweep."""

    status: Literal["ok"]
    version: str
    queued: int
    running: int
    contributors_online: int
    followers: int
    # Clients check their input files against it before they upload.
    max_input_bytes: int
    # The coordinators sharing its database that it sees live, itself included (1 alone).
    coordinators: int = 1


class ArtifactList(_Answer):
    """GET /api/v1/jobs/{id}/artifacts: a job's output files, path order, and when
    retention removed them (null while they are kept)."""

    artifacts: list[Artifact]
    files_removed_at: float | None


class ArtifactsStored(_Answer):
    """PUT /api/v1/jobs/{id}/artifacts: the output files just stored."""

    artifacts: list[Artifact]
    # Files left out because their names cannot be kept (backslash, control characters, too
    # long): a few of their names (escaped), and how many in all.
    skipped: list[str] = Field(default_factory=list)
    skipped_count: int = 0


class SeedSubmitted(_Answer):
    """POST /submit-job (the seed's form): the new job's id."""

    job_id: str
