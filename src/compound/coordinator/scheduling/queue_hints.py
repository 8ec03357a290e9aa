"""Queue hints between coordinators: what a job's announcement says of the queue, applied to
the mirror without reading the rows.

A coordinator that moved a job in or out of the queue announces it (``cluster``) with what
its own mirror says *when the announcement is sent*: either the job's queue entry (number,
whether it needs packages, owner: all a mirror keeps, ``job_queue.QueuedJob``) or that the
job is not queued. The others apply that to their mirrors, so a job queued on one
coordinator can be claimed by another at once, and a job claimed or cancelled elsewhere
leaves every mirror, each for a few microseconds instead of a reload of the whole queue.

The rows stay the truth. An entry applied from a hint that turned out stale (the job was
claimed meanwhile) is refused by the claim's ``WHERE status`` like any stale entry; a hint
lost (the listening connection dropped) is made up for by a full reload when listening
starts again and by the sweep's count check (``Scheduler.sweep``).

A post reads ``<number>,<p|r>,<owner>,<job id>`` (``p``: plain, no packages; ``r``: needs
them); the owner is percent-encoded (no space, no comma), empty for none.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from compound.coordinator.scheduling.job_queue import QueuedJob


def encode(job: QueuedJob) -> str:
    """``job`` as the text of a post (after its kind)."""
    owner = "" if job.owner is None else quote(job.owner, safe="")
    return f"{job.number},{'p' if job.plain else 'r'},{owner},{job.id}"


def decode(text: str) -> QueuedJob | None:
    """The entry a post's text names, or None if it is malformed."""
    parts = text.split(",", 3)
    if len(parts) != 4 or not parts[0].isdigit() or parts[1] not in ("p", "r") or not parts[3]:
        return None
    number, plain, owner, job_id = parts
    return QueuedJob(int(number), job_id, unquote(owner) if owner else None, plain == "p")
