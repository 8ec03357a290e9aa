"""Routes queued jobs to idle contributors and recovers work whose contributor was lost.

Every running job has a lease held by one contributor. A lease is renewed by any message
from its holder and expires ``lease_timeout_s`` after the last one; an expired lease means
the contributor is lost: the job is requeued (once) or failed with the reason
"contributor lost". Reports about a job whose lease is gone are refused, so no job runs to
completion twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from compound.coordinator.hub import ChangeHub
from compound.coordinator.sessions import ContributorSession, SessionRegistry
from compound.coordinator.settings import CoordinatorSettings
from compound.coordinator.store import JobRow, Store
from compound.protocol import (
    Abandon,
    Cancel,
    ContributorState,
    IllegalTransition,
    Job,
    JobStatus,
    RunningJob,
)

log = logging.getLogger("compound.coordinator")

CONTRIBUTOR_LOST = "contributor lost"


@dataclass
class Lease:
    lease_id: str
    contributor_id: str
    expires_at: float  # time.monotonic()


class Scheduler:
    def __init__(
        self,
        settings: CoordinatorSettings,
        store: Store,
        sessions: SessionRegistry,
        hub: ChangeHub,
    ) -> None:
        self._settings = settings
        self._store = store
        self._sessions = sessions
        self._hub = hub
        self._leases: dict[str, Lease] = {}
        self._dispatch_lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Adopt the running jobs of a previous life: their agents get one lease to return."""
        await self._store.contributors.mark_all_offline()
        for job in await self._store.jobs_with_status(JobStatus.RUNNING):
            if job.lease_id and job.contributor_id:
                self._leases[job.id] = Lease(job.lease_id, job.contributor_id, self._expiry())
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="lease-sweeper")
        await self.dispatch()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

    def _expiry(self) -> float:
        return time.monotonic() + self._settings.lease_timeout_s

    # ------------------------------------------------------------------ dispatch

    async def dispatch(self) -> None:
        """Give queued jobs, oldest first, to idle contributors until one side runs out."""
        async with self._dispatch_lock:
            for session in self._sessions.idle_sessions():
                if not await self._dispatch_one(session):
                    break

    async def _dispatch_one(self, session: ContributorSession) -> bool:
        lease_id = uuid.uuid4().hex
        job = await self._store.claim_next_queued(session.contributor_id, lease_id)
        if job is None:
            return False
        session.running.add(job.id)
        self._leases[job.id] = Lease(lease_id, session.contributor_id, self._expiry())
        await self._store.contributors.set_state(
            session.contributor_id, ContributorState.ONLINE, job.id
        )
        self._hub.notify_all()
        message = Job(
            job_id=job.id,
            lease_id=lease_id,
            script=job.script,
            args=job.args,
            env=job.env,
            timeout_s=job.timeout_s,
            first_seq=job.last_seq + 1,
        )
        if not await session.send(message):
            # It never reached the contributor: back to the queue, not counted as an attempt.
            await self._release(job.id, session)
            await self._store.transition(
                job.id,
                JobStatus.QUEUED,
                "contributor unreachable",
                lease_id=None,
                contributor_id=None,
                attempts=job.attempts - 1,
            )
            return True
        log.info("job %s -> contributor %s (attempt %d)", job.id, session.name, job.attempts)
        return True

    # ------------------------------------------------------------------ leases

    def holds_lease(self, job_id: str, lease_id: str | None, contributor_id: str) -> bool:
        lease = self._leases.get(job_id)
        if lease is None or lease.contributor_id != contributor_id:
            return False
        return lease_id is None or lease.lease_id == lease_id

    def renew(self, session: ContributorSession) -> None:
        expiry = self._expiry()
        for job_id in session.running:
            lease = self._leases.get(job_id)
            if lease is not None and lease.contributor_id == session.contributor_id:
                lease.expires_at = expiry

    async def reattach(
        self, session: ContributorSession, running: list[RunningJob]
    ) -> tuple[dict[str, int], list[Abandon]]:
        """A reconnecting agent lists its jobs: keep those it still holds, abandon the rest."""
        acked: dict[str, int] = {}
        abandon: list[Abandon] = []
        for item in running:
            job = await self._store.get_job(item.job_id)
            if job is not None and self.holds_lease(job.id, item.lease_id, session.contributor_id):
                session.running.add(job.id)
                acked[job.id] = job.last_seq
            else:
                abandon.append(Abandon(job_id=item.job_id, reason="lease expired or job ended"))
        self.renew(session)
        return acked, abandon

    async def _release(self, job_id: str, session: ContributorSession | None) -> None:
        lease = self._leases.pop(job_id, None)
        holder = session or (self._sessions.get(lease.contributor_id) if lease else None)
        if holder is not None:
            holder.running.discard(job_id)
            await self._store.contributors.set_state(holder.contributor_id, ContributorState.ONLINE)

    # ------------------------------------------------------------------ endings

    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        exit_code: int | None = None,
        error: str | None = None,
        reason: str | None = None,
    ) -> JobRow | None:
        """Move a running job to its terminal status, free its contributor, dispatch more."""
        lease = self._leases.get(job_id)
        try:
            job = await self._store.transition(
                job_id,
                status,
                reason or error,
                exit_code=exit_code,
                error=error,
                expect_lease=lease.lease_id if lease else None,
            )
        except (IllegalTransition, KeyError) as exc:
            log.info("ignored ending %s of job %s: %s", status.value, job_id, exc)
            return None
        await self._release(job_id, None)
        self._hub.notify(job_id)
        await self.dispatch()
        return job

    async def cancel(self, job: JobRow) -> JobRow:
        """Cancel at once if queued or unreachable; otherwise ask its agent to stop it."""
        if job.status is JobStatus.QUEUED:
            cancelled = await self._store.transition(job.id, JobStatus.CANCELLED, "cancelled")
            self._hub.notify_all()
            return cancelled
        job = await self._store.request_cancel(job.id)
        lease = self._leases.get(job.id)
        session = self._sessions.get(lease.contributor_id if lease else None)
        if session is not None and await session.send(Cancel(job_id=job.id)):
            return job
        finished = await self.finish(
            job.id, JobStatus.CANCELLED, error="cancelled while its contributor was away"
        )
        return finished or job

    async def contributor_gone(self, session: ContributorSession) -> None:
        """The socket closed. Its jobs keep their leases: the agent may come back in time."""
        if self._sessions.remove(session):
            await self._store.contributors.set_state(
                session.contributor_id, ContributorState.OFFLINE
            )

    # ------------------------------------------------------------------ sweeping

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("lease sweep failed")

    async def sweep(self) -> None:
        now = time.monotonic()
        for session in self._sessions.all():
            if now - session.last_seen > self._settings.lease_timeout_s:
                log.warning("contributor %s silent, closing its connection", session.name)
                await self.contributor_gone(session)
                await session.websocket.close(code=1001)
        for job_id, lease in list(self._leases.items()):
            if lease.expires_at <= now:
                await self._lease_expired(job_id, lease)

    async def _lease_expired(self, job_id: str, lease: Lease) -> None:
        job = await self._store.get_job(job_id)
        holder = self._sessions.get(lease.contributor_id)
        await self._release(job_id, holder)
        if holder is not None:
            await holder.send(Abandon(job_id=job_id, reason="lease expired"))
        if job is None or job.status is not JobStatus.RUNNING:
            return
        if job.cancel_requested:
            await self._store.transition(
                job_id,
                JobStatus.CANCELLED,
                CONTRIBUTOR_LOST,
                error="cancelled; its contributor was lost",
            )
        elif job.attempts >= self._settings.max_attempts:
            await self._store.append_note(job_id, f"[compound] {CONTRIBUTOR_LOST}; job failed")
            await self._store.transition(
                job_id, JobStatus.FAILED, CONTRIBUTOR_LOST, error=CONTRIBUTOR_LOST
            )
        else:
            await self._store.append_note(
                job_id, f"[compound] {CONTRIBUTOR_LOST}; job requeued and will start again"
            )
            await self._store.transition(
                job_id, JobStatus.QUEUED, CONTRIBUTOR_LOST, lease_id=None, contributor_id=None
            )
        log.warning(
            "job %s: lease of %s expired (%s)", job_id, lease.contributor_id, CONTRIBUTOR_LOST
        )
        self._hub.notify_all()
        await self.dispatch()
