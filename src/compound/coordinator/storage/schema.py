"""The schema brought up to date: every database (SQLite or PostgreSQL) is upgraded to the
newest revision of ``migrations/`` when it is opened, in one transaction.

A new database gets db.py's tables at once and is stamped at the head, and one at the head is
left as it is: neither loads Alembic (a third of a second at every start). A database made
before migrations existed has no ``alembic_version`` table: it is stamped at the newest
revision whose tables and columns it has (``REVISION_MARKS``), then upgraded like any other.
The revisions leave alone what a database has already (``migrations.changes``), so a
database from a build between two releases comes through too.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from compound.coordinator.storage import db

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("compound.coordinator")
# Alembic's own INFO lines (its context, each step) would fill the coordinator's log at every
# start; ``upgrade_sync`` says what matters.
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The newest revision in migrations/versions (a test holds the two equal).
HEAD = "0007"
# Alembic's own table, as Alembic makes it: a new database is stamped without loading Alembic.
_alembic_version = sa.Table(
    "alembic_version",
    sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)
# Any constant: PostgreSQL coordinators starting at once upgrade one after the other.
UPGRADE_LOCK_KEY = 0x636F6D706F756E64  # "compound"

# What each revision leaves in a database (tables, with columns it added to them), oldest
# first. The first entry lists the tables of the previous release and the columns it added
# to them since the first release (older databases lack some: they match no revision).
REVISION_MARKS: list[tuple[str, dict[str, set[str]]]] = [
    (
        "0001",
        {
            "jobs": {"log_bytes", "owner", "requirements", "inputs_size", "files_removed_at"},
            "uploads": set(),
            "artifacts": set(),
            "leases": set(),
            "job_events": set(),
            "log_records": {"size"},
            "contributors": {"token_name"},
            "tokens": set(),
        },
    ),
    ("0002", {"jobs": {"db_bytes"}, "usage": set()}),
    ("0003", {"jobs": {"last_attempt"}, "log_records": {"attempt"}}),
    ("0004", {"audit": set()}),
    ("0005", {"contributors": {"state_reason", "last_state"}}),
    # Column types on PostgreSQL only: a SQLite database at 0005 is at 0006 too.
    ("0006", {}),
    ("0007", {"contributors": {"coordinator"}}),
]


def _config(connection: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "r%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision of the scripts themselves (``HEAD`` must say the same)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: sa.Connection) -> str | None:
    """The revision ``connection``'s database is at (None: unversioned or empty)."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    return connection.scalar(sa.select(_alembic_version.c.version_num))


def adopted_revision(connection: sa.Connection) -> str | None:
    """The newest revision an unversioned database matches (None: empty, or older than
    the first revision)."""
    inspector = sa.inspect(connection)
    tables = set(inspector.get_table_names())
    matched = None
    for revision, marks in REVISION_MARKS:
        if not marks:
            continue  # leaves nothing to tell it by here: the upgrade runs it (a no-op)
        for table, columns in marks.items():
            if table not in tables:
                return matched
            present = {info["name"] for info in inspector.get_columns(table)}
            if not columns <= present:
                return matched
        matched = revision
    return matched


def upgrade_sync(connection: sa.Connection) -> None:
    """Bring ``connection``'s database to the newest revision, in its transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
    tables = set(sa.inspect(connection).get_table_names())
    if not tables & {*db.metadata.tables, _alembic_version.name}:
        db.metadata.create_all(connection)
        _alembic_version.create(connection)
        connection.execute(sa.insert(_alembic_version).values(version_num=HEAD))
        return
    current = current_revision(connection)
    if current == HEAD:
        return
    from alembic import command

    config = _config(connection)
    if current is None:
        current = adopted_revision(connection)
        log.info(
            "database made before schema migrations: taken as revision %s",
            current or "(none, older than the first)",
        )
        if current is not None:
            command.stamp(config, current)
    log.info("upgrading the database schema from %s to %s", current or "nothing", HEAD)
    command.upgrade(config, "head")


def upgrade_to(connection: sa.Connection, revision: str) -> None:
    """Run the revisions up to ``revision`` (no shortcut for a new database)."""
    from alembic import command

    command.upgrade(_config(connection), revision)


async def upgrade(engine: AsyncEngine) -> None:
    """``upgrade_sync`` on one of ``engine``'s connections."""
    async with engine.begin() as connection:
        await connection.run_sync(upgrade_sync)


def write_revision(message: str) -> Path:
    from alembic import command

    """Write a new revision from the difference between the head and db.py's metadata
    (autogenerate, against a scratch SQLite database at head); returns its file."""

    number = f"{int(head_revision()) + 1:04d}"
    with tempfile.TemporaryDirectory() as scratch:
        engine = sa.create_engine(f"sqlite:///{scratch}/head.sqlite3")
        try:
            with engine.begin() as connection:
                upgrade_sync(connection)
                script = command.revision(
                    _config(connection), message, autogenerate=True, rev_id=number
                )
        finally:
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)
