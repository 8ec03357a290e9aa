"""Routes queued jobs to idle contributors and recovers work whose contributor was lost.

Every running job has a lease (``leases.py``) held by one contributor. A lease is renewed
by any message from its holder and expires ``lease_timeout_s`` after the last one; an
expired lease means the contributor is lost: the job is requeued (once) or failed with the
reason "contributor lost". Reports about a job whose lease is gone are refused, so no job
runs to completion twice. A contributor that breaks the reporting rules is treated as lost.

A lease that is renewed is not enough to keep a job: the scheduler enforces the job's
timeout and a cancel itself (``deadlines.py``). When its contributor has not reported the
end ``deadline_grace_s`` after the timeout (counted from the claim) or after the cancel was
sent, the job ends ``timed_out`` or ``cancelled`` with a note, its lease is released (so the
holder's reports on it are refused) and the holder is told to abandon it.

No network I/O happens here: messages to contributors are queued on their sessions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from compound.coordinator.scheduling.deadlines import Deadline, Deadlines
from compound.coordinator.scheduling.hub import ChangeHub
from compound.coordinator.scheduling.job_queue import JobQueue, QueuedJob
from compound.coordinator.scheduling.leases import Lease, Leases
from compound.coordinator.scheduling.presence import PresenceBook
from compound.coordinator.scheduling.random_ids import RandomIds
from compound.coordinator.scheduling.sessions import ContributorSession, SessionRegistry
from compound.coordinator.scheduling.shared_leases import SWEPT, reconcile
from compound.coordinator.scheduling.tenants import tenant_of
from compound.coordinator.scheduling.waiting import StartRate, estimated_start_s, waiting_reason
from compound.coordinator.settings import CoordinatorSettings
from compound.coordinator.storage.cluster_rows import ClusterLeaseRows
from compound.coordinator.storage.contributors import ContributorStore
from compound.coordinator.storage.job_rows import JobRow, NewJob
from compound.coordinator.storage.jobs import JobStore
from compound.coordinator.storage.logs import LogStore
from compound.coordinator.storage.reports import Violation
from compound.protocol import (
    CLOSE_GOING_AWAY,
    Abandon,
    Cancel,
    ContributorState,
    Heartbeat,
    Job,
    JobStatus,
    JobView,
    Lending,
    LogRecord,
    RunningJob,
    WaitingReason,
)

log = logging.getLogger("compound.coordinator")

CONTRIBUTOR_LOST = "contributor lost"


class Scheduler:
    def __init__(
        self,
        settings: CoordinatorSettings,
        jobs: JobStore,
        logs: LogStore,
        contributors: ContributorStore,
        sessions: SessionRegistry,
        hub: ChangeHub,
        cluster: ClusterLeaseRows | None = None,
    ) -> None:
        self._settings = settings
        # Set when other coordinators may share the database (PostgreSQL): the lease rows
        # decide what expired (``shared_leases``), and jobs may be queued elsewhere.
        self._cluster = cluster
        self._jobs = jobs
        self._logs = logs
        self._contributors = contributors
        self._sessions = sessions
        self._hub = hub
        self._leases = Leases()
        # When the coordinator ends a running job its contributor has not ended.
        self._deadlines = Deadlines(settings.deadline_grace_s)
        # The jobs waiting, oldest first, mirrored from their rows (see job_queue.py).
        self._queue = JobQueue()
        self._lease_ids = RandomIds(32)
        self.presence = PresenceBook()
        # Connected contributors holding no lease, the one idle longest first: dispatch takes
        # from the front instead of scanning every session (10,000 of them at scale).
        self._idle: dict[str, ContributorSession] = {}
        # How many of them install packages (only they can take a job with requirements).
        self._idle_with_deps = 0
        # Contributors paired with a job whose claim is being committed: neither idle nor
        # holding a lease yet, and never given a second job meanwhile.
        self._claiming: set[str] = set()
        # The jobs of those claims: a reload of the queue leaves them out.
        self._taking: set[str] = set()
        # Jobs started lately: how long a queued job may wait.
        self._starts = StartRate()
        self._sweeper: asyncio.Task[None] | None = None
        # Jobs by status as of the last sweep (at most sweep_interval_s old): /healthz
        # answers from here, never queued behind the database.
        self.job_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Adopt the running jobs of a previous life: their agents get one lease to return."""
        await self._contributors.mark_all_offline()
        await self._load_queue()
        granted_at: dict[str, float] = {}
        for row in await self._jobs.leases():
            self._leases.grant(
                Lease(row.job_id, row.lease_id, row.holder, row.first_seq, self._expiry())
            )
            granted_at[row.job_id] = row.granted_at
        for job in await self._jobs.with_status(JobStatus.RUNNING):
            lease = self._leases.of(job.id)
            if lease is None:  # a database from before leases had a table
                await self._requeue(job.id, "lease record missing", count_attempt=False)
            else:
                self._deadlines.restored(
                    job.id,
                    lease.lease_id,
                    timeout_s=job.timeout_s,
                    granted_at=granted_at[job.id],
                    cancel_requested=job.cancel_requested,
                    back_by=self._expiry(),
                )
        self.job_counts = await self._jobs.count_by_status()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="lease-sweeper")
        await self.dispatch()

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self._write_back()

    async def _write_back(self) -> None:
        """Lease expiries and heartbeats kept in memory since the last call, in two statements."""
        await self._jobs.renew_leases(self._leases.take_renewed())
        await self._contributors.seen(self.presence.take())

    def _expiry(self) -> float:
        return time.time() + self._settings.lease_timeout_s

    # ------------------------------------------------------------------ the queue

    async def _load_queue(self) -> None:
        """Mirror the queued rows in memory (at start, and when the sweep finds a gap)."""
        journal = self._queue.reload_journal()
        try:
            rows = await self._jobs.queued()
        except BaseException:
            self._queue.end_reload(journal)
            raise
        entries = [QueuedJob(*row) for row in rows if row[1] not in self._taking]
        self._queue.replace_all(entries, journal)

    async def queue_changed_elsewhere(self) -> None:
        """Another coordinator sharing the database queued or took jobs, and what may be
        unknown here (hints were lost): mirror the rows again (the claims' WHERE keeps a
        stale mirror safe) and dispatch."""
        await self._load_queue()
        self._hub.queue_moved()
        await self.dispatch()

    def queue_hinted(self, added: list[QueuedJob], left: list[str]) -> None:
        """Another coordinator announced jobs that entered or left the queue
        (``queue_hints``): the mirror follows, no query; the caller dispatches."""
        for job_id in left:
            self._queue.discard(job_id)
        for entry in added:
            if entry.id not in self._taking and self._leases.of(entry.id) is None:
                self._queue.add(entry)

    def queued_entry(self, job_id: str) -> QueuedJob | None:
        """``job_id``'s entry in the queue mirror, if it is there (what a hint announces)."""
        return self._queue.get(job_id)

    def _queued(self, job: JobRow) -> None:
        self._queue.add(QueuedJob(job.number, job.id, job.owner, plain=not job.requirements))
        self._hub.job_queued(job.id)

    async def submit(self, job_id: str, new: NewJob, owner: str | None) -> JobRow:
        """Queue a new job (durably) and give it to an idle contributor if there is one."""
        job = await self._jobs.create(job_id, new, owner)
        self._queued(job)
        await self.dispatch()
        return job

    def count_queued(self, owner: str | None = None) -> int:
        """Queued jobs in all, or of ``owner``: counted in memory, no query."""
        if owner is not None:
            return self._queue.count(owner, of_owner=True)
        return self._queue.count()

    def oldest_queued(self) -> str | None:
        """The id of the job queued first (in memory, no query), or None."""
        oldest = self._queue.oldest()
        return None if oldest is None else oldest.id

    def queue_position(self, job_id: str) -> int | None:
        return self._queue.position_of(job_id)

    def view(self, job: JobRow) -> JobView:
        """What a submitter sees of ``job``: its row, and if queued its place in the queue,
        why it waits and when it may start."""
        if job.status is not JobStatus.QUEUED:
            return job.view(None, self._jobs.retention_s)
        position = self._queue.position(job.number)
        reason, start_s = self.waiting(position, bool(job.requirements))
        return job.view(position, self._jobs.retention_s, reason, start_s)

    def waiting(self, position: int, needs_packages: bool) -> tuple[str, float | None]:
        """Why the job at ``position`` waits and when it may start (seconds from now, None
        when unknown): from counts kept in memory, no scan of the sessions."""
        reason = waiting_reason(self._sessions.counts, needs_packages)
        if reason is not WaitingReason.ALL_BUSY:
            return reason.value, None  # the recent rate says nothing of when they come back
        return reason.value, estimated_start_s(position, self._starts.per_s())

    def contributor_state(self, session: ContributorSession) -> ContributorState:
        """What a connected contributor does now (from memory)."""
        return ContributorState.of(session.lending, self._leases.held_count(session.contributor_id))

    async def _requeue(
        self, job_id: str, reason: str, *, note: str | None = None, count_attempt: bool = True
    ) -> JobRow | None:
        requeued = await self._jobs.requeue(job_id, reason, note=note, count_attempt=count_attempt)
        if requeued is not None:
            self._queued(requeued)
        return requeued

    async def _cancel(self, job_id: str, reason: str, error: str | None = None) -> JobRow | None:
        cancelled = await self._jobs.cancel(job_id, reason, error)
        self._queue.discard(job_id)
        return cancelled

    # ------------------------------------------------------------------ dispatch

    def joined(self, session: ContributorSession) -> None:
        """A registered session may take work (unless it resumed jobs it still holds)."""
        self._mark_idle_if_free(session)
        self._capacity_changed()

    def _capacity_changed(self) -> None:
        """Contributors came, went or changed what they lend: why queued jobs wait may have
        changed, so their followers look again. Nobody is woken while the queue is empty, nor
        when a dispatch is about to move the queue (its claims wake them, once)."""
        if len(self._queue) and self._nothing_to_pair():
            self._hub.queue_moved()

    def _is_full(self, session: ContributorSession) -> bool:
        """It holds as many leases as it has slots (one, unless its hello said more)."""
        return self._leases.held_count(session.contributor_id) >= session.slots

    def _mark_idle_if_free(self, session: ContributorSession | None) -> bool:
        """Put ``session`` at the back of the idle ones if it has a free slot; whether it did."""
        if session is None or session.closed or self._is_full(session):
            return False
        if session.lending is not Lending.ACTIVE:
            return False
        if session.contributor_id in self._claiming:
            return False
        self._unidle(session.contributor_id)
        self._idle[session.contributor_id] = session  # to the back: idle longest goes first
        self._idle_with_deps += session.deps
        return True

    def _idle_again(self, session: ContributorSession) -> bool:
        """After its claim: back among the idle if it has a slot left; whether it went back.
        One a failed claim already put back does not count (no retry at once)."""
        if session.contributor_id in self._idle:
            return False
        return self._mark_idle_if_free(session)

    def _unidle(self, contributor_id: str) -> None:
        session = self._idle.pop(contributor_id, None)
        if session is not None:
            self._idle_with_deps -= session.deps

    async def dispatch(self) -> None:
        """A job may have been queued: give queued jobs, oldest first, to idle contributors
        until one side runs out."""
        await self._dispatch_idle()

    async def offer_idle(self) -> None:
        """A contributor became free: dispatch, if the queue holds anything for it."""
        await self._dispatch_idle()

    def _nothing_to_pair(self) -> bool:
        """No query, no scan: the in-memory queue says whether any idle contributor can
        take a job (10,000 of them joining an empty queue cost nothing each)."""
        if not self._idle or not self._queue.has(plain_only=False):
            return True
        return not self._idle_with_deps and not self._queue.has(plain_only=True)

    async def _dispatch_idle(self) -> None:
        # Pairing is synchronous (no await): jobs leave the queue in FIFO order, each to one
        # contributor. The claims are then written together, in one group transaction.
        while not self._nothing_to_pair():
            pairs, gone = self._pair_idle()
            for session in gone + [session for session, _ in pairs]:
                self._unidle(session.contributor_id)
            self._claiming.update(session.contributor_id for session, _ in pairs)
            if not pairs:
                return
            # A claim that lost its job (cancelled meanwhile) leaves its contributor idle
            # again: pair once more.
            claims = [self._claim_for(session, entry) for session, entry in pairs]
            taking = {entry.id for _, entry in pairs}
            self._taking |= taking
            try:
                claimed = await asyncio.gather(*claims)
            finally:
                self._taking -= taking
            # A contributor with slots left goes to the back of the idle ones: the next walk
            # gives it another job, after those idle longer.
            more = [self._idle_again(session) for session, _ in pairs]
            if all(claimed) and not any(more):
                return

    def _pair_idle(
        self,
    ) -> tuple[list[tuple[ContributorSession, QueuedJob]], list[ContributorSession]]:
        """Queued jobs taken for idle contributors, longest idle first, and the idle sessions
        found closed or busy. Stops as soon as no later contributor could take a job, so one
        job arriving for 10,000 idle contributors costs one step, not 10,000."""
        pairs: list[tuple[ContributorSession, QueuedJob]] = []
        gone: list[ContributorSession] = []
        for session in self._idle.values():  # not changed until the walk ends
            if session.closed or self._is_full(session):
                gone.append(session)
                continue
            # Synchronous, so concurrent claimers take different jobs, in FIFO order.
            entry = self._queue.take(plain_only=not session.deps)
            if entry is not None:
                pairs.append((session, entry))
            elif session.deps or self._idle_with_deps == 0:
                break  # the queue is empty, or what is left needs packages nobody idle installs
        return pairs, gone

    async def _claim_for(self, session: ContributorSession, entry: QueuedJob) -> bool:
        """Claim ``entry`` for ``session`` and send it; False if the job was gone."""
        lease_id, expires_at = self._lease_ids.next(), self._expiry()
        try:
            claimed = await self._jobs.claim(entry.id, session.contributor_id, lease_id, expires_at)
        except Exception:
            self._queue.add(entry)  # the write failed: the job goes back to the queue
            # Not retried at once (the database may be failing): the sweep dispatches again.
            log.exception("claiming job %s failed; it stays queued", entry.id)
            self._claiming.discard(session.contributor_id)
            self._mark_idle_if_free(session)
            self._hub.queue_moved()  # back in the queue, where followers may have missed it
            return True
        self._claiming.discard(session.contributor_id)
        if claimed is None:
            # Cancelled meanwhile, or failed as impossible to run: either way it left the queue.
            self._hub.notify(entry.id, queue_moved=True)
            self._mark_idle_if_free(session)
            return False
        job = claimed.job
        lease = Lease(job.id, lease_id, session.contributor_id, claimed.first_seq, expires_at)
        self._leases.grant(lease)
        self._starts.started()
        self._deadlines.started(job.id, lease_id, job.timeout_s, time.time())
        self._hub.notify(job.id, queue_moved=True)
        try:
            message = _job_message(job, lease)
        except Exception as exc:  # a job that cannot be sent must not block the queue
            log.exception("job %s cannot be dispatched", job.id)
            await self._fail(job.id, f"the job cannot be dispatched: {type(exc).__name__}")
            return True
        if not session.send(message):
            # It never reached the contributor: back to the queue, not counted as an attempt.
            self._release(job.id)
            await self._requeue(job.id, "contributor unreachable", count_attempt=False)
            self._hub.notify(job.id, queue_moved=True)
            return False
        log.debug("job %s -> contributor %s (attempt %d)", job.id, session.name, job.attempts)
        return True

    # ------------------------------------------------------------------ leases

    def lease_of(self, job_id: str) -> Lease | None:
        """The current lease on ``job_id``, if it runs."""
        return self._leases.of(job_id)

    def renew(self, session: ContributorSession) -> None:
        self._leases.renew(session.contributor_id, self._expiry())

    def heartbeat(self, session: ContributorSession, message: Heartbeat) -> list[Lease]:
        """Kept in memory; the sweep writes the latest of each contributor back in a batch.
        Returns the leases the agent has stopped listing, for ``give_back``."""
        self.presence.heartbeat(session.contributor_id, message)
        if message.running is None:
            return []
        listed = {item.lease_id for item in message.running}
        return session.listings.heard(listed, self._leases.held_by(session.contributor_id))

    def _release(self, job_id: str) -> Lease | None:
        """Drop ``job_id``'s lease; its holder, if still connected and free, is idle again."""
        lease = self._leases.release(job_id)
        self._deadlines.drop(job_id)
        if lease is not None:
            self._mark_idle_if_free(self._sessions.get(lease.holder))
        return lease

    async def adopt_leases(self, holder: str) -> None:
        """Another coordinator sharing the database may have granted ``holder`` its leases:
        held here from now on (before ``reattach``), so it resumes its jobs here."""
        if self._cluster is None:
            return
        for row in await self._cluster.held_by(holder):
            current = self._leases.of(row.job_id)
            if row.lease_id.startswith(SWEPT) or (current and current.lease_id == row.lease_id):
                continue  # being recovered, or held here already
            job = await self._jobs.get(row.job_id)
            if job is None or job.status is not JobStatus.RUNNING:
                continue
            self._leases.grant(Lease(job.id, row.lease_id, holder, row.first_seq, self._expiry()))
            self._deadlines.restored(
                job.id,
                row.lease_id,
                timeout_s=job.timeout_s,
                granted_at=row.granted_at,
                cancel_requested=job.cancel_requested,
                back_by=self._expiry(),
            )

    def reattach(
        self, session: ContributorSession, running: list[RunningJob]
    ) -> tuple[list[str], list[Abandon], list[Lease]]:
        """A (re)connecting agent lists the jobs it runs: the ones it still holds (kept), the
        ones to tell it to abandon, and the leases it holds on jobs it no longer runs (it
        restarted, or never got the job), for ``give_back`` once the session is open."""
        kept: list[str] = []
        abandon: list[Abandon] = []
        for item in running:
            if self._leases.check(item.job_id, item.lease_id, session.contributor_id):
                kept.append(item.job_id)
            else:
                abandon.append(
                    Abandon(
                        job_id=item.job_id,
                        lease_id=item.lease_id,
                        reason="lease expired or job ended",
                    )
                )
        unlisted = [
            lease
            for lease in self._leases.held_by(session.contributor_id)
            if lease.job_id not in kept
        ]
        self.renew(session)
        return kept, abandon, unlisted

    async def give_back(self, leases: list[Lease], reason: str) -> None:
        """Requeue at once the jobs of ``leases`` (their holder does not run them): nothing
        waits for a lease to expire, and the job's attempt is not counted."""
        for lease in leases:
            await self._hand_back(lease, reason)

    async def set_lending(
        self,
        session: ContributorSession,
        lending: Lending,
        reason: str | None,
        slots: int | None = None,
    ) -> None:
        """What the agent lends changed: paused or draining, it gets no new job (it still
        reports on those it holds); active again, it is offered work. ``slots``: it runs
        that many jobs at once from now on."""
        self._sessions.set_lending(session, lending, reason)
        if slots is not None:
            session.slots = slots
        if self._sessions.get(session.contributor_id) is session:  # not a replaced one
            await self._contributors.set_state(
                session.contributor_id, ContributorState.of(lending, 0), reason
            )
            self._capacity_changed()
        if lending is Lending.ACTIVE and not self._is_full(session):
            self._mark_idle_if_free(session)
            await self.offer_idle()
        else:
            self._unidle(session.contributor_id)

    async def hand_back(
        self, holder: str, job_id: str, lease_id: str, reason: str, last_seq: int | None
    ) -> JobRow | Violation | None:
        """``holder`` gives up a job it runs under ``lease_id`` (it is leaving): the job is
        queued again for another contributor; None if that lease is not current."""
        lease = self._leases.check(job_id, lease_id, holder)
        if lease is None:
            return None
        return await self._hand_back(lease, reason, last_seq)

    async def _hand_back(
        self, lease: Lease, reason: str, last_seq: int | None = None
    ) -> JobRow | Violation | None:
        job = await self._jobs.hand_back(
            lease.job_id,
            reason,
            self._settings.max_handbacks,
            lease=(lease.lease_id, lease.holder),
            last_seq=last_seq,
        )
        if job is None or isinstance(job, Violation):
            return job
        self._release(lease.job_id)
        if job.status is JobStatus.QUEUED:
            self._queued(job)
        log.info("job %s handed back by %s (%s)", job.id, lease.holder, reason, extra=_ids(lease))
        self._hub.notify(job.id, queue_moved=True)
        await self.dispatch()
        return job

    def leases_of(self, contributor_id: str) -> list[Lease]:
        """The leases ``contributor_id`` holds now, by job id."""
        return self._leases.held_by(contributor_id)

    # ------------------------------------------------------------------ endings

    async def report_logs(
        self, holder: str, job_id: str, lease_id: str, records: list[LogRecord]
    ) -> int | Violation | None:
        """Store records ``holder`` reported under ``lease_id``; the seq to acknowledge, a
        Violation, or None when that lease is not current (checked once, as they are stored)."""
        acked = await self._logs.append(
            job_id, lease_id, holder, records, self._settings.max_log_bytes_per_job
        )
        if isinstance(acked, int):
            self._hub.records_added(job_id)
        return acked

    async def finish(
        self,
        holder: str,
        job_id: str,
        lease_id: str,
        status: JobStatus,
        *,
        exit_code: int | None = None,
        error: str | None = None,
        last_seq: int | None = None,
    ) -> JobRow | Violation | None:
        """End a running job as ``holder`` of ``lease_id`` reported, free the holder,
        dispatch more; None when that lease is not current (checked once, as it is stored)."""
        job = await self._jobs.finish(
            job_id, lease_id, holder, status, exit_code=exit_code, error=error, last_seq=last_seq
        )
        if isinstance(job, Violation):
            return job
        if job is None:
            log.info("ignored ending %s of job %s: lease not current", status, job_id)
            return None
        self._release(job_id)
        self._hub.notify(job_id)
        await self.offer_idle()
        return job

    async def cancel(self, job: JobRow) -> JobRow:
        """Cancel at once if queued or unreachable; otherwise ask its agent to stop it."""
        if job.status is JobStatus.QUEUED:
            cancelled = await self._cancel(job.id, "cancelled")
            self._hub.notify(job.id, queue_moved=True)
            return cancelled or job
        job = await self._jobs.request_cancel(job.id)
        lease = self._leases.of(job.id)
        if lease is None and await self._forward_cancel(job.id):
            return job
        session = self._sessions.get(lease.holder if lease else None)
        if lease is not None and session is not None and session.send(Cancel(job_id=job.id)):
            self._deadlines.cancel_sent(job.id, lease.lease_id, time.time())
            return job
        self._release(job.id)
        cancelled = await self._cancel(
            job.id, "cancelled", error="cancelled while its contributor was away"
        )
        self._hub.notify(job.id)
        await self.offer_idle()
        return cancelled or job

    async def _forward_cancel(self, job_id: str) -> bool:
        """Several coordinators: ``job_id``'s lease, not held here, is held and renewed by
        another one: it is told (``cluster``) and sends the cancel; whether it was. The
        cancel's grace is kept here too, so a lost hint still ends the job in time."""
        if self._cluster is None:
            return False
        row = await self._cluster.of(job_id)
        now = time.time()
        if row is None or row.lease_id.startswith(SWEPT) or row.expires_at <= now:
            return False  # nobody holds it: cancelled at once, as its contributor is away
        self._hub.cancel_requested(job_id)
        self._deadlines.cancel_sent(job_id, row.lease_id, now)
        return True

    def cancel_asked_elsewhere(self, job_id: str) -> None:
        """Another coordinator stored a cancel of ``job_id``: if its lease is held here, the
        cancel goes to its holder now (or when it comes back), and its grace starts."""
        lease = self._leases.of(job_id)
        if lease is None or self._deadlines.cancel_pending(job_id):
            return
        self._deadlines.cancel_sent(job_id, lease.lease_id, time.time())
        session = self._sessions.get(lease.holder)
        if session is not None:
            session.send(Cancel(job_id=job_id))

    async def contributor_gone(self, session: ContributorSession) -> None:
        """The socket closed. Its jobs keep their leases: the agent may come back in time."""
        last_state = self.contributor_state(session)
        if self._sessions.remove(session):
            self._unidle(session.contributor_id)
            self._capacity_changed()
            await self._contributors.went_offline(session.contributor_id, last_state)

    async def report_refused(self, holder: str, job_id: str) -> None:
        """A report of ``holder`` on ``job_id`` broke the rules: if it holds the job, the job
        is handled as if its contributor were lost."""
        lease = self._leases.of(job_id)
        if lease is not None and lease.holder == holder:
            await self._lease_lost(lease, "its contributor sent an invalid report")

    async def _fail(self, job_id: str, error: str) -> None:
        self._release(job_id)
        await self._jobs.fail(job_id, error, error=error, note=f"[compound] {error}")
        self._queue.discard(job_id)
        self._hub.notify(job_id, queue_moved=True)  # it may have been queued

    # ------------------------------------------------------------------ deadlines

    def cancels_for(self, job_ids: list[str]) -> list[Cancel]:
        """Cancels to send again to a contributor resuming ``job_ids``: those asked for (and
        not yet answered) before it reconnected, or before the coordinator restarted."""
        return [
            Cancel(job_id=job_id) for job_id in job_ids if self._deadlines.cancel_pending(job_id)
        ]

    async def _overdue(self, deadline: Deadline) -> None:
        """``deadline`` passed and its job's contributor did not end the job: end it here,
        release its lease (the holder's reports on it are refused) and tell it to abandon."""
        status, error = deadline.ending(self._deadlines.grace_s)
        ended = await self._jobs.end_overdue(
            deadline.job_id, deadline.lease_id, status, error=error, note=f"[compound] {error}"
        )
        if ended is None:
            return  # its agent's report came first, or the lease was already lost
        lease = self._release(deadline.job_id)
        holder = self._sessions.get(lease.holder if lease else None)
        if holder is not None:
            holder.send(Abandon(job_id=deadline.job_id, reason=error))
        log.warning("job %s: %s (%s)", deadline.job_id, error, lease.holder if lease else "?")
        self._hub.notify(deadline.job_id)
        await self.offer_idle()

    # ------------------------------------------------------------------ sweeping

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("lease sweep failed")

    async def sweep(self) -> None:
        for session in self._sessions.silent(time.monotonic(), self._settings.lease_timeout_s):
            log.warning("contributor %s silent, closing its connection", session.name)
            await self.contributor_gone(session)
            session.close(CLOSE_GOING_AWAY, "silent for too long")
        if self._cluster is None:
            for lease in self._leases.expired():
                await self._lease_lost(lease, "lease expired")
        else:
            await self._reconcile_leases(self._cluster)
        for deadline in self._deadlines.due(time.time()):
            try:
                await self._overdue(deadline)
            except Exception:  # the database failed: tried again at the next sweep
                log.exception("ending overdue job %s failed", deadline.job_id)
                self._deadlines.set(replace(deadline, at=time.time()))
        await self._write_back()
        self.job_counts = await self._jobs.count_by_status()
        in_memory = len(self._queue) + len(self._claiming)
        queued = self.job_counts.get(JobStatus.QUEUED.value, 0)
        # Several coordinators: a stale hint may also leave jobs here that are queued no more.
        if queued > in_memory or (self._cluster is not None and queued < len(self._queue)):
            # A safety net: whatever path queued a row without the in-memory queue knowing,
            # it waits one sweep. (Reloading is harmless: a claim's WHERE status refuses a
            # job that is no longer queued.) With other coordinators on the database, this
            # is also the fallback of a lost hint, and a hint merely late: not a warning.
            level = logging.DEBUG if self._cluster is not None else logging.WARNING
            log.log(level, "the in-memory queue missed queued jobs; reloading it")
            await self._load_queue()
            self._hub.queue_moved()
        if self._queue.has(plain_only=False) and self._idle:
            await self.dispatch()

    async def _reconcile_leases(self, rows: ClusterLeaseRows) -> None:
        """Several coordinators: what expired is decided by the lease rows, and each is
        recovered by one coordinator only (``shared_leases``)."""
        found = await reconcile(self._leases, rows, self._lease_ids, time.time())
        for lease in found.gone + found.elsewhere:
            self._release(lease.job_id)
        for lease in found.gone:
            holder = self._sessions.get(lease.holder)
            if holder is not None:
                holder.send(Abandon(job_id=lease.job_id, reason="lease expired or job ended"))
        for lease in found.lost:
            await self._lease_lost(lease, "lease expired")

    async def _lease_lost(self, lease: Lease, why: str) -> None:
        if self._leases.of(lease.job_id) is not lease:
            return  # already handled
        self._release(lease.job_id)
        holder = self._sessions.get(lease.holder)
        if holder is not None:
            holder.send(Abandon(job_id=lease.job_id, reason=why))
        job = await self._jobs.get(lease.job_id)
        if job is None or job.status is not JobStatus.RUNNING:
            return
        await self._recover(job)
        log.warning(
            "job %s: %s (%s, %s)", job.id, CONTRIBUTOR_LOST, lease.holder, why, extra=_ids(lease)
        )
        self._hub.notify(job.id, queue_moved=True)  # requeued: it may be ahead of others
        await self.dispatch()

    async def _recover(self, job: JobRow) -> None:
        """Requeue the job of a lost contributor once; then fail it."""
        if job.cancel_requested:
            await self._cancel(
                job.id, CONTRIBUTOR_LOST, error="cancelled; its contributor was lost"
            )
        elif job.attempts >= self._settings.max_attempts:
            await self._jobs.fail(
                job.id,
                CONTRIBUTOR_LOST,
                error=CONTRIBUTOR_LOST,
                note=f"[compound] {CONTRIBUTOR_LOST}; job failed",
            )
        else:
            await self._requeue(
                job.id,
                CONTRIBUTOR_LOST,
                note=f"{CONTRIBUTOR_LOST}; job requeued and will start again",
            )


def _job_message(job: JobRow, lease: Lease) -> Job:
    return Job(
        job_id=job.id,
        lease_id=lease.lease_id,
        script=job.script,
        args=job.args,
        env=job.env,
        timeout_s=job.timeout_s,
        requirements=job.requirements,
        first_seq=lease.first_seq,
        inputs=job.inputs,
        name=job.name,
        tenant=tenant_of(job.owner),
    )


def _ids(lease: Lease) -> dict[str, str]:
    """A log record's ids as fields (``--log-format json``)."""
    return {"job_id": lease.job_id, "contributor_id": lease.holder}
