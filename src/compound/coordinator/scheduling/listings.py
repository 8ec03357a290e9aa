"""Leases a connected agent has stopped listing: it dropped the job without a word.

A current agent lists in every heartbeat the leases it holds, up to the ack of their ending.
A lease it listed once (so it had the job) and then leaves out of ``MISSES`` heartbeats in a
row is one it no longer runs, whatever the cause on its side (a bug, a lost state). Its job
is given back then, instead of staying ``running`` for ever under a lease that the same
heartbeats keep renewing.

A lease never listed yet is left alone: its job message may still be on its way (a large
script on a slow link), and nothing but the agent's own list proves it arrived. An ending
cannot race the list: the agent keeps listing a lease until the ending is acknowledged.
"""

from __future__ import annotations

from compound.coordinator.scheduling.leases import Lease

# Heartbeats in a row without a listed lease before its job is given back.
MISSES = 2


class Listings:
    """One agent's listed leases, heartbeat after heartbeat (one per session)."""

    def __init__(self) -> None:
        # lease id -> heartbeats in a row that left it out since it was last listed
        self._misses: dict[str, int] = {}

    def heard(self, listed: set[str], held: list[Lease]) -> list[Lease]:
        """A heartbeat listed the lease ids ``listed`` while the agent holds ``held``: the
        leases it has dropped (listed before, left out ``MISSES`` times in a row)."""
        dropped: list[Lease] = []
        misses: dict[str, int] = {}
        for lease in held:
            if lease.lease_id in listed:
                misses[lease.lease_id] = 0
            elif lease.lease_id in self._misses:
                count = self._misses[lease.lease_id] + 1
                if count >= MISSES:
                    dropped.append(lease)
                else:
                    misses[lease.lease_id] = count
        self._misses = misses  # leases no longer held are forgotten
        return dropped
