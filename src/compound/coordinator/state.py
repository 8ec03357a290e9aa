"""The coordinator's runtime state: built once in the app's lifespan and handed to handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from compound.coordinator.follow.followers import FollowerLimits
from compound.coordinator.scheduling.cluster_view import ClusterView
from compound.coordinator.scheduling.hub import ChangeHub
from compound.coordinator.scheduling.quotas import Quotas
from compound.coordinator.scheduling.random_ids import RandomIds
from compound.coordinator.scheduling.scheduler import Scheduler
from compound.coordinator.scheduling.sessions import SessionRegistry
from compound.coordinator.serving.metrics import Metrics
from compound.coordinator.settings import CoordinatorSettings
from compound.coordinator.storage.audit import AuditLog
from compound.coordinator.storage.blobs import BlobStore
from compound.coordinator.storage.contributors import ContributorStore
from compound.coordinator.storage.files import FileStore
from compound.coordinator.storage.jobs import JobStore
from compound.coordinator.storage.logs import LogStore
from compound.coordinator.storage.retention import Retention
from compound.coordinator.storage.tokens import TokenBook


@dataclass(frozen=True)
class CoordinatorState:
    settings: CoordinatorSettings
    jobs: JobStore
    logs: LogStore
    contributors: ContributorStore
    sessions: SessionRegistry
    hub: ChangeHub
    scheduler: Scheduler
    followers: FollowerLimits
    tokens: TokenBook
    blobs: BlobStore
    files: FileStore
    retention: Retention
    quotas: Quotas
    metrics: Metrics
    audit: AuditLog
    # Its name, the other coordinators on its database, their contributors' jobs.
    cluster: ClusterView
    # 16 hex characters, as job ids always were.
    job_ids: RandomIds = field(default_factory=lambda: RandomIds(16))


def state_of(connection: HTTPConnection) -> CoordinatorState:
    """The state object the lifespan stored on the app."""
    state: CoordinatorState = connection.app.state.compound
    return state


async def get_state(connection: HTTPConnection) -> CoordinatorState:
    """FastAPI dependency: ``state_of``. Async on purpose: FastAPI runs a plain ``def``
    dependency in its thread pool, a hand-off to another thread and back per request."""
    return state_of(connection)
