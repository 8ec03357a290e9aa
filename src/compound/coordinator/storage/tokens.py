"""Access tokens: created, listed and revoked by `compound token`, checked by the coordinator.

Tokens are 256-bit random strings shown once; only their SHA-256 is stored (a slow hash buys
nothing for secrets this long). The coordinator keeps a copy of the table in memory and
re-reads it every ``REFRESH_S`` seconds, so a token created or revoked from the command line
takes effect without a restart, and the sockets of a revoked token are closed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import insert, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from compound.coordinator.storage import audit, backend, db, schema
from compound.protocol.auth import Role

REFRESH_S = 2.0
TOKEN_PREFIX = "cct_"


@dataclass(frozen=True)
class TokenInfo:
    name: str
    role: Role
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


@dataclass(frozen=True)
class Principal:
    """Who is asking: a token's name and role, or (open mode) a client address as admin."""

    name: str
    role: Role
    # False in open mode: nobody authenticated, everybody may do everything.
    authenticated: bool = True

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenError(Exception):
    """A sentence for the operator (duplicate name, unknown name)."""


# ---------------------------------------------------------------- the command line's side


def _sync_engine(data_dir: Path, database_url: str | None = None):  # type: ignore[no-untyped-def]
    from compound.coordinator.storage.data_dir import prepare_data_dir

    if database_url is not None:  # PostgreSQL: the coordinator creates the schema
        engine = create_sync_engine(backend.check_url(database_url))
        db.metadata.create_all(engine, tables=[db.tokens, db.audit])
        return engine
    database = data_dir / "compound.sqlite3"
    prepare_data_dir(data_dir, database)
    engine = create_sync_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        schema.upgrade_sync(conn)
    return engine


def create_token(data_dir: Path, name: str, role: Role, database_url: str | None = None) -> str:
    """A new token named ``name``; returns the token itself (it is not stored)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    engine = _sync_engine(data_dir, database_url)
    try:
        with engine.begin() as conn:
            if conn.scalar(select(db.tokens.c.name).where(db.tokens.c.name == name)):
                raise TokenError(f"a token named {name!r} exists already")
            conn.execute(
                insert(db.tokens).values(
                    name=name, role=role.value, token_hash=hash_token(token), created_at=time.time()
                )
            )
            audit.record(
                conn, audit.command_line_actor(), audit.AuditAction.TOKEN_CREATED, name, role.value
            )
    finally:
        engine.dispose()
    return token


def list_tokens(data_dir: Path, database_url: str | None = None) -> list[TokenInfo]:
    engine = _sync_engine(data_dir, database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(db.tokens).order_by(db.tokens.c.created_at)).mappings()
            return [_info(row) for row in rows]
    finally:
        engine.dispose()


def revoke_token(data_dir: Path, name: str, database_url: str | None = None) -> None:
    engine = _sync_engine(data_dir, database_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(
                update(db.tokens)
                .where(db.tokens.c.name == name)
                .where(db.tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
            if result.rowcount != 1:
                raise TokenError(f"no active token named {name!r}")
            audit.record(conn, audit.command_line_actor(), audit.AuditAction.TOKEN_REVOKED, name)
    finally:
        engine.dispose()


def tokens_exist(data_dir: Path, database_url: str | None = None) -> bool:
    """Whether auth is on for this data directory, or this PostgreSQL database (any token
    was ever created)."""
    if database_url is not None:
        engine = create_sync_engine(backend.check_url(database_url))
        try:
            with engine.connect() as conn:
                if not inspect(conn).has_table("tokens"):
                    return False
                return conn.execute(select(db.tokens.c.name).limit(1)).first() is not None
        finally:
            engine.dispose()
    path = data_dir / "compound.sqlite3"
    if not path.exists():
        return False
    engine = create_sync_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            has_table = conn.exec_driver_sql(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='tokens'"
            ).first()
            return bool(has_table and conn.exec_driver_sql("SELECT 1 FROM tokens").first())
    finally:
        engine.dispose()


def _info(row: object) -> TokenInfo:
    values = dict(row)  # type: ignore[call-overload]
    return TokenInfo(
        name=values["name"],
        role=Role(values["role"]),
        created_at=values["created_at"],
        last_used_at=values["last_used_at"],
        revoked_at=values["revoked_at"],
    )


# ---------------------------------------------------------------- the coordinator's side


@dataclass
class _Entry:
    info: TokenInfo
    token_hash: str


class TokenBook:
    """The coordinator's copy of the tokens table, refreshed every REFRESH_S seconds."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._by_hash: dict[str, _Entry] = {}
        self._any = False
        self._used: dict[str, float] = {}
        self.revoked: set[str] = set()

    @property
    def auth_on(self) -> bool:
        return self._any

    async def refresh(self) -> list[str]:
        """Re-read the table (writing back last-used times); returns names newly revoked."""
        await self._write_last_used()
        async with self._engine.connect() as conn:
            rows = list((await conn.execute(select(db.tokens))).mappings())
        self._any = bool(rows)
        self._by_hash = {
            row["token_hash"]: _Entry(_info(row), row["token_hash"])
            for row in rows
            if row["revoked_at"] is None
        }
        revoked = {row["name"] for row in rows if row["revoked_at"] is not None}
        newly = sorted(revoked - self.revoked)
        self.revoked = revoked
        return newly

    def verify(self, token: str) -> Principal | None:
        """The principal for ``token``, or None if it is unknown or revoked."""
        digest = hash_token(token)
        entry = self._by_hash.get(digest)
        # The lookup is by a hash the caller cannot steer; the final check is constant-time.
        if entry is None or not hmac.compare_digest(entry.token_hash, digest):
            return None
        self._used[entry.info.name] = time.time()
        return Principal(entry.info.name, entry.info.role)

    async def _write_last_used(self) -> None:
        if not self._used:
            return
        used, self._used = self._used, {}
        async with self._engine.begin() as conn:
            for name, at in used.items():
                await conn.execute(
                    update(db.tokens).where(db.tokens.c.name == name).values(last_used_at=at)
                )

    async def close(self) -> None:
        await self._write_last_used()
        await self._engine.dispose()


def describe_roles(roles: Sequence[Role]) -> str:
    return " or ".join(role.value for role in roles)
