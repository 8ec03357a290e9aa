"""`compound admin audit|backup|migrate`: an operator's tools, run on the coordinator's machine."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

admin_app = typer.Typer(
    help="Operator tools that read the coordinator's data directory directly.",
    no_args_is_help=True,
)

DataDirOption = Annotated[
    Path, typer.Option(help="The coordinator's data directory (its --data-dir).")
]


def _fail(message: str) -> typer.Exit:
    print(f"compound admin: {message}", file=sys.stderr)
    return typer.Exit(1)


@admin_app.command("audit")
def audit(
    data_dir: DataDirOption = Path(".compound"),
    limit: Annotated[int, typer.Option(min=1, help="The newest this many entries.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """The audit trail, oldest first: tokens created and revoked, cancels of others' jobs."""
    from compound.coordinator.storage.audit import read_entries

    entries = read_entries(data_dir, limit)
    if as_json:
        for entry in entries:
            print(json.dumps(entry.as_dict()))
        return
    print(f"{'WHEN':20} {'ACTOR':28} {'ACTION':14} {'TARGET':24} DETAIL")
    for entry in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.at))
        print(
            f"{when:20} {entry.actor[:28]:28} {entry.action:14} {entry.target[:24]:24} "
            f"{entry.detail or ''}"
        )


@admin_app.command("backup")
def backup(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) directory for the copy.")],
    data_dir: DataDirOption = Path(".compound"),
) -> None:
    """Copy the database and the files it refers to into DEST, while the coordinator runs.

    DEST is a data directory: `compound coordinator --data-dir DEST` starts on it.
    """
    from compound.coordinator.storage.backup import backup as take_backup
    from compound.coordinator.storage.data_dir import DataDirError

    try:
        report = take_backup(data_dir, dest)
    except (DataDirError, OSError) as exc:
        raise _fail(str(exc)) from None
    print(
        f"backed up {data_dir} to {dest}: database {report.database_bytes} bytes, "
        f"{report.blobs} files ({report.blob_bytes} bytes)",
        file=sys.stderr,
    )
    if report.missing_blobs:
        print(
            f"compound admin: {report.missing_blobs} file(s) the database names were gone "
            "(removed by retention meanwhile)",
            file=sys.stderr,
        )


@admin_app.command("migrate")
def migrate(
    database: Annotated[
        str,
        typer.Option(
            help="The PostgreSQL database to copy into, empty: postgresql://USER[:PASSWORD]@HOST/NAME."
        ),
    ],
    data_dir: DataDirOption = Path(".compound"),
) -> None:
    """Copy the data directory's SQLite database into an empty PostgreSQL database.

    Stop the coordinator first. The files stay in the data directory: start the coordinator
    with the same --data-dir and the database URL.
    """
    from compound.coordinator.storage.transfer import TransferError, transfer

    def progress(table: str, rows: int) -> None:
        print(f"{table}: {rows} rows", file=sys.stderr)

    try:
        report = transfer(data_dir, database, progress=progress)
    except TransferError as exc:
        raise _fail(str(exc)) from None
    print(f"copied {sum(report.rows.values())} rows from {data_dir}", file=sys.stderr)
    if report.nul_values:
        print(
            f"compound admin: {report.nul_values} text value(s) held NUL characters, which "
            "PostgreSQL cannot store: each became U+FFFD",
            file=sys.stderr,
        )
