"""`compound agent pause|resume|drain|status|set`: change a running agent live.

They talk to the agent over its control socket in its state directory (never the
network): one request line, one answer line (see agent/control.py and control_client.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from compound.agent.control_client import NoAgent, ask
from compound.agent.donor import KEYS
from compound.agent.settings import default_state_dir
from compound.cli.exit_codes import UNREACHABLE
from compound.cli.output import print_error

# The agent answers 1 when it refuses a request (a bad value), as a usage error would.
REFUSED = 1

StateDir = Annotated[
    Path | None,
    typer.Option(help="The agent's state directory (default ~/.local/share/compound/agent)."),
]


def _run(state_dir: Path | None, command: str, key: str = "", value: str = "") -> dict[str, Any]:
    try:
        answer = ask(state_dir or default_state_dir(), command, key, value)
    except NoAgent as exc:
        print_error(str(exc))
        raise typer.Exit(UNREACHABLE) from None
    if not answer.get("ok"):
        print_error(answer["message"])
        raise typer.Exit(REFUSED)
    return answer


def pause(state_dir: StateDir = None) -> None:
    """Pause: running jobs are frozen (they keep their memory, use no CPU) and no new job
    comes, until `compound agent resume`. Kept across restarts."""
    typer.echo(_run(state_dir, "pause")["message"])


def resume(state_dir: StateDir = None) -> None:
    """Resume after `compound agent pause`: frozen jobs go on, new jobs come (unless a
    policy, such as hours, still pauses it)."""
    typer.echo(_run(state_dir, "resume")["message"])


def drain(state_dir: StateDir = None) -> None:
    """Take no new job, let the running ones finish, then exit (for an upgrade)."""
    typer.echo(_run(state_dir, "drain")["message"])


def status(
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the state as JSON.")] = False,
) -> None:
    """What the agent lends now and why, its settings, and its running jobs."""
    answer = _run(state_dir, "status")
    state = answer.get("status") or {}
    if as_json:
        typer.echo(json.dumps(state, indent=2))
        return
    typer.echo(answer["message"])
    for key, value in (state.get("settings") or {}).items():
        typer.echo(f"  {key}: {value}")
    used = state.get("non_job_cpu_percent")
    if isinstance(used, int | float):
        typer.echo(f"  this machine's own CPU use (without the jobs'): {used:.0f}%")
    jobs = state.get("jobs") or []
    typer.echo(f"  running jobs: {len(jobs)} (slots: {state.get('slots')})")
    for job in jobs:
        typer.echo(f"    {job.get('job_id')}{' (frozen)' if job.get('frozen') else ''}")


def set_setting(
    key: Annotated[str, typer.Argument(help=f"One of: {', '.join(KEYS)}.")],
    value: Annotated[str, typer.Argument(help="Its new value (see --help).")],
    state_dir: StateDir = None,
) -> None:
    """Change one setting of the running agent; kept in STATE_DIR/donor.json.

    hours HH:MM-HH:MM|always: run only inside this daily window of local time.
    idle-cpu-percent N|off: pause while this machine's own CPU use (without the jobs') is
    over N%; go on once it has stayed under for idle-resume-s.
    idle-resume-s N|default: seconds (0 to 3600) the machine must stay calm before
    idle-only lending resumes; default: the agent's --idle-resume-s (30).
    on-battery run|pause: pause while the machine runs on its battery.
    cpus N|default, memory-mib N|default: per-job limits, for the next jobs and (where
    Docker can) the running ones.
    slots N|default: jobs at once, from the next job.
    """
    typer.echo(_run(state_dir, "set", key, value)["message"])


def register(agent_app: typer.Typer) -> None:
    agent_app.command("pause")(pause)
    agent_app.command("resume")(resume)
    agent_app.command("drain")(drain)
    agent_app.command("status")(status)
    # A negative value ("-3") reaches the agent, which says what is accepted, rather than
    # being taken for an option.
    agent_app.command("set", context_settings={"ignore_unknown_options": True})(set_setting)
