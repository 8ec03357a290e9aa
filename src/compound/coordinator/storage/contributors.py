"""Durable state of contributors: who they are, when they were last seen, what they run."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import ColumnClause, Integer, case, func, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from compound.coordinator.storage import db
from compound.coordinator.storage.peers import live_coordinators, stored_name
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
    # The coordinator it is connected to, or last was (several on one database; else None).
    coordinator: str | None = None


class ContributorStore:
    def __init__(
        self, engine: AsyncEngine, reader: AsyncEngine | None = None, coordinator: str | None = None
    ) -> None:
        """``coordinator``: this coordinator's name when others may share the database
        (``peers``): written in the rows of the contributors connecting here."""
        self._engine = engine
        self._reader = reader or engine
        self._coordinator = None if coordinator is None else stored_name(coordinator)

    async def connected(
        self, hello: Hello, token_name: str | None = None, max_nodes: int | None = None
    ) -> str | None:
        """Record a connection; the first token to register a node id keeps it.

        Returns a sentence instead, recording nothing, when the node id is another token's,
        or new while ``token_name`` has registered ``max_nodes`` already (None: no limit).
        Checked and written in one transaction, so concurrent hellos cannot overshoot."""
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
        if self._coordinator is not None:
            values["coordinator"] = self._coordinator
        insert = sqlite_insert if self._engine.dialect.name == "sqlite" else postgresql_insert
        statement = insert(db.contributors).values(
            id=hello.node_id, token_name=token_name, **values
        )
        async with self._engine.begin() as conn:
            if token_name is not None:
                refusal = await _refusal(conn, hello.node_id, token_name, max_nodes)
                if refusal is not None:
                    return refusal
            keep_owner = func.coalesce(db.contributors.c.token_name, token_name)
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["id"], set_={**values, "token_name": keep_owner}
                )
            )
        return None

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
        """It disconnected in ``last_state``; its reason stays as it was. With other
        coordinators on the database, only if its row says it was here: it may be connected
        to another one already."""
        statement = update(db.contributors).where(db.contributors.c.id == contributor_id)
        if self._coordinator is not None:
            column = db.contributors.c.coordinator
            statement = statement.where(or_(column.is_(None), column == self._coordinator))
        async with self._engine.begin() as conn:
            await conn.execute(
                statement.values(state=ContributorState.OFFLINE.value, last_state=last_state.value)
            )

    async def mark_all_offline(self) -> None:
        """At start: nobody is connected; what they were doing is kept as their last state.
        With other coordinators on the database, nobody but theirs: the contributors of a
        coordinator still listening on it are left as they are."""
        was = db.contributors.c.state
        online = [
            state.value for state in ContributorState if state is not ContributorState.OFFLINE
        ]
        statement = update(db.contributors)
        if self._coordinator is not None:
            others = await live_coordinators(self._reader)
            column = db.contributors.c.coordinator
            statement = statement.where(or_(column.is_(None), column.not_in(others)))
        async with self._engine.begin() as conn:
            await conn.execute(
                statement.values(
                    last_state=case((was.in_(online), was), else_=db.contributors.c.last_state),
                    state=ContributorState.OFFLINE.value,
                )
            )

    async def page(self, after: int, limit: int) -> tuple[list[ContributorRow], int | None]:
        """Up to ``limit`` contributors in registration order, after the position ``after``
        (0: from the start), and the position to ask for next (None: that was the last).

        A position is SQLite's rowid (on PostgreSQL a column of that name, see
        ``backend``): stable while rows are updated, and it says nothing of a node id
        (which only admins see)."""
        rowid: ColumnClause[int] = literal_column("rowid", Integer)
        async with self._reader.connect() as conn:
            result = await conn.execute(
                select(rowid.label("position"), db.contributors)
                .where(rowid > after)
                .order_by(rowid)
                .limit(limit + 1)
            )
            rows = [dict(row) for row in result.mappings()]
        more = len(rows) > limit
        rows = rows[:limit]
        positions = [row.pop("position") for row in rows]
        for row in rows:
            row["state"] = _state(row["state"]) or ContributorState.OFFLINE
            row["last_state"] = _state(row["last_state"])
        return [ContributorRow(**row) for row in rows], (positions[-1] if more else None)


async def _refusal(
    conn: AsyncConnection, node_id: str, token_name: str, max_nodes: int | None
) -> str | None:
    owner = (
        await conn.execute(
            select(db.contributors.c.token_name).where(db.contributors.c.id == node_id)
        )
    ).first()
    if owner is not None:
        if owner.token_name is not None and owner.token_name != token_name:
            return "this node id is registered to another token"
        return None
    if max_nodes is None:
        return None
    registered = await conn.scalar(
        select(func.count())
        .select_from(db.contributors)
        .where(db.contributors.c.token_name == token_name)
    )
    if (registered or 0) >= max_nodes:
        return (
            f"this token has registered its limit of {max_nodes} node ids: reuse one "
            "or ask the operator"
        )
    return None


def _state(value: str | None) -> ContributorState | None:
    """A stored state; None for none, or for one this version does not know (an older
    database's ``online``)."""
    try:
        return ContributorState(value) if value is not None else None
    except ValueError:
        return None
