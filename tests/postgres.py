"""A throwaway PostgreSQL cluster for the tests: Debian's binaries, a temporary directory, a
free port on 127.0.0.1, trust authentication for 127.0.0.1 only.

initdb and pg_ctl refuse to run as root, so when the tests run as root the cluster belongs to
the ``postgres`` user (``runuser``) and lives in a directory of its own under /tmp (the
tests' own temporary directories are private to root). The cluster is tuned for tests, not
for durability: no fsync, a small shared buffer.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

CLUSTER_USER = "postgres"
START_TIMEOUT_S = 30
# What initdb writes is replaced: nobody but 127.0.0.1 and the cluster's own socket directory.
PG_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\n"


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl ($COMPOUND_PG_BIN, Debian's newest, PATH)."""
    candidates = [os.environ.get("COMPOUND_PG_BIN", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )[::-1]
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).parent) if on_path else "")
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Cluster:
    """One running cluster; ``database()`` makes a new empty database in it."""

    bin_dir: Path
    root: Path = field(init=False)
    port: int = field(init=False, default=0)
    _databases: int = field(init=False, default=0)

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin_dir / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", CLUSTER_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> Cluster:
        self.root = Path(tempfile.mkdtemp(prefix="compound-pg-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam(CLUSTER_USER)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
        (data / "pg_hba.conf").write_text(PG_HBA)
        self.port = _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={self.root} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB"
        )
        log = str(self.root / "server.log")
        self._run("pg_ctl", "start", "-w", "-D", str(data), "-l", log, "-o", options)
        return self

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "stop", "-D", str(self.root / "data"), "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) of ``database``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new, empty database; its URL as users write it (``postgresql://``)."""
        return self.database().replace("postgresql+psycopg://", "postgresql://", 1)

    def database(self) -> str:
        """A new, empty database; returns its URL."""
        self._databases += 1
        name = f"test_{os.getpid()}_{self._databases}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a name of our own making
        return self.url(name)
