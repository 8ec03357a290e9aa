"""The work of the commands typed most (submit, logs, status), free of Typer and Rich.

Both doors call these: the quick front door in ``main.py`` and the Typer commands in
``jobs.py``. Each function takes checked values and returns the exit code; what a path
needs beyond the standard library (Rich for a table or an error, the protocol models for
`status`) is imported on that path only; following a job needs none of it (``follow.py``).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from compound.cli.client import ClientError, CoordinatorClient, default_coordinator, default_token
from compound.cli.exit_codes import UNREACHABLE, USAGE
from compound.cli.output import print_error
from compound.cli.waiting import about

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from compound.protocol import JobView

# compound.protocol.Stream.STDOUT, spelled out: `compound logs` then imports nothing of the
# protocol at all (tests/test_cli_start.py checks the two agree).
STDOUT = "stdout"


def with_client(
    coordinator: str, token: str, ca_file: str, work: Callable[[CoordinatorClient], int]
) -> int:
    """Run ``work`` with a client for the coordinator named by the options or environment;
    a failed request becomes one red sentence on stderr and exit code 3."""
    try:
        client = CoordinatorClient(
            coordinator or default_coordinator(), token or default_token(), ca_file=ca_file or None
        )
    except ClientError as exc:
        print_error(f"compound: {exc}")
        return UNREACHABLE
    try:
        return work(client)
    except ClientError as exc:  # UnknownJobError included
        print_error(f"compound: {exc}")
        return UNREACHABLE
    finally:
        client.close()


def submit(
    client: CoordinatorClient,
    script: str,
    args: list[str],
    env: dict[str, str],
    timeout_s: float | None,
    name: str,
    detach: bool,
    requirements: list[str] | None = None,
    inputs: list[Path] | None = None,
    outputs_dir: Path | None = None,
) -> int:
    problem = script_metadata_problem(script)
    if problem is not None:
        print_error(f"compound: {problem}")
        return UNREACHABLE  # what the coordinator's refusal of it would give
    inputs_ref = None
    if inputs:
        from compound.cli.files import InputError, upload_inputs

        try:
            inputs_ref = upload_inputs(client, inputs)
        except InputError as exc:
            print_error(f"compound: {exc}")
            return USAGE
    job = client.submit(script, args, env, timeout_s, name, requirements, inputs_ref)
    if detach:
        sys.stdout.write(f"{job['id']}\n")
        sys.stdout.flush()
        return 0
    code = follow(client, str(job["id"]), cancel_on_interrupt=True)
    if outputs_dir is not None:
        fetch_outputs(client, str(job["id"]), outputs_dir)
    return code


def fetch_outputs(client: CoordinatorClient, job_id: str, directory: Path) -> int:
    """Download the job's output files into ``directory``, saying how many on stderr."""
    from compound.cli.files import download_artifacts

    count = download_artifacts(client, job_id, directory)
    sys.stderr.write(f"compound: {count} output file(s) of job {job_id} in {directory}\n")
    sys.stderr.flush()
    return 0


def script_metadata_problem(script: str) -> str | None:
    """Why the script's PEP 723 block cannot be used, read here as the coordinator reads it
    so the mistake shows before anything is sent; None without a block or when it is fine."""
    if "# /// script" not in script:
        return None  # the common case imports nothing for it
    from compound.protocol.requirements import RequirementsError, script_requirements

    try:
        script_requirements(script)
    except RequirementsError as exc:
        return str(exc)
    return None


def follow(client: CoordinatorClient, job_id: str, cancel_on_interrupt: bool) -> int:
    from compound.cli.follow import follow_job

    return follow_job(client, job_id, cancel_on_interrupt=cancel_on_interrupt)


def logs(
    client: CoordinatorClient,
    job_id: str,
    follow_on: bool,
    attempt: int | None = None,
    all_attempts: bool = False,
) -> int:
    """Print the job's output: its latest attempt's, attempt ``attempt``'s, or every
    attempt's with a line on stderr where each starts (``all_attempts``)."""
    if follow_on:
        return follow(client, job_id, cancel_on_interrupt=False)
    from compound.cli.job_output import JobOutput

    output = JobOutput.of_process()  # byte-exact to a pipe, sanitised to a terminal
    after = -1
    wanted: int | None = None  # None: every record (or a coordinator that does not say)
    shown: int | None = None
    while True:
        page = client.logs(job_id, after)
        if after == -1 and "last_attempt" in page and not all_attempts:
            latest = max(1, int(page["last_attempt"]))
            wanted = latest if attempt is None else attempt
            if wanted > latest or wanted < 1:
                print_error(
                    f"compound: job {job_id} has no attempt {wanted} (its latest is {latest})"
                )
                return USAGE
        for record in page["records"]:
            number = record.get("attempt")
            if wanted is not None and number is not None and number != wanted:
                continue
            if all_attempts and number is not None and number != shown:
                output.end_styles()
                sys.stderr.write(f"compound: --- attempt {number} of job {job_id} ---\n")
                sys.stderr.flush()
                shown = number
            output.write(record["stream"] == STDOUT, record["data"])
        after = page["last_seq"]
        if not page["records"]:
            break
    output.end_styles()
    return 0


def status(client: CoordinatorClient, job_id: str, as_json: bool) -> int:
    from compound.protocol import JobView

    job = JobView.model_validate(client.job(job_id), strict=False)
    if as_json:
        sys.stdout.write(job.model_dump_json(indent=2) + "\n")
        sys.stdout.flush()
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in job_fields(job):
        table.add_row(key, value)
    Console().print(table)
    return 0


def job_fields(job: JobView) -> list[tuple[str, str]]:
    fields = [("id", job.id), ("status", job.status.value)]
    if job.queue_position:
        fields.append(("queue position", str(job.queue_position)))
    if job.waiting_reason:
        fields.append(("waiting", job.waiting_reason))
    if job.estimated_start_s is not None:
        fields.append(("starts in", about(job.estimated_start_s)))
    if job.exit_code is not None:
        fields.append(("exit code", str(job.exit_code)))
    if job.error:
        fields.append(("error", job.error))
    fields.append(("contributor", job.contributor_id or "-"))
    fields.append(("created", _when(job.created_at)))
    fields.append(("duration", duration(job)))
    if job.inputs is not None:
        fields.append(("inputs", f"{job.inputs.size} bytes ({job.inputs.sha256[:12]})"))
    if job.files_removed_at is not None:
        fields.append(("files", f"removed {_when(job.files_removed_at)}"))
    elif job.files_expire_at is not None:
        fields.append(("files kept until", _when(job.files_expire_at)))
    return fields


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def duration(job: JobView) -> str:
    if job.started_at is None:
        return "-"
    end = job.finished_at or time.time()
    return f"{end - job.started_at:.1f} s"
