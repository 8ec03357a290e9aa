"""The submitter's commands: submit, logs, status, cancel, jobs, contributors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from compound.cli import quick
from compound.cli.client import CoordinatorClient
from compound.cli.waiting import contributor_state
from compound.protocol import JobView

CoordinatorOption = Annotated[
    str,
    typer.Option(
        "--coordinator",
        "-c",
        help="Coordinator URL, or several as A,B,... (sharing one database: a request or a"
        " follow goes to the next when one cannot be reached) (default: $COMPOUND_COORDINATOR"
        " or http://127.0.0.1:8000).",
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


# A requirements file is a few lines; a bigger one is a mistake.
_MAX_REQUIREMENTS_FILE_BYTES = 64 * 1024


def _read_requirements(path: Path) -> list[str]:
    """The packages listed in ``path``, each checked as the coordinator will."""
    from compound.protocol.requirements import RequirementsError, read_requirements_file

    hint = "-r"
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_REQUIREMENTS_FILE_BYTES + 1)
    except FileNotFoundError:
        raise typer.BadParameter(f"no such file: {path}", param_hint=hint) from None
    except IsADirectoryError:
        raise typer.BadParameter(f"{path} is a directory", param_hint=hint) from None
    if len(data) > _MAX_REQUIREMENTS_FILE_BYTES:
        raise typer.BadParameter(f"{path} is larger than 64 KiB", param_hint=hint)
    try:
        return read_requirements_file(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{path} is not UTF-8 text", param_hint=hint) from None
    except RequirementsError as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint=hint) from None


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
    requirements: Annotated[
        Path | None,
        typer.Option(
            "--requirements",
            "-r",
            help="A requirements.txt of Python packages the job needs (besides the script's"
            " own PEP 723 '# /// script' block); package requirements only, no options.",
        ),
    ] = None,
    inputs: Annotated[
        list[Path] | None,
        typer.Option(
            "--input",
            "-i",
            help="A file or folder the job finds, read-only, in its working directory under "
            "its base name (repeatable; 100 MiB in all by default).",
        ),
    ] = None,
    outputs: Annotated[
        Path | None,
        typer.Option(
            "--outputs",
            metavar="DIR",
            help="When the job ends, download what it wrote under outputs/ into DIR.",
        ),
    ] = None,
) -> None:
    """Run FILE on a contributor and stream its output here.

    The job's stdout goes to stdout and its stderr to stderr, live. While it waits for an idle
    contributor, its queue position is shown on stderr (when stderr is a terminal). Ctrl-C
    cancels the job (a second Ctrl-C stops following at once). Exits with the script's exit
    code.
    """
    script = _read_script(file)
    job_env = _parse_env(env or [])
    job_requirements = _read_requirements(requirements) if requirements else None
    if detach and outputs is not None:
        raise typer.BadParameter("needs to follow the job: drop --detach", param_hint="--outputs")
    raise typer.Exit(
        quick.with_client(
            coordinator,
            token,
            ca_file,
            lambda client: quick.submit(
                client,
                script,
                list(args or []),
                job_env,
                timeout,
                name or file.name,
                detach,
                job_requirements,
                list(inputs or []),
                outputs,
            ),
        )
    )


def artifacts(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir", "-o", metavar="DIR", help="Where to put them (default: ./ID)."
        ),
    ] = None,
    coordinator: CoordinatorOption = "",
    token: TokenOption = "",
    ca_file: CaFileOption = "",
) -> None:
    """Download the files a job wrote under outputs/ (kept for the coordinator's retention)."""
    directory = output_dir if output_dir is not None else Path(job_id)
    raise typer.Exit(
        quick.with_client(
            coordinator,
            token,
            ca_file,
            lambda client: quick.fetch_outputs(client, job_id, directory),
        )
    )


def logs(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep streaming until the job ends; exit with its code."
        ),
    ] = False,
    attempt: Annotated[
        int | None,
        typer.Option(
            "--attempt",
            metavar="N",
            help="The output of attempt N (a job handed back or requeued ran more than once).",
        ),
    ] = None,
    all_attempts: Annotated[
        bool,
        typer.Option("--all", help="Every attempt's output, a line on stderr where each starts."),
    ] = False,
    coordinator: CoordinatorOption = "",
    token: TokenOption = "",
    ca_file: CaFileOption = "",
) -> None:
    """Print a job's output so far (stdout to stdout, stderr to stderr): that of its latest
    attempt, exactly as one clean run wrote it; system notes go to stderr."""
    if follow and (attempt is not None or all_attempts):
        raise typer.BadParameter(
            "--follow shows the attempt running now", param_hint="--attempt/--all"
        )
    raise typer.Exit(
        quick.with_client(
            coordinator,
            token,
            ca_file,
            lambda client: quick.logs(client, job_id, follow, attempt, all_attempts),
        )
    )


