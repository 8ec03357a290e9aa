"""Agent settings: one explicit object, built from the command line."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from compound.agent.deps_uv import DEFAULT_INDEX_URL
from compound.agent.runners.base import Limits
from compound.coordinators import parse_coordinators

MiB = 1024 * 1024
DEFAULT_IMAGE = "python:3.11-slim"
# Each warm container holds its memory limit in reserve; more than a few buys nothing.
MAX_WARM = 8


def default_state_dir() -> Path:
    return Path.home() / ".local" / "share" / "compound" / "agent"


def contributor_ws_url(coordinator_url: str) -> str:
    """The contributor socket's ws(s) URL of one coordinator, whichever scheme it was given."""
    url = coordinator_url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            url = ws + url[len(http) :]
    if not url.startswith(("ws://", "wss://")):
        url = "ws://" + url
    return url + "/ws/contributor"


@dataclass(frozen=True)
class AgentSettings:
    # One coordinator URL, or several (``A,B,...``) sharing one database: see coordinators.py.
    coordinator_url: str
    image: str = DEFAULT_IMAGE
    # "auto" (gVisor when Docker has it, else runc), "runc" or "runsc"; once the sandbox is
    # prepared the agent replaces "auto" with the runtime it chose, which hello reports.
    runtime: str = "auto"
    name: str = field(default_factory=socket.gethostname)
    state_dir: Path = field(default_factory=default_state_dir)
    limits: Limits = field(default_factory=Limits)
    # SIGTERM, then this long before SIGKILL, when a job is cancelled or times out.
    grace_s: float = 10.0
    # On SIGTERM: how long running jobs may go on before they are handed back unfinished.
    drain_s: float = 5.0
    # A job frozen by a pause (its donor's, or a policy's) longer than this is handed back.
    max_pause_s: float = 600.0
    # How often the donor's policies (hours, idle-only, on battery) are looked at.
    policy_interval_s: float = 2.0
    # Idle-only: the machine's own CPU use stays under the threshold this long to resume.
    idle_resume_s: float = 30.0
    # Output past this many bytes per job is dropped, with one note in the log.
    max_output_bytes: int = 64 * MiB
    # Started, idle containers kept for the next jobs (each used once); 0 turns it off.
    warm: int = 1
    # A container whose job ended by itself runs the same submitter's next job (see
    # runners.docker.reuse); False: a fresh container for every job.
    reuse: bool = True
    # Jobs run at once, each in its own container with the per-job limits (hello's slots):
    # the machine lends up to ``slots`` times the per-job CPU and memory.
    slots: int = 1
    # What a job leaves in outputs/ comes back up to this many bytes (what fits, and a note).
    max_output_files_bytes: int = 100 * MiB
    # Used until the coordinator's welcome says otherwise.
    heartbeat_interval_s: float = 5.0
    json_events: bool = False
    # Set by the desktop app: the agent stops when that process is gone.
    parent_pid: int | None = None
    # A contributor token, when the coordinator requires one.
    token: str | None = field(default=None, repr=False)
    # A CA certificate (PEM) trusted besides the system's, for an https coordinator.
    ca_file: str | None = None
    # Install jobs' Python packages (binary wheels from index_url, see agent/deps.py);
    # without it the coordinator sends this agent no job with requirements.
    deps: bool = True
    index_url: str = DEFAULT_INDEX_URL
    # Installed package sets kept under state_dir/deps, least recently used evicted first.
    deps_cache_gib: float = 5.0
    # What uv may download and unpack for one job's packages; past it the job fails.
    max_deps_download_bytes: int = 1024 * MiB

    @property
    def coordinator_urls(self) -> tuple[str, ...]:
        """The coordinators, in order (raises CoordinatorListError when there is none)."""
        return parse_coordinators(self.coordinator_url)

    @property
    def contributor_ws_url(self) -> str:
        """The first coordinator's contributor socket."""
        return contributor_ws_url(self.coordinator_urls[0])
