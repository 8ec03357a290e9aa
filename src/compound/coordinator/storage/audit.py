"""The audit trail: who created or revoked a token, who cancelled another submitter's job.

Rows are only ever appended. The command line writes its rows in the same transaction as the
change they record (``record``, on a synchronous connection); the coordinator through
:class:`AuditLog`. Read back with ``compound admin audit`` or ``GET /api/v1/audit``.
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy import Connection, insert, select
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine

from compound.coordinator.storage import db, schema

MAX_DETAIL_CHARS = 1000


class AuditAction(StrEnum):
    TOKEN_CREATED = "token.create"
    TOKEN_REVOKED = "token.revoke"
    JOB_CANCELLED = "job.cancel"  # another submitter's job, by an admin


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    detail: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }


def command_line_actor() -> str:
    """Who runs the command line, as the audit trail names them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown user"
    return f"command line ({user})"


def _values(actor: str, action: AuditAction, target: str, detail: str | None) -> dict[str, object]:
    return {
        "at": time.time(),
        "actor": actor[:160],
        "action": action.value,
        "target": target[:160],
        "detail": None if detail is None else detail[:MAX_DETAIL_CHARS],
    }


def record(
    conn: Connection, actor: str, action: AuditAction, target: str, detail: str | None = None
) -> None:
    """Append a row in the caller's (synchronous) transaction."""
    conn.execute(insert(db.audit).values(**_values(actor, action, target, detail)))


def read_entries(data_dir: Path, limit: int = 1000) -> list[AuditEntry]:
    """The newest ``limit`` rows of a data directory's trail, oldest first (the CLI's read)."""
    path = data_dir / "compound.sqlite3"
    if not path.exists():
        return []
    engine = create_sync_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            schema.upgrade_sync(conn)
            rows = conn.execute(_newest(limit)).mappings()
            return sorted((AuditEntry(**dict(row)) for row in rows), key=lambda e: e.id)
    finally:
        engine.dispose()


def _newest(limit: int):  # type: ignore[no-untyped-def]
    return select(db.audit).order_by(db.audit.c.id.desc()).limit(limit)


class AuditLog:
    """The coordinator's side: appends through its writing engine, reads through a reader."""

    def __init__(self, engine: AsyncEngine, reader: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader

    async def record(
        self, actor: str, action: AuditAction, target: str, detail: str | None = None
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(db.audit).values(**_values(actor, action, target, detail)))

    async def newest(self, limit: int) -> list[AuditEntry]:
        async with self._reader.connect() as conn:
            rows = (await conn.execute(_newest(limit))).mappings()
            return sorted((AuditEntry(**dict(row)) for row in rows), key=lambda e: e.id)
