"""Coordinator settings: one explicit object, built from the command line and handed around."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024


@dataclass(frozen=True)
class CoordinatorSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    # A contributor silent for this long is offline and its running job's lease expires.
    lease_timeout_s: float = 15.0
    heartbeat_interval_s: float = 5.0
    # How often leases, deadlines and contributor health are checked.
    sweep_interval_s: float = 1.0
    # The coordinator ends a running job itself this long after its timeout (counted from
    # its claim) or after a cancel was sent, if its contributor has not reported the end by
    # then. More than the agents' own stop grace (SIGTERM to SIGKILL, 10 s by default) plus
    # the time to return outputs, so an honest agent's report always comes first.
    deadline_grace_s: float = 30.0
    # A job whose contributor is lost is run this many times in all before it fails.
    max_attempts: int = 2
    # A job given back by contributors that left more often than this fails (no loop).
    max_handbacks: int = 5
    max_script_bytes: int = 1 * MiB
    max_args: int = 256
    max_env_vars: int = 256
    # Quotas: a submission past one is refused with 429 and a sentence.
    max_queued_per_submitter: int = 1000
    max_queued_total: int = 10_000
    # Log bytes stored per job; past it one note, and the rest is dropped.
    max_log_bytes_per_job: int = 256 * MiB
    # What one submitter may store (see storage/usage.py): jobs not yet swept by retention,
    # database bytes (scripts, arguments, environments, logs), file bytes (inputs, outputs).
    max_jobs_per_submitter: int = 100_000
    max_database_bytes_per_submitter: int = 4 * 1024 * MiB
    max_file_bytes_per_submitter: int = 10 * 1024 * MiB
    # The global caps, shared: past one, a submitter may still fill its fair share of it
    # (the cap divided by the submitters storing something), the heaviest refused first.
    max_database_bytes: int = 20 * 1024 * MiB
    max_file_bytes: int = 100 * 1024 * MiB
    max_followers_per_job: int = 1000
    # A follower of a queued job is sent its new position at most this often (its job's own
    # changes, such as starting to run, are sent at once). Twice a second still reads as
    # live to a person watching "queued (position N)", while a queue draining at hundreds of
    # claims a second costs each waiting follower two in-memory look-ups and two messages a
    # second, not one of each per claim.
    position_update_interval_s: float = 0.5
    max_followers_total: int = 4000
    # A follower that does not take one message in this long is dropped (and its connection
    # aborted: what it did not read is not kept).
    follower_send_timeout_s: float = 30.0
    # A connection whose request headers are not complete this long after it opened (or
    # after its next request began) is closed: half-open clients must not pile up.
    header_timeout_s: float = 10.0
    # A request body gets this long, plus a second per 500 bytes received, to arrive whole.
    body_timeout_s: float = 20.0
    # Open connections, HTTP and WebSocket together; kept below the file-descriptor limit.
    # 0: as many as the open-file limit (raised to its hard limit at start) lets in.
    max_connections: int = 0
    # Node ids one contributor token may register (admin tokens: no limit); past it a new
    # node id is refused, so one token cannot fill the contributors table.
    max_nodes_per_token: int = 64
    # Web origins (scheme://host:port) whose pages may call this coordinator.
    allowed_origins: frozenset[str] = frozenset()
    # Serve without tokens on a non-loopback address (warned about at every start).
    insecure_open: bool = False
    # Serve HTTPS and WSS with this certificate (chain) and key; None serves plain HTTP.
    # A None key means the key is in the certificate file.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Input files of one job (one tar, stored once by content hash); larger uploads get 413.
    max_input_bytes: int = 100 * MiB
    # Output files a contributor may return for one job: total bytes, count, path length.
    max_artifact_bytes: int = 100 * MiB
    max_artifact_files: int = 10_000
    max_artifact_path_chars: int = 1024
    # A finished job's logs, inputs and artifacts are removed this long after it ended
    # (a float: tests use a fraction of a second); the job row itself stays.
    retention_s: float = 30 * 24 * 3600.0
    # How often the retention sweep looks for expired jobs.
    retention_sweep_interval_s: float = 3600.0

    # The database: None keeps SQLite in the data directory; a postgresql:// URL puts
    # the whole state in PostgreSQL (blobs stay in the data directory, which coordinators
    # sharing the database must share too).
    database_url: str | None = None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "compound.sqlite3"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"
