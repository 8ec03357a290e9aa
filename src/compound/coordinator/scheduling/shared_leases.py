"""Leases when several coordinators share one PostgreSQL database: the rows decide.

Each coordinator holds in memory the leases of its own contributors (granted, adopted when
one reconnects to it, or found at start), renews them and writes the renewals back every
sweep. Its sweep then compares memory with the rows (``reconcile``), so a lease is acted on
once cluster-wide:

- expired in memory and in its row: taken over (``ClusterLeaseRows.take_over``, a
  conditional UPDATE that one coordinator wins) and its job recovered here;
- expired in memory only: renewed through another coordinator (its contributor moved
  there): dropped here, nothing else;
- its row gone or under another lease id: the job ended or moved on elsewhere (cancelled,
  taken over): dropped here, its holder told to abandon it;
- a row expired that no coordinator renews (its coordinator died, its contributor did not
  come back) and not held here: taken over and recovered, like the first case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compound.coordinator.scheduling.leases import Lease, Leases
from compound.coordinator.scheduling.random_ids import RandomIds
from compound.coordinator.storage.cluster_rows import ClusterLeaseRows

# A taken-over row's lease id: no contributor holds it, so every report on it is refused.
SWEPT = "swept-"


@dataclass
class Reconciled:
    lost: list[Lease] = field(default_factory=list)  # taken over here: recover their jobs
    gone: list[Lease] = field(default_factory=list)  # ended elsewhere: drop, tell the holder
    elsewhere: list[Lease] = field(default_factory=list)  # renewed elsewhere: drop only


async def reconcile(
    leases: Leases, rows: ClusterLeaseRows, ids: RandomIds, now: float
) -> Reconciled:
    """Compare the leases in memory with the rows at ``now`` (see the module docstring).
    Leases taken over from rows not held here are granted in ``leases`` first, so the
    caller recovers every lease of ``lost`` alike."""
    held = {lease.job_id: lease for lease in leases.all()}  # before the read: their rows exist
    snapshot = await rows.all()
    found = Reconciled()
    for job_id, lease in held.items():
        if leases.of(job_id) is not lease:
            continue  # released or replaced while the rows were read
        row = snapshot.get(job_id)
        if row is None or row.lease_id != lease.lease_id:
            found.gone.append(lease)
        elif not lease.expired(now):
            continue
        elif row.expires_at > now:
            found.elsewhere.append(lease)
        elif await rows.take_over(job_id, lease.lease_id, now, SWEPT + ids.next()):
            found.lost.append(lease)
    for job_id, row in snapshot.items():
        if job_id in held or leases.of(job_id) is not None or row.expires_at > now:
            continue
        swept = SWEPT + ids.next()
        if await rows.take_over(job_id, row.lease_id, now, swept):
            lease = Lease(job_id, swept, row.holder, row.first_seq, row.expires_at)
            leases.grant(lease)
            found.lost.append(lease)
    return found
