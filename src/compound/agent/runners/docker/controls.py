"""What a donor changes on running job containers: freeze (pause), thaw, new limits, and
how much CPU they used (to tell the machine's own use from the jobs')."""

from __future__ import annotations

import contextlib
from pathlib import Path

from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError

from compound.agent.runners.base import Limits
from compound.agent.runners.docker.sandbox import TRANSPORT_ERRORS

# Where a container's cumulative CPU time is kept, by cgroup layout (v1 cgroupfs, v2
# cgroupfs, v2 systemd), with the unit of the number read there in nanoseconds.
_CGROUP_V1 = "/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage"
_CGROUP_V2 = (
    "/sys/fs/cgroup/docker/{id}/cpu.stat",
    "/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.stat",
)


async def pause(container: DockerContainer) -> bool:
    """Freeze every process of the container (cgroup freezer); whether it worked."""
    try:
        await container.pause()
    except (DockerError, *TRANSPORT_ERRORS):
        return False
    return True


async def unpause(container: DockerContainer) -> bool:
    """Thaw the container; whether it worked (an ended or thawed one: False, harmless)."""
    try:
        await container.unpause()
    except (DockerError, *TRANSPORT_ERRORS):
        return False
    return True


async def update_limits(container: DockerContainer, limits: Limits) -> bool:
    """Apply new CPU and memory limits to a running container (``docker update``).

    False when the engine refuses, e.g. memory below what the job already uses: the job
    keeps its old limits, the next jobs get the new ones.
    """
    body = {
        "NanoCpus": int(limits.cpus * 1e9),
        "Memory": limits.memory_bytes,
        "MemorySwap": limits.memory_bytes,
    }
    with contextlib.suppress(DockerError, *TRANSPORT_ERRORS):
        await container.docker._query_json(
            f"containers/{container.id}/update", method="POST", data=body
        )
        return True
    return False


async def cpu_seconds(container: DockerContainer) -> float | None:
    """CPU time the container's processes used so far, seconds; None if unknown.

    Read from its cgroup when this machine's layout is known (no engine round trip), else
    from the engine's one-shot stats.
    """
    from_cgroup = _cgroup_cpu_seconds(container.id)
    if from_cgroup is not None:
        return from_cgroup
    try:
        stats = await container.stats(stream=False)
    except (DockerError, *TRANSPORT_ERRORS):
        return None
    try:
        return float(stats[0]["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9
    except (LookupError, TypeError, ValueError):
        return None


def _cgroup_cpu_seconds(container_id: str) -> float | None:
    try:
        return int(Path(_CGROUP_V1.format(id=container_id)).read_text()) / 1e9
    except (OSError, ValueError):
        pass
    for pattern in _CGROUP_V2:
        try:
            text = Path(pattern.format(id=container_id)).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec" and value.strip().isdigit():
                return int(value) / 1e6
    return None
