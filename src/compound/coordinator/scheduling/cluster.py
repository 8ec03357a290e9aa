"""Several coordinators on one PostgreSQL database: wake-ups travel between them.

The database holds every job, lease and record; what each coordinator keeps in memory (the
queue mirror, its followers' alarms) learns of the others' changes through hints: a
``ClusterHub`` is the change hub that also posts what changed here, and a ``ClusterLink``
sends those posts (LISTEN/NOTIFY, ``storage.notify_channel``) and acts on the others':

- a job queued, claimed or requeued elsewhere: the hint carries what the sender's queue
  mirror says of the job (its entry, or that it is not queued: ``queue_hints``), applied to
  the mirror here without a query, then a dispatch (debounced: one per ``DISPATCH_GAP_S``
  however many hints came). The whole mirror is reloaded from the rows only when hints may
  have been lost: each time listening (re)starts;
- a job changed or got records elsewhere: its followers here are woken and read the database
  after their last sequence number (``follow``), so none sees a gap or a duplicate;
- a cancel asked for elsewhere of a job whose lease is held here: the cancel goes to its
  contributor from here (``Scheduler.cancel_asked_elsewhere``). The cancel itself is stored
  first (the job row's ``cancel_requested``); if this hint is lost, the coordinator that took
  the request ends the job after the cancel's grace and this one's sweep then finds the lease
  gone and tells the contributor to abandon it.

Hints can be lost; nothing depends on them for correctness. The sweep reloads a queue mirror
that misses rows or holds stale ones (its count check, every second), the lease rows decide
expiries
(``shared_leases``), and a follower re-reads its job at its idle recheck.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from compound.coordinator.scheduling import queue_hints
from compound.coordinator.scheduling.hub import ChangeHub
from compound.coordinator.scheduling.job_queue import QueuedJob
from compound.coordinator.scheduling.scheduler import Scheduler
from compound.coordinator.storage.notify_channel import MAX_PAYLOAD_BYTES, NotifyChannel

log = logging.getLogger("compound.coordinator")

# The kinds of change a post names, each a one-letter prefix of the job id.
QUEUE = "q"  # it entered or left the queue (and changed); as sent: it is not queued
QUEUED = "a"  # as sent for QUEUE: it is queued, with its entry (``queue_hints``)
CHANGED = "c"  # it changed (status, attempt, contributor)
RECORDS = "r"  # it got records
CANCEL = "x"  # a cancel was asked for (and stored): its lease's holder sends it
DISPATCH_GAP_S = 0.05
SEND_RETRY_S = 1.0


class ClusterHub(ChangeHub):
    """The change hub of a coordinator sharing its database: local followers are woken as
    by ``ChangeHub``, and each change is posted for the other coordinators."""

    def __init__(self) -> None:
        super().__init__()
        self._posts: dict[str, None] = {}  # in order, each once
        self.posted = asyncio.Event()

    def notify(self, job_id: str, *, queue_moved: bool = False) -> None:
        super().notify(job_id, queue_moved=queue_moved)
        self._post(QUEUE if queue_moved else CHANGED, job_id)

    def records_added(self, job_id: str) -> None:
        super().records_added(job_id)
        self._post(RECORDS, job_id)

    def job_queued(self, job_id: str) -> None:
        self._post(QUEUE, job_id)

    def cancel_requested(self, job_id: str) -> None:
        self._post(CANCEL, job_id)

    def changed_elsewhere(self, kind: str, job_id: str) -> None:
        """Another coordinator posted this: wake the followers here, post nothing."""
        if kind == RECORDS:
            super().records_added(job_id)
        else:
            super().notify(job_id)

    def take_posts(self) -> list[str]:
        posts, self._posts = list(self._posts), {}
        self.posted.clear()
        return posts

    def _post(self, kind: str, job_id: str) -> None:
        self._posts[kind + job_id] = None
        self.posted.set()


def payloads(origin: str, posts: list[str]) -> list[str]:
    """``posts`` as notification payloads: "origin post post ...", each under the limit."""
    out: list[str] = []
    current = origin
    for post in posts:
        if len(current) + 1 + len(post) > MAX_PAYLOAD_BYTES:
            out.append(current)
            current = origin
        current += " " + post
    if current != origin:
        out.append(current)
    return out


def parse(payload: str) -> tuple[str, list[tuple[str, str]]]:
    """A payload's origin and its (kind, job id) posts; malformed posts are skipped."""
    origin, *posts = payload.split(" ")
    return origin, [(post[0], post[1:]) for post in posts if len(post) > 1 and post[0] in "qcrxa"]


class ClusterLink:
    """This coordinator's side of the hints: sends its hub's posts, acts on the others'."""

    def __init__(self, channel: NotifyChannel, hub: ClusterHub, scheduler: Scheduler) -> None:
        self._channel = channel
        self._hub = hub
        self._scheduler = scheduler
        self._origin = uuid.uuid4().hex[:12]
        self._moved = asyncio.Event()  # hints moved the queue here: dispatch
        self._reload = False  # hints may have been lost: reload the queue first
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._channel.listen(self._received, self._listening)),
            asyncio.create_task(self._send_forever(), name="cluster-send"),
            asyncio.create_task(self._dispatch_forever(), name="cluster-dispatch"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._channel.close()

    def _listening(self) -> None:
        """Listening (re)started: what was announced meanwhile is lost."""
        self._reload = True
        self._moved.set()

    def _received(self, payload: str) -> None:
        origin, posts = parse(payload)
        if origin == self._origin:
            return
        added: list[QueuedJob] = []
        left: list[str] = []
        for kind, text in posts:
            if kind == QUEUED:
                entry = queue_hints.decode(text)
                if entry is None:
                    continue
                added.append(entry)
                self._hub.changed_elsewhere(QUEUE, entry.id)
                continue
            self._hub.changed_elsewhere(kind, text)
            if kind == QUEUE:
                left.append(text)
            elif kind == CANCEL:
                self._scheduler.cancel_asked_elsewhere(text)
        if added or left:
            self._scheduler.queue_hinted(added, left)
            self._moved.set()

    def _as_sent(self, posts: list[str]) -> list[str]:
        """Queue posts as the queue mirror here says now: the job's entry, or not queued."""
        sent = []
        for post in posts:
            entry = self._scheduler.queued_entry(post[1:]) if post[0] == QUEUE else None
            sent.append(post if entry is None else QUEUED + queue_hints.encode(entry))
        return sent

    async def _send_forever(self) -> None:
        # Whatever is posted while a send is under way goes in the next one: batching
        # grows with the load, and an idle hub sends at once.
        while True:
            await self._hub.posted.wait()
            posts = self._hub.take_posts()
            try:
                await self._channel.send(payloads(self._origin, self._as_sent(posts)))
            except Exception as exc:  # lost hints cost the others latency, not correctness
                log.warning("telling the other coordinators failed (%s)", exc)
                await asyncio.sleep(SEND_RETRY_S)

    async def _dispatch_forever(self) -> None:
        while True:
            await self._moved.wait()
            self._moved.clear()
            reload, self._reload = self._reload, False
            try:
                if reload:
                    await self._scheduler.queue_changed_elsewhere()
                else:
                    self._hub.queue_moved()
                    await self._scheduler.dispatch()
            except Exception:
                self._reload = reload  # tried again at the next hint (the sweep meanwhile)
                log.exception("acting on the other coordinators' queue hints failed")
            await asyncio.sleep(DISPATCH_GAP_S)
