"""Lease rows as coordinators sharing one PostgreSQL database see them: the row decides.

Each coordinator keeps the leases of its own contributors in memory and writes their
renewals back every sweep; the row is what the others see. A lease expired in memory is
recovered only if its row says so too, and only by the one coordinator whose conditional
``take_over`` changes the row's lease id (every other one, and the holder's late reports,
then find a lease id they do not hold). Used only on PostgreSQL with several coordinators
in mind; SQLite keeps its single-coordinator path.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from compound.coordinator.storage import db
from compound.coordinator.storage.jobs import LeaseRow, read_lease_rows


class ClusterLeaseRows:
    def __init__(self, engine: AsyncEngine, reader: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader

    async def all(self) -> dict[str, LeaseRow]:
        """Every lease row, by job id (one statement: a snapshot of the cluster's leases)."""
        return {row.job_id: row for row in await self._select()}

    async def held_by(self, holder: str) -> list[LeaseRow]:
        """The lease rows ``holder`` holds, whichever coordinator granted them."""
        return await self._select(holder)

    async def of(self, job_id: str) -> LeaseRow | None:
        """The lease row of ``job_id``, whichever coordinator granted it; None if it runs not."""
        found = await self._where(db.leases.c.job_id == job_id)
        return found[0] if found else None

    async def held_by_any(self, holders: list[str]) -> list[LeaseRow]:
        """The lease rows held by any of ``holders``, whichever coordinator granted them."""
        return await self._where(db.leases.c.holder.in_(holders)) if holders else []

    async def _where(self, condition: ColumnElement[bool]) -> list[LeaseRow]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(select(db.leases).where(condition))
            return [
                LeaseRow(
                    row.job_id,
                    row.lease_id,
                    row.holder,
                    row.first_seq,
                    row.expires_at,
                    row.granted_at,
                )
                for row in rows
            ]

    async def take_over(self, job_id: str, lease_id: str, now: float, new_lease_id: str) -> bool:
        """Whether this call made ``lease_id`` on ``job_id``, expired in its row at ``now``,
        into ``new_lease_id``: true for exactly one caller across coordinators, which then
        recovers the job; its holder's reports under the old id are refused from here on."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(db.leases)
                .where(db.leases.c.job_id == job_id)
                .where(db.leases.c.lease_id == lease_id)
                .where(db.leases.c.expires_at <= now)
                .values(lease_id=new_lease_id)
                .returning(db.leases.c.job_id)
            )
            return result.first() is not None

    async def _select(self, holder: str | None = None) -> list[LeaseRow]:
        return await read_lease_rows(self._reader, holder)
