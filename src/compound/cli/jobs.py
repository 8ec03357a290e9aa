"""The submitter's commands: submit, logs, status, cancel, jobs, contributors."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from compound.cli.client import (
    ClientError,
    CoordinatorClient,
    UnknownJobError,
    default_coordinator,
    default_token,
)
from compound.cli.exit_codes import UNREACHABLE
from compound.cli.follow import follow_job
from compound.protocol import JobView, Stream
from compound.tls import default_ca_file

CoordinatorOption = Annotated[
    str,
    typer.Option(
        "--coordinator",
        "-c",
        help="Coordinator URL (default: $COMPOUND_COORDINATOR or http://127.0.0.1:8000).",
    ),
]
TokenOption = Annotated[
    str,
    typer.Option(
        "--token",
        help="Access token, when the coordinator requires one (default: $COMPOUND_TOKEN).",
        show_default=False,
    ),
]
CaFileOption = Annotated[
    str,
    typer.Option(
        "--ca-file",
        metavar="FILE",
        help="A PEM CA certificate to trust for an https coordinator, besides the system's "
        "(default: $COMPOUND_CA_FILE).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

# soft_wrap: a sentence stays on one line, whatever the width of the terminal.
err = Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def _client(url: str, token: str = "", ca_file: str = "") -> Iterator[CoordinatorClient]:
    try:
        client = CoordinatorClient(
            url or default_coordinator(),
            token or default_token(),
            ca_file=ca_file or default_ca_file(),
        )
    except ClientError as exc:
        err.print(f"compound: {exc}", style="red")
        raise typer.Exit(UNREACHABLE) from None
    try:
        yield client
    except UnknownJobError as exc:
        err.print(f"compound: {exc}", style="red")
        raise typer.Exit(UNREACHABLE) from None
    except ClientError as exc:
        err.print(f"compound: {exc}", style="red")
        raise typer.Exit(UNREACHABLE) from None
    finally:
        client.close()


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--env")
        env[name] = value
    return env


def _read_script(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise typer.BadParameter(f"no such file: {path}", param_hint="FILE") from None
    except IsADirectoryError:
        raise typer.BadParameter(f"{path} is a directory", param_hint="FILE") from None
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{path} is not UTF-8 text", param_hint="FILE") from None


def submit(
    file: Annotated[Path, typer.Argument(help="The Python script to run.")],
    args: Annotated[
        list[str] | None,
        typer.Argument(help="Arguments passed to the script (put -- before ones starting with -)."),
    ] = None,
    coordinator: CoordinatorOption = "",
    token: TokenOption = "",
    ca_file: CaFileOption = "",
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Stop the job after this many seconds (exit 124)."),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", help="NAME=VALUE set in the job's environment (repeatable)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name for the job.")] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Print only the job id and return at once.")
    ] = False,
) -> None:
    """Run FILE on a contributor and stream its output here.

    The job's stdout goes to stdout and its stderr to stderr, live. While it waits for an idle
    contributor, its queue position is shown on stderr (when stderr is a terminal). Ctrl-C
    cancels the job (a second Ctrl-C stops following at once). Exits with the script's exit
    code.
    """
    script = _read_script(file)
    with _client(coordinator, token, ca_file) as client:
        job = client.submit(
            script, list(args or []), _parse_env(env or []), timeout, name or file.name
        )
        if detach:
            typer.echo(job.id)
            return
        code = follow_job(client, job.id, cancel_on_interrupt=True)
    raise typer.Exit(code)


def logs(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep streaming until the job ends; exit with its code."
        ),
    ] = False,
    coordinator: CoordinatorOption = "",
    token: TokenOption = "",
    ca_file: CaFileOption = "",
) -> None:
    """Print a job's output so far (stdout to stdout, stderr to stderr)."""
    with _client(coordinator, token, ca_file) as client:
        if follow:
            raise typer.Exit(follow_job(client, job_id, cancel_on_interrupt=False))
        after = -1
        while True:
            page = client.logs(job_id, after)
            for record in page["records"]:
                target = sys.stdout if record["stream"] == Stream.STDOUT.value else sys.stderr
                target.buffer.write(record["data"].encode("utf-8"))
            after = page["last_seq"]
            if not page["records"]:
                break
        sys.stdout.flush()
        sys.stderr.flush()


def status(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    coordinator: CoordinatorOption = "",
    token: TokenOption = "",
    ca_file: CaFileOption = "",
    as_json: JsonOption = False,
) -> None:
    """Show a job's status, exit code and timings."""
    with _client(coordinator, token, ca_file) as client:
        job = client.job(job_id)
    if as_json:
        typer.echo(job.model_dump_json(indent=2))
        return
    table = Table(show_header=False, box=None)
    for key, value in _job_fields(job):
        table.add_row(key, value)
    Console().print(table)


def _job_fields(job: JobView) -> list[tuple[str, str]]:
    fields = [("id", job.id), ("status", job.status.value)]
    if job.queue_position:
        fields.append(("queue position", str(job.queue_position)))
    if job.exit_code is not None:
        fields.append(("exit code", str(job.exit_code)))
    if job.error:
        fields.append(("error", job.error))
    fields.append(("contributor", job.contributor_id or "-"))
    fields.append(("created", _when(job.created_at)))
    fields.append(("duration", _duration(job)))
    return fields


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def _duration(job: JobView) -> str:
    if job.started_at is None:
        return "-"
    end = job.finished_at or time.time()
    return f"{end - job.started_at:.1f} s"


def cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    coordinator: CoordinatorOption = "",
    token: TokenOption = "",
    ca_file: CaFileOption = "",
) -> None:
    """Cancel a job: at once if queued; a running one gets SIGTERM, then SIGKILL."""
    with _client(coordinator, token, ca_file) as client:
        job = client.cancel(job_id)
    err.print(f"job {job.id}: {'cancelled' if job.status.is_terminal else 'cancelling'}")


def jobs(
    coordinator: CoordinatorOption = "",
    token: TokenOption = "",
    ca_file: CaFileOption = "",
    limit: Annotated[int, typer.Option(help="How many recent jobs.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List recent jobs, newest first."""
    with _client(coordinator, token, ca_file) as client:
        views = client.jobs(limit)
    if as_json:
        typer.echo(json.dumps([view.model_dump() for view in views], indent=2))
        return
    _print_table(
        ["id", "status", "exit", "duration", "contributor", "name"],
        [
            [
                v.id,
                v.status.value,
                "" if v.exit_code is None else str(v.exit_code),
                _duration(v),
                v.contributor_id or "",
                v.name or "",
            ]
            for v in views
        ],
    )


def contributors(
    coordinator: CoordinatorOption = "",
    token: TokenOption = "",
    ca_file: CaFileOption = "",
    as_json: JsonOption = False,
) -> None:
    """List contributors: online or offline, CPU, free RAM, current job."""
    with _client(coordinator, token, ca_file) as client:
        rows = client.contributors()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    # Node ids and current jobs are shown to admins only.
    _print_table(
        ["name", "state", "runtime", "cpu", "ram free", "job"],
        [
            [
                r["name"],
                r["state"],
                r.get("runtime") or "",
                _fmt(r["cpu_percent"], "{:.0f}%"),
                _fmt(r["ram_free_bytes"], "{:.0f} MiB", 1 / (1024 * 1024)),
                r.get("current_job_id") or ("busy" if r.get("busy") else ""),
            ]
            for r in rows
        ],
    )


def _fmt(value: Any, pattern: str, scale: float = 1.0) -> str:
    return "-" if value is None else pattern.format(value * scale)


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    table = Table(*headers, box=None, header_style="bold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
