"""What a coordinator shows of the cluster it belongs to: its own name, the coordinators it
sees on the shared database, and the jobs of the contributors connected to the others.

A coordinator knows its own contributors from memory; the others' are rows of the shared
database (``storage.contributors``: each row names the coordinator it is on). A row that
says "connected" is believed only while its coordinator is live (``storage.peers``): one
SIGKILLed leaves its rows as they were, and no code of its own runs to mark them offline.
On SQLite the coordinator is alone, and nothing here reads the database.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable

from compound.coordinator.storage.cluster_rows import ClusterLeaseRows
from compound.coordinator.storage.peers import stored_name

log = logging.getLogger("compound.coordinator")

# How old the list of live coordinators may be (one read of pg_stat_activity each time).
REFRESH_S = 2.0
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def coordinator_name(host: str, port: int) -> str:
    """``host:port`` as it listens; a wildcard address is replaced by the machine's name."""
    if host in _WILDCARDS:
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ClusterView:
    def __init__(
        self,
        name: str,
        read_peers: Callable[[], Awaitable[set[str]]] | None = None,
        lease_rows: ClusterLeaseRows | None = None,
    ) -> None:
        """``read_peers`` and ``lease_rows`` when others may share the database; without
        them, a coordinator of its own."""
        self.name = stored_name(name)
        self.shared = read_peers is not None
        self._read_peers = read_peers
        self._lease_rows = lease_rows
        self._peers: frozenset[str] | None = None  # None: not read yet
        self._task: asyncio.Task[None] | None = None

    @property
    def peers(self) -> frozenset[str]:
        """The coordinators seen live (this one included), at most ``REFRESH_S`` old."""
        return (self._peers or frozenset()) | {self.name}

    def is_live(self, coordinator: str | None) -> bool:
        """Whether a contributor row naming ``coordinator`` may be believed connected (true
        while the live ones are not read yet: nothing is known against it)."""
        if not self.shared or self._peers is None:
            return True
        return coordinator is not None and coordinator in self.peers

    async def know(self, coordinators: set[str | None]) -> None:
        """Make sure ``coordinators`` (those named by rows about to be shown) are judged on
        a fresh read if any is not among the live ones yet: one that started since the last
        read is seen at once. (A dead one's rows cost this read at each listing.)"""
        if self.shared and not {c for c in coordinators if c is not None} <= self.peers:
            try:
                await self.refresh()
            except Exception as exc:  # the last list stands
                log.warning("reading the live coordinators failed (%s)", exc)

    async def jobs_held(self, holders: list[str]) -> dict[str, list[str]]:
        """The running jobs of each of ``holders`` (contributors of other coordinators), by
        job id, from the lease rows."""
        if self._lease_rows is None:
            return {}
        held: dict[str, list[str]] = {}
        for row in await self._lease_rows.held_by_any(holders):
            held.setdefault(row.holder, []).append(row.job_id)
        return {holder: sorted(jobs) for holder, jobs in held.items()}

    async def refresh(self) -> None:
        if self._read_peers is not None:
            self._peers = frozenset(await self._read_peers())

    def start(self) -> None:
        if self._read_peers is not None:
            self._task = asyncio.create_task(self._refresh_forever(), name="cluster-peers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the database failed: the last list stands
                log.warning("reading the live coordinators failed (%s)", exc)
            await asyncio.sleep(REFRESH_S)
