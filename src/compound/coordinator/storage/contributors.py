"""Durable state of contributors: who they are, when they were last seen, what they run."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from compound.coordinator.storage import db
from compound.protocol import ContributorState, Hello


@dataclass(frozen=True)
class Seen:
    """The latest heartbeat of one contributor and when it arrived (time.time())."""

    last_seen: float
    cpu_percent: float
    ram_free_bytes: int
    ram_total_bytes: int


@dataclass(frozen=True)
class ContributorRow:
    id: str
    name: str
    state: ContributorState
    cores: int
    memory_bytes: int
    runtime: str
    version: str
    cpu_percent: float | None
    ram_free_bytes: int | None
    ram_total_bytes: int | None
    last_seen: float | None
    token_name: str | None
    # Why it is paused or draining; kept, with its last state, while it is offline.
    state_reason: str | None = None
    last_state: ContributorState | None = None


class ContributorStore:
    def __init__(self, engine: AsyncEngine, reader: AsyncEngine | None = None) -> None:
        self._engine = engine
        self._reader = reader or engine

    async def connected(self, hello: Hello, token_name: str | None = None) -> None:
        """Record a connection; the first token to register a node id keeps it."""
        values = {
            "name": hello.name,
            # Busy or not is known in memory (the API answers from there while it is online).
            "state": ContributorState.of(hello.lending, 0).value,
            "state_reason": hello.lending_reason,
            "last_state": None,
            "cores": hello.cores,
            "memory_bytes": hello.memory_bytes,
            "runtime": hello.runtime,
            "version": hello.version,
            "last_seen": time.time(),
        }
        statement = sqlite_insert(db.contributors).values(
            id=hello.node_id, token_name=token_name, **values
        )
        async with self._engine.begin() as conn:
            keep_owner = func.coalesce(db.contributors.c.token_name, token_name)
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["id"], set_={**values, "token_name": keep_owner}
                )
            )

    async def token_of(self, node_id: str) -> str | None:
        """The token that registered ``node_id`` (None: unknown, or registered in open mode)."""
        async with self._reader.connect() as conn:
            return await conn.scalar(
                select(db.contributors.c.token_name).where(db.contributors.c.id == node_id)
            )

    async def seen(self, batch: dict[str, Seen]) -> None:
        """Write back heartbeats kept in memory (one statement for all of them)."""
        await db.execute_many(
            self._engine,
            "UPDATE contributors SET last_seen = ?, cpu_percent = ?, ram_free_bytes = ?,"
            " ram_total_bytes = ? WHERE id = ?",
            [
                (s.last_seen, s.cpu_percent, s.ram_free_bytes, s.ram_total_bytes, node_id)
                for node_id, s in batch.items()
            ],
        )

    async def set_state(
        self, contributor_id: str, state: ContributorState, reason: str | None = None
    ) -> None:
        """A connected contributor's lending changed: ``state`` and why (``reason``)."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(db.contributors)
                .where(db.contributors.c.id == contributor_id)
                .values(state=state.value, state_reason=reason)
            )

    async def went_offline(self, contributor_id: str, last_state: ContributorState) -> None:
        """It disconnected in ``last_state``; its reason stays as it was."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(db.contributors)
                .where(db.contributors.c.id == contributor_id)
                .values(state=ContributorState.OFFLINE.value, last_state=last_state.value)
            )

    async def mark_all_offline(self) -> None:
        """At start: nobody is connected; what they were doing is kept as their last state."""
        was = db.contributors.c.state
        online = [
            state.value for state in ContributorState if state is not ContributorState.OFFLINE
        ]
        async with self._engine.begin() as conn:
            await conn.execute(
                update(db.contributors).values(
                    last_state=case((was.in_(online), was), else_=db.contributors.c.last_state),
                    state=ContributorState.OFFLINE.value,
                )
            )

    async def list(self) -> list[ContributorRow]:
        async with self._reader.connect() as conn:
            result = await conn.execute(
                select(db.contributors).order_by(db.contributors.c.last_seen.desc())
            )
            rows = [dict(row) for row in result.mappings()]
        for row in rows:
            row["state"] = _state(row["state"]) or ContributorState.OFFLINE
            row["last_state"] = _state(row["last_state"])
        return [ContributorRow(**row) for row in rows]


def _state(value: str | None) -> ContributorState | None:
    """A stored state; None for none, or for one this version does not know (an older
    database's ``online``)."""
    try:
        return ContributorState(value) if value is not None else None
    except ValueError:
        return None
