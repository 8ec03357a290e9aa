"""The processes of a cluster benchmark: coordinators started for a run, and the CPU the
PostgreSQL server has spent (``cluster.py``, ``cluster_presence.py``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import cpu_seconds

from postgres import Cluster
from support import Coordinator


def start_coordinator(root: Path, name: str, database: str | None) -> Coordinator:
    """A coordinator in ``root / name`` on ``database`` (SQLite if None), its queue limits
    out of the way of a flood."""
    extra = ["--max-queued-per-submitter", "100000", "--max-queued", "100000"]
    return Coordinator(
        data_dir=root / name,
        heartbeat_interval_s=5,
        lease_timeout_s=15,
        extra_args=extra + (["--database", database] if database else []),
    ).start()


@contextmanager
def coordinators(root: Path, count: int, database: str | None) -> Iterator[list[Coordinator]]:
    """``count`` coordinators on one ``database``, stopped at the end."""
    started: list[Coordinator] = []
    try:
        for index in range(count):
            started.append(start_coordinator(root, f"c{index}", database))
        yield started
    finally:
        for server in started:
            server.stop()


def postgres_cpu_seconds(cluster: Cluster) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster and its children."""
    postmaster = int((cluster.root / "data" / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += cpu_seconds(int(stat.parent.name))
    return total
