"""What a job's container is: the Engine API create body and the files copied into it.

Pure data, no I/O: ``container_config`` and ``job_archive`` are all ``DockerRunner`` needs
to create a job's container.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from compound.agent.image import DEFAULT_TAG
from compound.agent.runners.base import Limits, MiB, RunSpec

MANAGED_LABEL = "compound.managed"
JOB_LABEL = "compound.job_id"
NODE_LABEL = "compound.node_id"
# nobody:nogroup; exists in every Debian-based image, owns nothing.
JOB_USER = "65534:65534"
SCRIPT_DIR = "/job"
SCRIPT_PATH = f"{SCRIPT_DIR}/main.py"
# Holds our sitecustomize.py (see sandbox_stdio), first on the job's PYTHONPATH.
SITE_DIR = "/opt/compound/site"
_SITECUSTOMIZE = Path(__file__).with_name("sandbox_stdio.py").read_text(encoding="utf-8")
# Output streaming and exact bytes depend on these, so the job's env cannot override them.
PYTHON_ENV = {
    "PYTHONUNBUFFERED": "1",
    "PYTHONIOENCODING": "utf-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
# Under gVisor the pids cgroup counts the sandbox's own host threads, not the job's
# processes (which gVisor bounds with RLIMIT_NPROC instead); below ~64 the sandbox cannot
# even start, so the host-side bound never goes under this.
RUNSC_MIN_HOST_PIDS = 128


@dataclass(frozen=True)
class DockerRunnerSettings:
    image: str = DEFAULT_TAG
    runtime: Literal["runc", "runsc"] = "runc"
    limits: Limits = field(default_factory=Limits)
    # Between SIGTERM and SIGKILL when a job is cancelled or times out.
    grace_s: float = 10.0
    node_id: str = "local"
    docker_url: str | None = None
    # tmpfs pages count against the memory limit too; this only caps /tmp on its own.
    tmp_bytes: int = 256 * MiB


def container_config(spec: RunSpec, settings: DockerRunnerSettings) -> dict[str, Any]:
    """The Engine API ``containers/create`` body for one job."""
    limits = settings.limits
    env = {"HOME": "/tmp", **spec.env, **PYTHON_ENV}
    env["PYTHONPATH"] = ":".join(filter(None, [SITE_DIR, spec.env.get("PYTHONPATH")]))
    return {
        "Image": settings.image,
        "Cmd": ["python3", "-u", SCRIPT_PATH, *spec.args],
        "Env": [f"{key}={value}" for key, value in env.items()],
        "User": JOB_USER,
        "WorkingDir": "/tmp",
        "Tty": False,
        "OpenStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "NetworkDisabled": True,
        "Labels": {
            MANAGED_LABEL: "1",
            JOB_LABEL: spec.job_id,
            NODE_LABEL: settings.node_id,
        },
        "HostConfig": {
            "Runtime": settings.runtime,
            "NetworkMode": "none",
            "Memory": limits.memory_bytes,
            "MemorySwap": limits.memory_bytes,
            "NanoCpus": int(limits.cpus * 1e9),
            **_process_limits(settings),
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "Tmpfs": {"/tmp": f"rw,nosuid,nodev,size={settings.tmp_bytes},mode=1777"},
            # tini as PID 1 forwards SIGTERM to the script; a bare PID 1 would ignore it.
            "Init": True,
            "LogConfig": {"Type": "none", "Config": {}},
            "AutoRemove": False,
            "Privileged": False,
        },
    }


def _process_limits(settings: DockerRunnerSettings) -> dict[str, Any]:
    pids = settings.limits.pids
    if settings.runtime != "runsc":
        # The pids cgroup counts the job's processes and threads exactly. RLIMIT_NPROC would
        # count every process of uid 65534 on the host, across concurrent jobs.
        return {"PidsLimit": pids}
    # gVisor counts RLIMIT_NPROC per sandbox, so there it is the job's process bound.
    return {
        "PidsLimit": max(pids, RUNSC_MIN_HOST_PIDS),
        "Ulimits": [{"Name": "nproc", "Soft": pids, "Hard": pids}],
    }


def job_archive(script: str) -> bytes:
    """A tar for ``/``: ``job/main.py`` and our sitecustomize, root-owned, world-readable."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("job", "opt", "opt/compound", SITE_DIR.lstrip("/")):
            _add(tar, directory, None)
        _add(tar, SCRIPT_PATH.lstrip("/"), script.encode("utf-8", "surrogatepass"))
        _add(tar, f"{SITE_DIR.lstrip('/')}/sitecustomize.py", _SITECUSTOMIZE.encode("utf-8"))
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes | None) -> None:
    member = tarfile.TarInfo(name)
    if data is None:
        member.type = tarfile.DIRTYPE
        member.mode = 0o755
        tar.addfile(member)
    else:
        member.size = len(data)
        member.mode = 0o644
        tar.addfile(member, io.BytesIO(data))