def status(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    coordinator: CoordinatorOption = "",
    token: TokenOption = "",
    ca_file: CaFileOption = "",
    as_json: JsonOption = False,
) -> None:
    """Show a job's status, exit code and timings."""
    raise typer.Exit(
        quick.with_client(
            coordinator, token, ca_file, lambda client: quick.status(client, job_id, as_json)
        )
    )


def cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    coordinator: CoordinatorOption = "",
    token: TokenOption = "",
    ca_file: CaFileOption = "",
) -> None:
    """Cancel a job: at once if queued; a running one gets SIGTERM, then SIGKILL."""

    def work(client: CoordinatorClient) -> int:
        job = JobView.model_validate(client.cancel(job_id), strict=False)
        err.print(f"job {job.id}: {'cancelled' if job.status.is_terminal else 'cancelling'}")
        return 0

    raise typer.Exit(quick.with_client(coordinator, token, ca_file, work))


def jobs(
    coordinator: CoordinatorOption = "",
    token: TokenOption = "",
    ca_file: CaFileOption = "",
    limit: Annotated[int, typer.Option(help="How many recent jobs.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List recent jobs, newest first."""
    found: list[JobView] = []

    def work(client: CoordinatorClient) -> int:
        found.extend(JobView.model_validate(item, strict=False) for item in client.jobs(limit))
        return 0

    code = quick.with_client(coordinator, token, ca_file, work)
    if code:
        raise typer.Exit(code)
    views = found
    if as_json:
        typer.echo(json.dumps([view.model_dump() for view in views], indent=2))
        return
    _print_table(
        ["id", "status", "exit", "duration", "contributor", "name"],
        [
            [
                v.id,
                f"{v.status.value}: {v.waiting_reason}" if v.waiting_reason else v.status.value,
                "" if v.exit_code is None else str(v.exit_code),
                quick.duration(v),
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
    """List contributors: idle, busy, paused (and why), draining or offline; CPU, free RAM,
    current job."""
    found: list[dict[str, Any]] = []

    def work(client: CoordinatorClient) -> int:
        found.extend(client.contributors())
        return 0

    code = quick.with_client(coordinator, token, ca_file, work)
    if code:
        raise typer.Exit(code)
    # Most recently seen first, as the coordinator once answered.
    rows = sorted(found, key=lambda row: -(row.get("last_seen") or 0.0))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    # Node ids and current jobs are shown to admins only; which coordinator each is on, when
    # several share one database.
    on = ["coordinator"] if any(r.get("coordinator") for r in rows) else []
    _print_table(
        ["name", "state", "runtime", "cpu", "ram free", "job", *on],
        [
            [
                r["name"],
                contributor_state(r["state"], r.get("reason"), r.get("last_state")),
                r.get("runtime") or "",
                _fmt(r["cpu_percent"], "{:.0f}%"),
                _fmt(r["ram_free_bytes"], "{:.0f} MiB", 1 / (1024 * 1024)),
                r.get("current_job_id") or ("busy" if r.get("busy") else ""),
                *([r.get("coordinator") or ""] if on else []),
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
