"""`compound token create|list|revoke`: access tokens, kept in the coordinator's data dir.

They work while the coordinator runs: it picks up a new or revoked token within seconds.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from compound.protocol.auth import Role

token_app = typer.Typer(
    help="Access tokens: who may submit, contribute or administer. Auth is on as soon as one "
    "token exists in the coordinator's data directory.",
    no_args_is_help=True,
)

DataDirOption = Annotated[
    Path, typer.Option(help="The coordinator's data directory (its --data-dir).")
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        envvar="COMPOUND_DATABASE",
        help="The coordinator's PostgreSQL URL (its --database), if it has one.",
    ),
]


def _fail(message: str) -> typer.Exit:
    print(f"compound token: {message}", file=sys.stderr)
    return typer.Exit(1)


@token_app.command("create")
def create(
    role: Annotated[Role, typer.Option(help="submitter, contributor or admin.")],
    name: Annotated[str, typer.Option(help="A unique name, shown in lists and logs.")],
    data_dir: DataDirOption = Path(".compound"),
    database: DatabaseOption = None,
) -> None:
    """Create a token and print it alone on stdout: it is shown only this once."""
    from compound.coordinator.storage.backend import DatabaseUrlError
    from compound.coordinator.storage.data_dir import DataDirError
    from compound.coordinator.storage.tokens import TokenError, create_token

    if not name.strip() or len(name) > 128 or not name.isprintable():
        raise _fail("the name must be 1 to 128 printable characters")
    try:
        token = create_token(data_dir, name, role, database)
    except (TokenError, DataDirError, DatabaseUrlError) as exc:
        raise _fail(str(exc)) from None
    print(token)


@token_app.command("list")
def list_(
    data_dir: DataDirOption = Path(".compound"),
    database: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Names, roles, created and last-used times; never a secret."""
    from compound.coordinator.storage.backend import DatabaseUrlError
    from compound.coordinator.storage.data_dir import DataDirError
    from compound.coordinator.storage.tokens import list_tokens

    try:
        tokens = list_tokens(data_dir, database)
    except (DataDirError, DatabaseUrlError) as exc:
        raise _fail(str(exc)) from None
    if as_json:
        rows = [
            {
                "name": t.name,
                "role": t.role.value,
                "created_at": t.created_at,
                "last_used_at": t.last_used_at,
                "revoked_at": t.revoked_at,
            }
            for t in tokens
        ]
        print(json.dumps(rows, indent=2))
        return
    if not tokens:
        print("no tokens: the coordinator is open (loopback only)")
        return
    print(f"{'NAME':24} {'ROLE':12} {'CREATED':20} {'LAST USED':20} STATE")
    for t in tokens:
        state = "revoked" if t.revoked_at else "active"
        print(
            f"{t.name[:24]:24} {t.role.value:12} {_when(t.created_at):20} "
            f"{_when(t.last_used_at):20} {state}"
        )


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    data_dir: DataDirOption = Path(".compound"),
    database: DatabaseOption = None,
) -> None:
    """Revoke a token: refused within seconds, its open connections closed."""
    from compound.coordinator.storage.backend import DatabaseUrlError
    from compound.coordinator.storage.data_dir import DataDirError
    from compound.coordinator.storage.tokens import TokenError, revoke_token

    try:
        revoke_token(data_dir, name, database)
    except (TokenError, DataDirError, DatabaseUrlError) as exc:
        raise _fail(str(exc)) from None
    print(f"revoked {name}", file=sys.stderr)


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "never"
