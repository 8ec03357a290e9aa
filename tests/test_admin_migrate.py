"""`compound admin migrate`: a SQLite data directory copied row for row into PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from compound.coordinator.storage import db, schema
from compound.coordinator.storage.data_dir import prepare_data_dir
from compound.coordinator.storage.tokens import create_token
from compound.coordinator.storage.transfer import transfer
from compound.protocol.auth import Role
from support import product_env

NOW = time.time()
JOBS = 7  # more than one batch of 3 rows, and not a multiple of it


def fill(connection: sa.Connection) -> None:
    """Jobs in every state with logs, events, a lease, inputs, uploads and artifacts."""
    for number in range(1, JOBS + 1):
        job_id = f"{number:032x}"
        finished = number <= 4
        connection.execute(
            sa.insert(db.jobs).values(
                number=number * 10,  # numbers with gaps: kept as they are
                id=job_id,
                status="succeeded" if finished else ("running" if number == 5 else "queued"),
                script=f"print({number})",
                args='["--n"]',
                env='{"A": "1"}',
                created_at=NOW + number,
                started_at=NOW + number + 0.5 if number <= 5 else None,
                finished_at=NOW + number + 0.75 if finished else None,
                exit_code=0 if finished else None,
                cancel_requested=number == 6,
                owner="alice",
                inputs_sha256="f" * 64 if number == 1 else None,
                inputs_size=10 if number == 1 else None,
                last_attempt=1 if number <= 5 else 0,
                db_bytes=40,
            )
        )
        connection.execute(
            sa.insert(db.job_events), [{"job_id": job_id, "status": "queued", "at": NOW + number}]
        )
        if number <= 5:
            connection.execute(
                sa.insert(db.log_records),
                [
                    {"job_id": job_id, "seq": seq, "stream": "stdout", "size": 4,
                     "data": f"{seq}\x00x\n" if number == 2 and seq == 1 else f"{seq} x\n",
                     "attempt": 1}
                    for seq in range(3)
                ],
            )  # fmt: skip
    connection.execute(
        sa.insert(db.leases).values(
            job_id=f"{5:032x}", lease_id="lease-5", holder="node-1", first_seq=0,
            granted_at=NOW, expires_at=NOW + 30,
        )
    )  # fmt: skip
    connection.execute(
        sa.insert(db.uploads).values(sha256="f" * 64, owner="alice", size=10, uploaded_at=NOW)
    )
    connection.execute(
        sa.insert(db.artifacts),
        [{"job_id": f"{1:032x}", "path": "out/result.txt", "size": 3, "sha256": "e" * 64}],
    )
    connection.execute(
        sa.insert(db.contributors).values(
            id="node-1", name="box", state="online", cores=2, memory_bytes=2**30,
            runtime="runsc", version="0.1.0", cpu_percent=12.5, last_seen=NOW,
        )
    )  # fmt: skip
    connection.execute(sa.insert(db.usage).values(owner="alice", jobs=7, db_bytes=280))


def rows_of(connection: sa.Connection, table: sa.Table) -> list[tuple[Any, ...]]:
    query = sa.select(table).order_by(*table.primary_key.columns)
    return [tuple(row) for row in connection.execute(query)]


def migrate(data_dir: Path, url: str) -> subprocess.CompletedProcess[str]:
    # The URL as an operator writes it, without SQLAlchemy's driver name.
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    return subprocess.run(
        [sys.executable, "-m", "compound", "admin", "migrate", "--data-dir", str(data_dir),
         "--database", plain],
        capture_output=True, text=True, timeout=60, env=product_env(),
    )  # fmt: skip


def make_data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    database = data_dir / "compound.sqlite3"
    prepare_data_dir(data_dir, database)
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        schema.upgrade_sync(connection)
        fill(connection)
    engine.dispose()
    create_token(data_dir, "admin", Role.ADMIN)  # a token and its audit row, as the CLI does
    return data_dir


def test_migrate_copies_every_row_and_numbers_on(tmp_path: Path, postgres_url: str) -> None:
    """Every table's rows arrive as they were (keys kept, NULs excepted), in batches, and
    new rows number on from the largest copied key."""
    data_dir = make_data_dir(tmp_path)
    report = transfer(data_dir, postgres_url, batch_rows=3)
    assert report.rows["jobs"] == JOBS and report.nul_values == 1
    source = sa.create_engine(f"sqlite:///{data_dir / 'compound.sqlite3'}")
    target = sa.create_engine(postgres_url)
    with source.connect() as src, target.connect() as dst:
        assert schema.current_revision(dst) == schema.HEAD
        for table in db.metadata.sorted_tables:
            expected = rows_of(src, table)
            if table is db.log_records:
                expected = [
                    tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row)
                    for row in expected
                ]
            assert rows_of(dst, table) == expected, table.name
            assert expected or table is db.usage, f"the test fills {table.name}"
    with target.begin() as dst:
        number = dst.execute(
            sa.insert(db.jobs)
            .values(id="n" * 32, status="queued", script="pass", created_at=NOW)
            .returning(db.jobs.c.number)
        ).scalar_one()
        assert number == JOBS * 10 + 1
        event = dst.execute(
            sa.insert(db.job_events)
            .values(job_id="n" * 32, status="queued", at=NOW)
            .returning(db.job_events.c.id)
        ).scalar_one()
        assert event == JOBS + 1
    source.dispose()
    target.dispose()


def test_migrate_refuses_a_target_with_rows(tmp_path: Path, postgres_url: str) -> None:
    """A second migrate into the same database is refused with a sentence, changing nothing."""
    data_dir = make_data_dir(tmp_path)
    first = migrate(data_dir, postgres_url)
    assert first.returncode == 0, first.stderr
    assert "jobs: 7 rows" in first.stderr
    assert "1 text value(s) held NUL characters" in first.stderr
    again = migrate(data_dir, postgres_url)
    assert again.returncode == 1
    assert "is not empty (its " in again.stderr
    assert "Traceback" not in again.stderr
    target = sa.create_engine(postgres_url)
    with target.connect() as dst:
        assert dst.scalar(sa.select(sa.func.count()).select_from(db.jobs)) == JOBS
    target.dispose()


def test_migrate_refuses_what_is_not_postgresql(tmp_path: Path) -> None:
    """A target that is not a PostgreSQL URL is refused before anything is read."""
    done = migrate(make_data_dir(tmp_path), f"sqlite:///{tmp_path / 'other.sqlite3'}")
    assert done.returncode == 1
    assert "must be a PostgreSQL database" in done.stderr
