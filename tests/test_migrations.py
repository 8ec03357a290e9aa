"""Schema migrations: the revisions build db.py's tables, and databases of the previous
release (SQLite data directories, PostgreSQL databases) open and upgrade in place."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import previous_schema
from compound.coordinator.storage import db, schema
from compound.coordinator.storage.tokens import hash_token
from support import Coordinator

TOKEN = "cct_previous-release-admin-token"
FINISHED, QUEUED = "a" * 32, "b" * 32
REVISIONS = [revision for revision, _ in schema.REVISION_MARKS]
# An hour ago: recent enough that retention leaves the finished job's logs alone.
T0 = time.time() - 3600


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: a SQLite file, a database in the throwaway cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'compound.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    created = sa.create_engine(database_url)
    yield created
    created.dispose()


def differences(connection: sa.Connection) -> list[object]:
    """What tells the database's schema from db.py's metadata (Alembic's autogenerate)."""
    context = MigrationContext.configure(connection, opts={"include_object": _compared})
    return list(compare_metadata(context, db.metadata))


def _compared(obj: object, name: str | None, kind: str, reflected: bool, _: object) -> bool:
    """PostgreSQL's ``contributors.rowid`` stands in for SQLite's built-in rowid (the
    contributors' registration order): not in the metadata on purpose."""
    table = getattr(getattr(obj, "table", None), "name", None)
    return not (kind == "column" and name == "rowid" and table == "contributors")


def fill_previous_release(connection: sa.Connection) -> None:
    """A few rows as the previous release wrote them: two jobs (one finished with its
    logs and events), a contributor and an admin token."""
    jobs = previous_schema.jobs
    base = {"args": "[]", "env": "{}", "attempts": 0, "cancel_requested": False}
    for job in [
            {**base, "id": FINISHED, "status": "succeeded", "script": "print('hi')",
             "name": "old", "created_at": T0, "started_at": T0 + 1,
             "finished_at": T0 + 2, "exit_code": 0, "contributor_id": "node-1",
             "attempts": 1, "last_seq": 1, "log_bytes": 9, "owner": "admin",
             "requirements": json.dumps(["six"])},
            {**base, "id": QUEUED, "status": "queued", "script": "pass",
             "created_at": T0 + 3, "last_seq": -1, "log_bytes": 0, "owner": "admin",
             "requirements": "[]"},
    ]:  # fmt: skip
        connection.execute(sa.insert(jobs).values(job))
    connection.execute(
        sa.insert(previous_schema.log_records),
        [
            {"job_id": FINISHED, "seq": 0, "stream": "stdout", "size": 3, "data": "hi\n"},
            {"job_id": FINISHED, "seq": 1, "stream": "stderr", "size": 6, "data": "done!\n"},
        ],
    )
    connection.execute(
        sa.insert(previous_schema.job_events),
        [
            {"job_id": FINISHED, "status": status, "at": at}
            for status, at in (("queued", T0), ("running", T0 + 1), ("succeeded", T0 + 2))
        ],
    )
    connection.execute(
        sa.insert(previous_schema.contributors).values(
            id="node-1", name="old-box", state="online", cores=4, memory_bytes=2**30,
            runtime="runc", version="0.1.0", last_seen=T0 + 2, token_name="admin",
        )
    )  # fmt: skip
    connection.execute(
        sa.insert(previous_schema.tokens).values(
            name="admin", role="admin", token_hash=hash_token(TOKEN), created_at=T0 - 1
        )
    )


def test_revisions_build_the_tables_of_db_py(engine: sa.Engine) -> None:
    """Every revision run in turn on an empty database gives exactly db.py's metadata."""
    with engine.begin() as connection:
        schema.upgrade_to(connection, "head")
        assert schema.current_revision(connection) == schema.HEAD
        assert differences(connection) == []


def test_head_constant_is_the_newest_revision() -> None:
    """schema.HEAD (stamped on new databases without loading Alembic) is the scripts' head,
    and REVISION_MARKS names every revision."""
    assert schema.head_revision() == schema.HEAD
    assert REVISIONS[-1] == schema.HEAD
    assert len(REVISIONS) == len(
        list((schema.MIGRATIONS_DIR / "versions").glob("r[0-9][0-9][0-9][0-9]_*.py"))
    )


def test_new_database_is_created_at_head(tmp_path: Path) -> None:
    """A new database gets db.py's tables and the head revision, without the revisions."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    with engine.begin() as connection:
        schema.upgrade_sync(connection)
        assert schema.current_revision(connection) == schema.HEAD
        assert differences(connection) == []
    engine.dispose()


@pytest.mark.parametrize("revision", [r for r, marks in schema.REVISION_MARKS if marks])
def test_unversioned_database_is_taken_at_the_revision_it_matches(
    tmp_path: Path, revision: str
) -> None:
    """A database at a revision but without Alembic's table is recognised as at it."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'compound.sqlite3'}")
    with engine.begin() as connection:
        schema.upgrade_to(connection, revision)
        connection.execute(sa.text("DROP TABLE alembic_version"))
        assert schema.adopted_revision(connection) == revision
        schema.upgrade_sync(connection)
        assert schema.current_revision(connection) == schema.HEAD
        assert differences(connection) == []
    engine.dispose()


def test_tokens_only_database_upgrades(tmp_path: Path) -> None:
    """A data directory where only `compound token create` ran (an unversioned database with
    the tokens table alone) keeps its token and gets every other table."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'compound.sqlite3'}")
    with engine.begin() as connection:
        previous_schema.tokens.create(connection)
        connection.execute(
            sa.insert(previous_schema.tokens).values(
                name="admin", role="admin", token_hash=hash_token(TOKEN), created_at=1.0
            )
        )
        schema.upgrade_sync(connection)
        assert differences(connection) == []
        assert connection.scalar(sa.select(db.tokens.c.name)) == "admin"
    engine.dispose()


def test_previous_release_database_upgrades_in_place(engine: sa.Engine) -> None:
    """A database of the previous release, rows and all, is upgraded to db.py's tables; the
    added columns are filled for the rows already there."""
    with engine.begin() as connection:
        previous_schema.metadata.create_all(connection)
        fill_previous_release(connection)
    with engine.begin() as connection:
        schema.upgrade_sync(connection)
    with engine.connect() as connection:
        assert schema.current_revision(connection) == schema.HEAD
        assert differences(connection) == []
        jobs = {row.id: row for row in connection.execute(sa.select(db.jobs))}
        assert jobs[FINISHED].last_attempt == 1 and jobs[QUEUED].last_attempt == 0
        # Its script, args and env in bytes, and its 9 bytes of logs.
        assert jobs[FINISHED].db_bytes == len("print('hi')") + 2 + 2 + 9
        assert jobs[FINISHED].requirements == '["six"]'
        records = connection.execute(
            sa.select(db.log_records.c.data, db.log_records.c.attempt).order_by("seq")
        ).all()
        assert [tuple(record) for record in records] == [("hi\n", 1), ("done!\n", 1)]
        assert connection.scalar(sa.select(sa.func.count()).select_from(db.job_events)) == 3
        assert connection.scalar(sa.select(db.tokens.c.token_hash)) == hash_token(TOKEN)
        assert connection.scalar(sa.select(db.contributors.c.name)) == "old-box"


def test_coordinator_starts_on_a_previous_release_data_dir(tmp_path: Path) -> None:
    """Today's coordinator starts on a data directory the previous release made and serves
    its jobs, logs, contributors and tokens."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    engine = sa.create_engine(f"sqlite:///{data_dir / 'compound.sqlite3'}")
    with engine.begin() as connection:
        previous_schema.metadata.create_all(connection)
        fill_previous_release(connection)
    engine.dispose()
    coordinator = Coordinator(data_dir=data_dir).start()
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert coordinator.api("GET", f"/api/v1/jobs/{FINISHED}").status_code == 401
        response = coordinator.api("GET", f"/api/v1/jobs/{FINISHED}", headers=headers)
        assert response.status_code == 200, response.text
        job = response.json()
        assert (job["status"], job["exit_code"], job["name"]) == ("succeeded", 0, "old")
        queued = coordinator.api("GET", f"/api/v1/jobs/{QUEUED}", headers=headers).json()
        assert queued["status"] == "queued"
        page = coordinator.api(
            "GET", f"/api/v1/jobs/{FINISHED}/logs", params={"after": -1}, headers=headers
        ).json()
        assert [(r["seq"], r["data"]) for r in page["records"]] == [(0, "hi\n"), (1, "done!\n")]
        contributors = coordinator.api("GET", "/api/v1/contributors", headers=headers).json()
        assert [(c["id"], c["state"]) for c in contributors["contributors"]] == [
            ("node-1", "offline")
        ]
    finally:
        coordinator.stop()
