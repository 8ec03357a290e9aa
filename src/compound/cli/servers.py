"""`compound coordinator` and `compound agent`: the two long-running processes."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from compound.agent.default_share import choose_lending
from compound.agent.deps_uv import DEFAULT_INDEX_URL
from compound.agent.runners.base import Limits
from compound.agent.runners.docker.runtime import HELP as RUNTIME_HELP
from compound.agent.runners.docker.runtime import Runtime
from compound.agent.settings import DEFAULT_IMAGE, MAX_WARM, AgentSettings, default_state_dir
from compound.cli.client import default_coordinator
from compound.cli.log_format import FORMATS as LOG_FORMATS
from compound.cli.log_format import configure as configure_logging
from compound.coordinators import CoordinatorListError, parse_coordinators
from compound.protocol import MAX_SLOTS
from compound.tls import TlsConfigError, default_ca_file

MiB = 1024 * 1024
LOG_FORMAT_HELP = "text: readable lines; json: one JSON object a line (ids as fields), on stderr."


def _log_format(value: str) -> str:
    if value not in LOG_FORMATS:
        raise typer.BadParameter("must be text or json", param_hint="--log-format")
    return value


def coordinator(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.")] = 8000,
    data_dir: Annotated[
        Path, typer.Option(help="Where the SQLite database and the blobs (files) live.")
    ] = Path(".compound"),
    database: Annotated[
        str | None,
        typer.Option(
            envvar="COMPOUND_DATABASE",
            help="postgresql://USER:PASSWORD@HOST:PORT/NAME to keep the state in PostgreSQL "
            "instead of SQLite (files stay in --data-dir).",
        ),
    ] = None,
    lease_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds of silence after which a contributor is offline and its job's lease "
            "expires."
        ),
    ] = 15.0,
    heartbeat_interval: Annotated[
        float, typer.Option(help="Seconds between agent heartbeats.")
    ] = 5.0,
    max_handbacks: Annotated[
        int,
        typer.Option(
            min=0,
            help="Times a job may be handed back by contributors that left (stopped, or"
            " restarted without it) before it fails instead of being queued again.",
        ),
    ] = 5,
    deadline_grace_s: Annotated[
        float,
        typer.Option(
            "--deadline-grace-s",
            min=0,
            help="Seconds a contributor has to report the end of a job after its timeout "
            "(counted from when it was handed out) or after a cancel; past it the coordinator "
            "ends the job itself (timed_out or cancelled) and tells the contributor to "
            "abandon it. Keep it above the agents' --grace.",
        ),
    ] = 30.0,
    max_script_kib: Annotated[int, typer.Option(help="Largest script accepted, KiB.")] = 1024,
    header_timeout_s: Annotated[
        float,
        typer.Option(
            "--header-timeout-s",
            min=0.1,
            help="Seconds a client has to send its complete request headers, from connecting "
            "(or from the first byte of its next request); slower connections are closed.",
        ),
    ] = 10.0,
    body_timeout_s: Annotated[
        float,
        typer.Option(
            "--body-timeout-s",
            min=0.1,
            help="Seconds a request body has to arrive, plus one for every 500 bytes that "
            "came (uploads slower than 500 bytes/s on average are closed with a 408).",
        ),
    ] = 20.0,
    max_connections: Annotated[
        int | None,
        typer.Option(
            min=16,
            help="Most connections open at once, HTTP and WebSocket together (1/16 of them, "
            "up to 64, kept for plain HTTP). At the limit the oldest connection still "
            "sending its headers is dropped, or else the newcomer gets a 503. Lowered if "
            "the open-file limit is smaller (default: what the open-file limit, raised to "
            "its hard limit, lets in, up to 65,536).",
            show_default=False,
        ),
    ] = None,
    max_queued_per_submitter: Annotated[
        int, typer.Option(min=1, help="Queued jobs one submitter may have; more get a 429.")
    ] = 1000,
    max_queued: Annotated[
        int, typer.Option(min=1, help="Queued jobs in all; more get a 429.")
    ] = 10_000,
    max_log_mib_per_job: Annotated[
        int,
        typer.Option(
            min=1,
            help="Log MiB stored per job; past it one note is stored and the rest dropped.",
        ),
    ] = 256,
    max_db_mib: Annotated[
        int,
        typer.Option(
            min=1,
            help="The database's size limit, shared: past it a submitter may still fill its "
            "fair share (this divided by the submitters storing something); the heaviest get "
            "429 first.",
        ),
    ] = 20 * 1024,
    max_db_mib_per_submitter: Annotated[
        int,
        typer.Option(
            min=1,
            help="Database MiB one submitter's kept jobs may take (scripts, arguments, "
            "environments, logs); past it new jobs get 429 and running ones' logs are cut.",
        ),
    ] = 4 * 1024,
    max_jobs_per_submitter: Annotated[
        int,
        typer.Option(
            min=1, help="Jobs one submitter may keep until retention clears them; more get 429."
        ),
    ] = 100_000,
    max_files_mib: Annotated[
        int,
        typer.Option(
            min=1,
            help="Input and output files stored in all, MiB, shared as --max-db-mib is; "
            "past a submitter's share its uploads get 413.",
        ),
    ] = 100 * 1024,
    max_files_mib_per_submitter: Annotated[
        int,
        typer.Option(
            min=1,
            help="Input and output file MiB one submitter may store; more get 413.",
        ),
    ] = 10 * 1024,
    max_followers_per_job: Annotated[
        int, typer.Option(min=1, help="Open log followers per job; more are refused (1013).")
    ] = 1000,
    max_followers: Annotated[
        int, typer.Option(min=1, help="Open log followers in all; more are refused (1013).")
    ] = 4000,
    follower_send_timeout_s: Annotated[
        float,
        typer.Option(
            "--follower-send-timeout-s",
            min=0.1,
            help="Seconds a log follower has to take one message; one that does not is "
            "dropped and its connection aborted (it reconnects and loses nothing).",
        ),
    ] = 30.0,
    max_nodes_per_token: Annotated[
        int,
        typer.Option(
            min=1,
            help="Node ids one contributor token may register; past it a new node id is "
            "refused (4429). Admin tokens are not limited.",
        ),
    ] = 64,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="A web origin (scheme://host:port) whose pages may call this coordinator; "
            "repeat for more. Requests from any other origin get 403.",
        ),
    ] = None,
    insecure_open: Annotated[
        bool,
        typer.Option(
            help="Listen on a non-loopback address without tokens: anyone who reaches it can "
            "run code on every contributor. Warned about at every start."
        ),
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Serve HTTPS and WSS with this PEM certificate (its chain after it).",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="The PEM private key of --tls-cert (default: read from the --tls-cert file).",
        ),
    ] = None,
    max_input_mib: Annotated[
        float,
        typer.Option(min=0, help="Largest input files of one job (one tar), MiB; more get 413."),
    ] = 100,
    max_artifact_mib: Annotated[
        float,
        typer.Option(min=0, help="Largest output files of one job in all, MiB; more get 413."),
    ] = 100,
    max_artifact_files: Annotated[
        int, typer.Option(min=1, help="Most output files of one job; more are refused.")
    ] = 10_000,
    retention_days: Annotated[
        float,
        typer.Option(
            min=0,
            help="Days after a job ends when its logs, inputs and output files are removed.",
        ),
    ] = 30,
    retention_sweep_s: Annotated[
        float,
        typer.Option(min=0.01, help="Seconds between looks for expired jobs' files."),
    ] = 3600,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[str, typer.Option(help=LOG_FORMAT_HELP)] = "text",
) -> None:
    """Run the coordinator: queues jobs, routes them to contributors, relays their logs.

    State is kept in SQLite under --data-dir; a restart loses nothing. The web UI is served
    at /, the API docs at /docs.
    """
    from compound.coordinator.server import serve
    from compound.coordinator.settings import CoordinatorSettings

    settings = CoordinatorSettings(
        data_dir=data_dir,
        database_url=database or None,
        host=host,
        port=port,
        lease_timeout_s=lease_timeout,
        heartbeat_interval_s=heartbeat_interval,
        max_handbacks=max_handbacks,
        sweep_interval_s=min(1.0, lease_timeout / 4),
        deadline_grace_s=deadline_grace_s,
        max_script_bytes=max_script_kib * 1024,
        header_timeout_s=header_timeout_s,
        body_timeout_s=body_timeout_s,
        max_connections=max_connections or 0,
        max_queued_per_submitter=max_queued_per_submitter,
        max_queued_total=max_queued,
        max_log_bytes_per_job=max_log_mib_per_job * MiB,
        max_database_bytes=max_db_mib * MiB,
        max_database_bytes_per_submitter=max_db_mib_per_submitter * MiB,
        max_jobs_per_submitter=max_jobs_per_submitter,
        max_file_bytes=max_files_mib * MiB,
        max_file_bytes_per_submitter=max_files_mib_per_submitter * MiB,
        max_followers_per_job=max_followers_per_job,
        max_followers_total=max_followers,
        follower_send_timeout_s=follower_send_timeout_s,
        max_nodes_per_token=max_nodes_per_token,
        allowed_origins=frozenset(allow_origin or ()),
        insecure_open=insecure_open,
        tls_cert_file=tls_cert,
        tls_key_file=tls_key,
        max_input_bytes=int(max_input_mib * MiB),
        max_artifact_bytes=int(max_artifact_mib * MiB),
        max_artifact_files=max_artifact_files,
        retention_s=retention_days * 24 * 3600,
        retention_sweep_interval_s=retention_sweep_s,
    )
    configure_logging(log_level, _log_format(log_format))
    raise typer.Exit(serve(settings, log_level, json_logs=log_format == "json"))


def _coordinators(text: str) -> str:
    """``text`` if it names one coordinator or several (``A,B,...``); else a usage error."""
    try:
        parse_coordinators(text)
    except CoordinatorListError as exc:
        raise typer.BadParameter(str(exc), param_hint="--coordinator") from None
    return text


def agent(
    ctx: typer.Context,
    coordinator: Annotated[
        str,
        typer.Option(
            help="Coordinator URL, or several as A,B,... (coordinators sharing one database:"
            " the agent moves to the next when one is lost) (default: $COMPOUND_COORDINATOR or"
            " http://127.0.0.1:8000)."
        ),
    ] = "",
    image: Annotated[str, typer.Option(help="Docker image jobs run in.")] = DEFAULT_IMAGE,
    runtime: Annotated[Runtime, typer.Option(help=RUNTIME_HELP)] = Runtime.AUTO,
    name: Annotated[str, typer.Option(help="Name shown to submitters (default: hostname).")] = "",
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Where the node id is kept (default ~/.local/share/compound/agent)."),
    ] = None,
    memory_mib: Annotated[int, typer.Option(help="Memory limit per job, MiB.")] = 512,
    cpus: Annotated[float, typer.Option(help="CPU limit per job, in cores.")] = 1.0,
    pids: Annotated[int, typer.Option(help="Process/thread limit per job.")] = 256,
    nofile: Annotated[
        int, typer.Option(help="Open files and sockets per process of a job (RLIMIT_NOFILE).")
    ] = 1024,
    max_file_mib: Annotated[
        int,
        typer.Option(
            help="Largest file a job may write, MiB (RLIMIT_FSIZE); a write past it fails."
        ),
    ] = 256,
    grace: Annotated[
        float,
        typer.Option(
            help="Seconds between SIGTERM and SIGKILL when a job is cancelled or times out."
        ),
    ] = 10.0,
    drain_s: Annotated[
        float,
        typer.Option(
            "--drain-s",
            min=0,
            help="On SIGTERM or Ctrl-C: seconds running jobs may go on before they are handed"
            " back to the coordinator unfinished, to run elsewhere (never reported as"
            " cancelled). A second signal hands them back at once.",
        ),
    ] = 5.0,
    max_pause_s: Annotated[
        float,
        typer.Option(
            "--max-pause-s",
            min=0,
            help="A job paused longer than this (by its donor or a policy), seconds, is handed"
            " back to run elsewhere.",
        ),
    ] = 600.0,
    policy_interval_s: Annotated[
        float,
        typer.Option(
            "--policy-interval-s",
            min=0.1,
            help="Seconds between looks at the donor's policies (hours, idle-cpu-percent,"
            " on-battery; see `compound agent set`).",
        ),
    ] = 2.0,
    idle_resume_s: Annotated[
        float,
        typer.Option(
            "--idle-resume-s",
            min=0,
            help="With idle-cpu-percent set: seconds the machine's own CPU use must stay under"
            " it before paused jobs go on (a donor's `compound agent set idle-resume-s` wins).",
        ),
    ] = 30.0,
    max_output_mib: Annotated[
        int, typer.Option(help="Output kept per job, MiB; the rest is dropped with a note.")
    ] = 64,
    warm: Annotated[
        int | None,
        typer.Option(
            help="Containers started ahead of demand, each for one job then removed; 0: none"
            " (default: as many as slots, at most 8).",
            show_default=False,
        ),
    ] = None,
    reuse: Annotated[
        bool,
        typer.Option(
            help="Keep a container whose job ended by itself for the next job of the same"
            " submitter, everything of that job cleared first (one per slot, 10 s; never for"
            " another submitter's job). --no-reuse: a fresh container for every job.",
        ),
    ] = True,
    slots: Annotated[
        int | None,
        typer.Option(
            help="Jobs run at once, each in its own container with the limits above: the"
            " machine lends up to this many times --cpus and --memory-mib (default: what the"
            " machine can lend, its cores / --cpus and its memory / --memory-mib, at least 1).",
            show_default=False,
        ),
    ] = None,
    max_output_files_mib: Annotated[
        int,
        typer.Option(
            help="Files a job leaves in outputs/ that come back, MiB; past it, what fits and"
            " a note."
        ),
    ] = 100,
    events: Annotated[
        str,
        typer.Option(help="text: readable log lines on stderr; json: also typed events on stdout."),
    ] = "text",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[str, typer.Option(help=LOG_FORMAT_HELP)] = "text",
    parent_pid: Annotated[
        int | None,
        typer.Option(hidden=True, help="Stop when this process (the desktop app) is gone."),
    ] = None,
    token: Annotated[
        str,
        typer.Option(
            help="Contributor token, when the coordinator requires one (default: $COMPOUND_TOKEN).",
            show_default=False,
        ),
    ] = "",
    ca_file: Annotated[
        str,
        typer.Option(
            metavar="FILE",
            help="A PEM CA certificate to trust for an https coordinator, besides the system's "
            "(default: $COMPOUND_CA_FILE).",
            show_default=False,
        ),
    ] = "",
    deps: Annotated[
        bool,
        typer.Option(
            "--deps/--no-deps",
            help="Install the Python packages jobs ask for (binary wheels only, with uv, before"
            " the job starts; the job still has no network). With --no-deps this machine gets"
            " no job with requirements.",
        ),
    ] = True,
    index_url: Annotated[
        str, typer.Option(help="Package index jobs' packages come from (PEP 503 simple API).")
    ] = DEFAULT_INDEX_URL,
    deps_cache_gib: Annotated[
        float,
        typer.Option(help="Disk kept for installed package sets, GiB; least recently used go."),
    ] = 5.0,
    max_deps_download_mib: Annotated[
        int,
        typer.Option(
            min=1,
            help="What the packages of one job may take downloaded and unpacked, MiB; a job"
            " asking for more fails with a sentence saying so.",
        ),
    ] = 1024,
) -> None:
    """Contribute this machine: run jobs from the coordinator in sandboxed containers.

    Each job runs in a fresh container with no network, and memory, CPU and process limits.
    The agent reconnects for ever; a job keeps running while the coordinator is away.
    SIGTERM or Ctrl-C stops it cleanly (running jobs get --drain-s, then go back to the queue).
    While it runs, `compound agent pause|resume|drain|status|set` control it.
    """
    if ctx.invoked_subcommand is not None:
        return  # a control command for a running agent, not an agent
    if nofile < 16:
        raise typer.BadParameter("a job needs at least 16 open files", param_hint="--nofile")
    if max_file_mib < 1:
        raise typer.BadParameter("must be at least 1 MiB", param_hint="--max-file-mib")
    if not index_url.startswith(("https://", "http://")) or len(index_url) > 2000:
        raise typer.BadParameter("must be an http(s) URL", param_hint="--index-url")
    if deps_cache_gib <= 0:
        raise typer.BadParameter("must be more than 0", param_hint="--deps-cache-gib")
    if max_output_files_mib < 1:
        raise typer.BadParameter("must be at least 1 MiB", param_hint="--max-output-files-mib")
    if events not in ("text", "json"):
        raise typer.BadParameter("events must be text or json", param_hint="--events")
    if warm is not None and not 0 <= warm <= MAX_WARM:
        raise typer.BadParameter(f"must be between 0 and {MAX_WARM}", param_hint="--warm")
    if slots is not None and not 1 <= slots <= MAX_SLOTS:
        raise typer.BadParameter(f"must be between 1 and {MAX_SLOTS}", param_hint="--slots")
    limits = Limits(
        memory_bytes=memory_mib * MiB,
        cpus=cpus,
        pids=pids,
        nofile=nofile,
        file_bytes=max_file_mib * MiB,
    )
    lending = choose_lending(slots, warm, limits)
    settings = AgentSettings(
        coordinator_url=_coordinators(coordinator or default_coordinator()),
        image=image,
        runtime=runtime,
        state_dir=state_dir or default_state_dir(),
        limits=limits,
        grace_s=grace,
        drain_s=drain_s,
        max_pause_s=max_pause_s,
        policy_interval_s=policy_interval_s,
        idle_resume_s=idle_resume_s,
        max_output_bytes=max_output_mib * MiB,
        warm=lending.warm,
        slots=lending.slots,
        reuse=reuse,
        max_output_files_bytes=max_output_files_mib * MiB,
        json_events=events == "json",
        parent_pid=parent_pid,
        name=name or socket.gethostname(),
        token=token or os.environ.get("COMPOUND_TOKEN") or None,
        ca_file=ca_file or default_ca_file(),
        deps=deps,
        index_url=index_url,
        deps_cache_gib=deps_cache_gib,
        max_deps_download_bytes=max_deps_download_mib * MiB,
    )
    configure_logging(log_level, _log_format(log_format))
    raise typer.Exit(asyncio.run(_run_agent(settings)))


async def _run_agent(settings: AgentSettings) -> int:
    from compound.agent.agent import Agent, SandboxUnavailable, install_stop_signals
    from compound.agent.control_server import ControlSocketError
    from compound.agent.identity import load_node_id
    from compound.agent.mount_dir import mount_dir
    from compound.agent.runners.docker.runner import DockerRunner, DockerRunnerSettings

    node_id = load_node_id(settings.state_dir)
    runner = DockerRunner(
        DockerRunnerSettings(
            image=settings.image,
            runtime=Runtime(settings.runtime),
            limits=settings.limits,
            grace_s=settings.grace_s,
            node_id=node_id,
            warm=settings.warm,
            # One kept container per slot: a submitter's burst runs in as many as it fills.
            reuse=settings.slots if settings.reuse else 0,
            max_outputs_bytes=settings.max_output_files_bytes,
            outputs_dir=settings.state_dir / "outputs",
            site_dir=mount_dir(settings.state_dir) / "site",
        )
    )
    agent = Agent(settings, node_id, runner)
    install_stop_signals(agent)
    try:
        await agent.run()
    except (SandboxUnavailable, TlsConfigError, ControlSocketError) as exc:
        logging.getLogger("compound.agent").error("%s", exc)
        return 1
    return 0
