"""A job's row as the stores hand it out, and a new job as a submission describes it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from compound.protocol import InputsRef, JobStatus, JobView

# Why a stored row cannot be run: its JSON columns do not parse (a damaged database).
DAMAGED = "the stored job cannot be read (its arguments or environment)"


@dataclass(frozen=True)
class NewJob:
    script: str
    args: list[str]
    env: dict[str, str]
    timeout_s: float | None = None
    name: str | None = None
    requirements: list[str] = field(default_factory=list)
    inputs: InputsRef | None = None


@dataclass(frozen=True)
class JobRow:
    number: int
    id: str
    status: JobStatus
    script: str
    args: list[str]
    env: dict[str, str]
    timeout_s: float | None
    name: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    exit_code: int | None
    error: str | None
    contributor_id: str | None
    attempts: int
    cancel_requested: bool
    last_seq: int
    log_bytes: int
    owner: str | None
    requirements: list[str]
    inputs_sha256: str | None = None
    inputs_size: int | None = None
    files_removed_at: float | None = None
    # The number of its latest attempt (0 before its first; see db.jobs).
    last_attempt: int = 0

    # Why the stored row cannot be run (unparsable args or env), if it cannot.
    damaged: str | None = None

    @classmethod
    def from_mapping(cls, row: Any) -> JobRow:
        values = {name: row[name] for name in cls.__dataclass_fields__ if name != "damaged"}
        values["status"] = JobStatus(values["status"])
        values["cancel_requested"] = bool(values["cancel_requested"])
        try:
            values["args"] = json.loads(values["args"])
            values["env"] = json.loads(values["env"])
            values["requirements"] = json.loads(values["requirements"])
        except ValueError:
            values["args"], values["env"], values["requirements"] = [], {}, []
            values["damaged"] = DAMAGED
        return cls(**values)

    @property
    def inputs(self) -> InputsRef | None:
        if self.inputs_sha256 is None or self.inputs_size is None:
            return None
        return InputsRef(sha256=self.inputs_sha256, size=self.inputs_size)

    def files_expire_at(self, retention_s: float | None) -> float | None:
        if retention_s is None or self.finished_at is None or self.files_removed_at is not None:
            return None
        return self.finished_at + retention_s

    def view(
        self,
        queue_position: int | None = None,
        retention_s: float | None = None,
        waiting_reason: str | None = None,
        estimated_start_s: float | None = None,
    ) -> JobView:
        return JobView(
            id=self.id,
            status=self.status,
            exit_code=self.exit_code,
            error=self.error,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            contributor_id=self.contributor_id,
            attempts=self.attempts,
            queue_position=queue_position,
            args=self.args,
            timeout_s=self.timeout_s,
            name=self.name,
            requirements=self.requirements,
            inputs=self.inputs,
            files_expire_at=self.files_expire_at(retention_s),
            files_removed_at=self.files_removed_at,
            waiting_reason=waiting_reason,
            estimated_start_s=estimated_start_s,
        )


# The columns of a JobRow, in the order the stores select them.
JOB_COLUMNS = tuple(name for name in JobRow.__dataclass_fields__ if name != "damaged")
