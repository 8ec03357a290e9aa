"""What a job's container is: the Engine API create body and what goes to its stdin.

Pure data, no I/O: ``choose_runtime``, ``sandbox_key``, ``container_config`` and
``job_payload`` are all ``DockerRunner`` needs to create a container, start it, and hand it
one job. The create body depends on the ``SandboxKey`` alone, never on the job, so a
container can be started before its job exists (see ``warm_pool``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from compound.agent.docker_engine import EngineError
from compound.agent.image import DEFAULT_TAG
from compound.agent.runners.base import Limits, MiB, RunSpec
from compound.agent.runners.sandbox_env import DEFAULT_HOME, container_env
from compound.agent.runners.sandbox_payload import (
    SITECUSTOMIZE,
    encode_script,
    job_env,
    job_sections,
    payload,
)

MANAGED_LABEL = "compound.managed"
NODE_LABEL = "compound.node_id"
# On containers the warm pool started ahead of demand (all containers carry the two above).
POOL_LABEL = "compound.pool"
# Container names: a warm one waiting for its job, and a job's (a warm one is renamed when it
# is handed its job), so `docker ps` tells them apart and shows which job runs where.
WARM_NAME_PREFIX = "compound-warm-"
JOB_NAME_PREFIX = "compound-job-"
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# nobody:nogroup; exists in every Debian-based image, owns nothing.
JOB_UID = 65534
JOB_USER = f"{JOB_UID}:{JOB_UID}"
# The job's own tmpfs: the script and our sitecustomize.py (see sandbox_stdio), written by
# the launcher (see sandbox_launch) and made read-only before the script starts.
SCRIPT_DIR = "/job"
SCRIPT_PATH = f"{SCRIPT_DIR}/main.py"
SITE_DIR = f"{SCRIPT_DIR}/site"
# A job's dependency directory (RunSpec.deps_dir), mounted read-only, first after our site.
DEPS_DIR = "/opt/compound/deps"
_LAUNCHER = Path(__file__).with_name("sandbox_launch.py").read_text(encoding="utf-8")
# Room in the job's tmpfs beyond the two files: directory entries, page rounding.
_SCRIPT_DIR_SLACK_BYTES = 1 * MiB
# Under gVisor the pids cgroup counts the sandbox's own host tasks, not the job's processes
# (which gVisor bounds with RLIMIT_NPROC instead): about 40 for the sandbox, and about 5.3
# per guest process on the ptrace platform (threads cost ~none). At the cgroup's limit the
# sandbox itself dies (exit 2, output lost), so it must sit above what RLIMIT_NPROC admits.
RUNSC_BASE_HOST_PIDS = 64
RUNSC_HOST_PIDS_PER_PROCESS = 8

Runtime = Literal["runc", "runsc"]


@dataclass(frozen=True)
class DockerRunnerSettings:
    image: str = DEFAULT_TAG
    # "auto": runsc (gVisor) when Docker has it registered, else runc; see DockerRunner.
    runtime: Literal["auto", "runc", "runsc"] = "auto"
    limits: Limits = field(default_factory=Limits)
    # Between SIGTERM and SIGKILL when a job is cancelled or times out.
    grace_s: float = 10.0
    node_id: str = "local"
    docker_url: str | None = None
    # tmpfs pages count against the memory limit too; these only cap each mount on its own.
    tmp_bytes: int = 256 * MiB
    shm_bytes: int = 64 * MiB
    # The job's own tmpfs (script and sitecustomize): fixed, so a container fits any job. Its
    # pages count against the memory limit only as far as they are used (about the script's
    # size); this caps the script (1 MiB by the coordinator's default) at 14 MiB.
    job_dir_bytes: int = 16 * MiB
    # Started, idle containers kept ready for the next job (see warm_pool); 0 turns it off.
    warm: int = 1


@dataclass(frozen=True)
class SandboxKey:
    """Everything that makes one container differ from another before its job is in.

    A warm container is used only for a job with an equal key.
    """

    image: str
    runtime: Runtime
    limits: Limits
    tmp_bytes: int
    shm_bytes: int
    job_dir_bytes: int
    deps_dir: Path | None = None


def sandbox_key(
    settings: DockerRunnerSettings, runtime: Runtime, deps_dir: Path | None
) -> SandboxKey:
    """The key of the container a job with ``deps_dir`` needs under ``settings``."""
    return SandboxKey(
        image=settings.image,
        runtime=runtime,
        limits=settings.limits,
        tmp_bytes=settings.tmp_bytes,
        shm_bytes=settings.shm_bytes,
        job_dir_bytes=settings.job_dir_bytes,
        deps_dir=deps_dir,
    )


def choose_runtime(wanted: str, registered: dict[str, object]) -> Runtime:
    """The runtime to use: ``wanted``, or for "auto" gVisor when Docker has it, else runc.

    Raises EngineError, saying what to do, when ``wanted`` is not registered.
    """
    if wanted == "auto":
        return "runsc" if "runsc" in registered else "runc"
    if wanted not in ("runc", "runsc") or wanted not in registered:
        raise EngineError(
            f"the {wanted} runtime is not registered with Docker: run scripts/setup-docker.sh"
        )
    return "runsc" if wanted == "runsc" else "runc"


def container_config(key: SandboxKey, node_id: str, *, pooled: bool) -> dict[str, Any]:
    """The Engine API ``containers/create`` body for a container of ``key``, for any job."""
    limits = key.limits
    labels = {MANAGED_LABEL: "1", NODE_LABEL: node_id}
    if pooled:
        labels[POOL_LABEL] = "1"
    return {
        "Image": key.image,
        # The launcher reads the job from stdin, then execs python3 -u on the script.
        "Cmd": ["python3", "-I", "-S", "-c", _LAUNCHER, SCRIPT_PATH, SITE_DIR],
        # Only ours: the job's variables go to stdin and reach only the job's interpreter.
        "Env": container_env({}, _python_path(key)),
        "User": JOB_USER,
        "WorkingDir": DEFAULT_HOME,
        "Tty": False,
        # Stdin carries the job once (see job_payload), then closes.
        "OpenStdin": True,
        "StdinOnce": True,
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "NetworkDisabled": True,
        "Labels": labels,
        "HostConfig": {
            "Runtime": key.runtime,
            "NetworkMode": "none",
            "Memory": limits.memory_bytes,
            "MemorySwap": limits.memory_bytes,
            "NanoCpus": int(limits.cpus * 1e9),
            **_process_limits(limits, key.runtime),
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            # Nothing on the image's layer is writable; the tmpfs mounts below are all there is
            # (with /dev/shm and /dev/mqueue, which POSIX IPC needs, both size-bounded).
            "ReadonlyRootfs": True,
            "Tmpfs": {
                "/tmp": f"rw,nosuid,nodev,noexec,size={key.tmp_bytes},mode=1777",
                SCRIPT_DIR: (
                    f"rw,nosuid,nodev,noexec,size={key.job_dir_bytes},"
                    f"uid={JOB_UID},gid={JOB_UID},mode=0700"
                ),
            },
            **_deps_mount(key),
            "ShmSize": key.shm_bytes,
            # tini as PID 1 forwards SIGTERM to the script; a bare PID 1 would ignore it.
            "Init": True,
            "LogConfig": {"Type": "none", "Config": {}},
            "AutoRemove": False,
            "Privileged": False,
        },
    }


def warm_name() -> str:
    """A unique name for a container started ahead of its job."""
    return f"{WARM_NAME_PREFIX}{uuid.uuid4().hex[:16]}"


def job_name(job_id: str) -> str:
    """A unique container name showing ``job_id`` (which came over the network: sanitised)."""
    return f"{JOB_NAME_PREFIX}{_NAME_UNSAFE.sub('_', job_id)[:64]}-{uuid.uuid4().hex[:8]}"


def _python_path(key: SandboxKey) -> list[str]:
    return [SITE_DIR, DEPS_DIR] if key.deps_dir is not None else [SITE_DIR]


def _deps_mount(key: SandboxKey) -> dict[str, Any]:
    if key.deps_dir is None:
        return {}
    mount = {"Type": "bind", "Source": str(key.deps_dir), "Target": DEPS_DIR, "ReadOnly": True}
    return {"Mounts": [mount]}


def job_payload(spec: RunSpec, key: SandboxKey) -> bytes:
    """What the launcher of a container of ``key`` reads from stdin to become ``spec``.

    ``spec.env`` must have passed ``sandbox_env.refused_variable``; raises
    ``sandbox_payload.PayloadTooBig`` when arguments and environment are too big.
    """
    env = job_env(spec.env, _python_path(key))
    return payload(spec.args, env, job_sections(spec.script))


def script_refusal(spec: RunSpec, key: SandboxKey) -> str | None:
    """Why ``spec``'s script cannot go into a container of ``key``; None when it fits."""
    needed = len(encode_script(spec.script)) + len(SITECUSTOMIZE) + _SCRIPT_DIR_SLACK_BYTES
    if needed <= key.job_dir_bytes:
        return None
    limit_mib = (key.job_dir_bytes - len(SITECUSTOMIZE) - _SCRIPT_DIR_SLACK_BYTES) / MiB
    return f"the script is too big for the sandbox (at most {limit_mib:.1f} MiB)"


def _process_limits(limits: Limits, runtime: Runtime) -> dict[str, Any]:
    ulimits = [
        {"Name": "nofile", "Soft": limits.nofile, "Hard": limits.nofile},
        {"Name": "fsize", "Soft": limits.file_bytes, "Hard": limits.file_bytes},
    ]
    if runtime != "runsc":
        # The pids cgroup counts the job's processes and threads exactly. RLIMIT_NPROC would
        # count every process of uid 65534 on the host, across concurrent jobs.
        return {"PidsLimit": limits.pids, "Ulimits": ulimits}
    # gVisor counts RLIMIT_NPROC per sandbox, so there it is the job's process bound.
    return {
        "PidsLimit": RUNSC_BASE_HOST_PIDS + RUNSC_HOST_PIDS_PER_PROCESS * limits.pids,
        "Ulimits": [*ulimits, {"Name": "nproc", "Soft": limits.pids, "Hard": limits.pids}],
    }
