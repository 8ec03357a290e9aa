"""The `compound` command's front door: the commands typed most start at once.

``compound --version`` and plain uses of ``submit``, ``logs`` and ``status`` run straight
from here on the standard library (plus what each path needs: Rich for the status table or
an error in red). Everything else, ``--help`` and any argument this door does
not read with certainty, goes to the Typer app (``typer_app.py``), which answers as before.
Importing Typer, Rich, pydantic and httpx took ~0.25 s before `submit` sent a byte.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn


def main() -> None:
    """The installed `compound` command (and ``python -m compound``): ``run`` that leaves a
    quick command without the interpreter's teardown."""
    run(fast_exit=True)


def run(fast_exit: bool = False) -> None:
    """Run the command line in ``sys.argv``. ``fast_exit``: a quick command ends with
    ``os._exit`` once stdout and stderr are flushed; it has closed its sockets and joined
    its threads, so the ~3-5 ms of module teardown and garbage collection buy nothing."""
    try:
        code = _quick(sys.argv[1:])
        if code is None:
            from compound.cli.typer_app import app

            app()
        elif fast_exit:
            _leave(code)
        else:
            sys.exit(code)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        sys.exit(130)


def _leave(code: int) -> NoReturn:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe, a full disk: the ordinary exit reports it as before
        sys.exit(code)
    os._exit(code)


def _quick(arguments: list[str]) -> int | None:
    """The exit code of a command run here; None for one the Typer app must run."""
    if arguments == ["--version"]:
        from compound import __version__

        sys.stdout.write(f"compound {__version__}\n")
        return 0
    if not arguments:
        return None
    command, rest = arguments[0], arguments[1:]
    if command == "submit":
        return _submit(rest)
    if command == "logs":
        return _logs(rest)
    if command == "status":
        return _status(rest)
    return None


def _submit(arguments: list[str]) -> int | None:
    from compound.cli import argv

    parsed = argv.parse(arguments, argv.SUBMIT)
    if parsed is None or not parsed.positionals:
        return None
    path = parsed.positionals[0]
    env: dict[str, str] = {}
    for pair in parsed.values.get("env", []):
        name, sep, value = pair.partition("=")
        if not sep or not name:
            return None  # Typer names the bad pair
        env[name] = value
    try:
        with open(path, "rb") as file:  # not pathlib: its import costs ~5 ms of a ~50 ms start
            script = file.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # Typer says which file and why, as a usage error
    from compound.cli import quick

    values = parsed.values
    return quick.with_client(
        values.get("coordinator", ""),
        values.get("token", ""),
        values.get("ca_file", ""),
        lambda client: quick.submit(
            client,
            script,
            parsed.positionals[1:],
            env,
            values.get("timeout"),
            values.get("name") or os.path.basename(path),
            values.get("detach", False),
        ),
    )


def _logs(arguments: list[str]) -> int | None:
    from compound.cli import argv, quick

    return _on_one_job(
        arguments,
        argv.LOGS,
        lambda client, job_id, values: quick.logs(
            client,
            job_id,
            values.get("follow", False),
            values.get("attempt"),
            values.get("all_attempts", False),
        ),
        # Choosing an attempt while following live is refused, with Click's usage message.
        refuse=lambda values: (
            values.get("follow", False) and ("attempt" in values or "all_attempts" in values)
        ),
    )


def _status(arguments: list[str]) -> int | None:
    from compound.cli import argv, quick

    return _on_one_job(
        arguments,
        argv.STATUS,
        lambda client, job_id, values: quick.status(client, job_id, values.get("as_json", False)),
    )


def _on_one_job(
    arguments: list[str],
    spec: Any,
    action: Callable[[Any, str, dict[str, Any]], int],
    refuse: Callable[[dict[str, Any]], bool] | None = None,
) -> int | None:
    """`logs` or `status` of one job id; None hands the command line to Typer (which also
    answers what ``refuse`` says is wrong)."""
    from compound.cli import argv, quick

    parsed = argv.parse(arguments, spec)
    if parsed is None or len(parsed.positionals) != 1:
        return None
    if refuse is not None and refuse(parsed.values):
        return None
    job_id, values = parsed.positionals[0], parsed.values
    return quick.with_client(
        values.get("coordinator", ""),
        values.get("token", ""),
        values.get("ca_file", ""),
        lambda client: action(client, job_id, values),
    )
