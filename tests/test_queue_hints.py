"""The queue hints between coordinators and the queue mirror's reloads, without a database."""

from __future__ import annotations

from compound.coordinator.scheduling import queue_hints
from compound.coordinator.scheduling.cluster import QUEUE, QUEUED, parse, payloads
from compound.coordinator.scheduling.job_queue import JobQueue, QueuedJob


def test_a_queue_entry_travels_whole() -> None:
    """An entry's number, owner (any text, or none), packages flag and id are read back."""
    for entry in [
        QueuedJob(7, "ab12", "alice, the admin %20", plain=False),
        QueuedJob(123456789, "ff00", None, plain=True),
    ]:
        (payload,) = payloads("origin", [QUEUED + queue_hints.encode(entry), QUEUE + "cd"])
        origin, posts = parse(payload)
        assert origin == "origin" and posts[1] == (QUEUE, "cd")
        assert posts[0][0] == QUEUED and queue_hints.decode(posts[0][1]) == entry


def test_a_malformed_queue_entry_is_skipped() -> None:
    """A post that does not name an entry is read as nothing."""
    for text in ["", "x,p,,id", "1,q,,id", "1,p,", "1,p"]:
        assert queue_hints.decode(text) is None


def test_a_reload_keeps_what_moved_while_it_read() -> None:
    """Adds and discards made while a reload read the rows are applied over what it read."""
    queue = JobQueue()
    queue.add(QueuedJob(1, "one", None, plain=True))
    journal = queue.reload_journal()
    queue.add(QueuedJob(3, "three", None, plain=True))  # committed after the read
    queue.discard("two")  # claimed elsewhere after the read
    read = [QueuedJob(1, "one", None, True), QueuedJob(2, "two", None, True)]
    queue.replace_all(read, journal)
    assert [queue.take(plain_only=False).id for _ in range(len(queue))] == ["one", "three"]
    queue.add(QueuedJob(4, "four", None, plain=True))
    queue.replace_all([], queue.reload_journal())  # the journal ended with its reload
    assert len(queue) == 0
