"""What a job's container is: the Engine API create body and what goes to its stdin.

Pure data, no I/O: ``choose_runtime``, ``container_config`` and ``job_payload`` are all
``DockerRunner`` needs to create and start a job's container.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from compound.agent.docker_engine import EngineError
from compound.agent.image import DEFAULT_TAG
from compound.agent.runners.base import Limits, MiB, RunSpec
from compound.agent.runners.sandbox_env import container_env

MANAGED_LABEL = "compound.managed"
JOB_LABEL = "compound.job_id"
NODE_LABEL = "compound.node_id"
# nobody:nogroup; exists in every Debian-based image, owns nothing.
JOB_UID = 65534
JOB_USER = f"{JOB_UID}:{JOB_UID}"
# The job's own tmpfs: the script and our sitecustomize.py (see sandbox_stdio), written by
# the launcher (see sandbox_launch) and made read-only before the script starts.
SCRIPT_DIR = "/job"
SCRIPT_PATH = f"{SCRIPT_DIR}/main.py"
SITE_DIR = f"{SCRIPT_DIR}/site"
_SITECUSTOMIZE = Path(__file__).with_name("sandbox_stdio.py").read_bytes()
# One program, one namespace: the launcher calls the files' functions by their names. The
# __future__ import is only valid at a program's top; there it keeps annotations unevaluated,
# so the shipped code need not import typing.
_LAUNCHER = "from __future__ import annotations\n" + "".join(
    Path(__file__)
    .with_name(name)
    .read_text(encoding="utf-8")
    .replace("from __future__ import annotations\n", "")
    for name in ("sandbox_files.py", "sandbox_launch.py")
)
# Must match sandbox_launch.HEADER: the script's length, then sitecustomize's.
_PAYLOAD_HEADER = struct.Struct(">QQ")
# Room in the job's tmpfs beyond the two files: directory entries, page rounding.
_SCRIPT_DIR_SLACK_BYTES = 1 * MiB
# Must match sandbox_launch.CONTROL: the files section's fixed head.
_FILES_CONTROL = struct.Struct(">QQQdH")
# The trailer's marker starts with bytes text output rarely ends with: the agent holds back
# only a chunk's suffix that could be the start of it (see sandbox_trailer).
TRAILER_MARKER_PREFIX = b"\x00\xffcompound-outputs:"
# The launcher SIGKILLs the job this long before the agent's grace period is over, so the
# outputs are on their way before the agent would kill the container.
OUTPUTS_MARGIN_S = 2.0
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
    # What comes back from the job's outputs/ directory at most (the agent's
    # --max-output-files-mib); past it, what fits and a note.
    max_outputs_bytes: int = 100 * MiB
    # Room in /job for what the job writes to outputs/, besides its inputs and script.
    job_dir_bytes: int = 256 * MiB
    # Input tars with more entries are refused before the job runs.
    max_input_files: int = 100_000
    # Where outputs tars are written for the caller (None: the system's temp directory).
    outputs_dir: Path | None = None


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


def container_config(
    spec: RunSpec, settings: DockerRunnerSettings, runtime: Runtime, inputs_bytes: int = 0
) -> dict[str, Any]:
    """The Engine API ``containers/create`` body for one job under ``runtime``.

    ``spec.env`` must have passed ``sandbox_env.refused_variable``; ``inputs_bytes`` is the
    size of ``spec.inputs_tar``.
    """
    limits = settings.limits
    return {
        "Image": settings.image,
        # The launcher reads the files from stdin, then execs python3 -u on the script.
        "Cmd": ["python3", "-I", "-S", "-c", _LAUNCHER, SCRIPT_PATH, SITE_DIR, *spec.args],
        "Env": container_env(spec.env, SITE_DIR),
        "User": JOB_USER,
        # The job's inputs and its outputs/ are in /job (HOME stays /tmp, for scratch files).
        "WorkingDir": SCRIPT_DIR,
        "Tty": False,
        # Stdin carries the job's files once (see job_payload), then closes.
        "OpenStdin": True,
        "StdinOnce": True,
        "AttachStdin": True,
        "AttachStdout": True,
        "AttachStderr": True,
        "NetworkDisabled": True,
        "Labels": {
            MANAGED_LABEL: "1",
            JOB_LABEL: spec.job_id,
            NODE_LABEL: settings.node_id,
        },
        "HostConfig": {
            "Runtime": runtime,
            "NetworkMode": "none",
            "Memory": limits.memory_bytes,
            "MemorySwap": limits.memory_bytes,
            "NanoCpus": int(limits.cpus * 1e9),
            **_process_limits(limits, runtime),
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            # Nothing on the image's layer is writable; the tmpfs mounts below are all there is
            # (with /dev/shm and /dev/mqueue, which POSIX IPC needs, both size-bounded).
            "ReadonlyRootfs": True,
            "Tmpfs": {
                "/tmp": f"rw,nosuid,nodev,noexec,size={settings.tmp_bytes},mode=1777",
                SCRIPT_DIR: (
                    "rw,nosuid,nodev,noexec,"
                    f"size={job_dir_bytes(spec.script, inputs_bytes, settings)},"
                    f"uid={JOB_UID},gid={JOB_UID},mode=0700"
                ),
            },
            "ShmSize": settings.shm_bytes,
            # tini as PID 1 forwards SIGTERM to the script; a bare PID 1 would ignore it.
            "Init": True,
            "LogConfig": {"Type": "none", "Config": {}},
            "AutoRemove": False,
            "Privileged": False,
        },
    }


def job_payload(script: str) -> bytes:
    """What the launcher reads from stdin: the two lengths, sitecustomize, the script."""
    encoded = _encode(script)
    return _PAYLOAD_HEADER.pack(len(encoded), len(_SITECUSTOMIZE)) + _SITECUSTOMIZE + encoded


def files_control(marker: bytes, inputs_bytes: int, settings: DockerRunnerSettings) -> bytes:
    """The files section's head (see sandbox_launch.FilesControl); the inputs tar of
    ``inputs_bytes`` follows it on stdin."""
    kill_after_s = max(settings.grace_s - OUTPUTS_MARGIN_S, settings.grace_s / 2)
    head = _FILES_CONTROL.pack(
        inputs_bytes,
        settings.max_input_files,
        settings.max_outputs_bytes,
        kill_after_s,
        len(marker),
    )
    return head + marker


def job_dir_bytes(script: str, inputs_bytes: int, settings: DockerRunnerSettings) -> int:
    """The size of /job: script, sitecustomize, inputs (extracted, never more than the tar)
    and room for outputs/."""
    return _script_dir_bytes(script) + math.ceil(inputs_bytes / MiB) * MiB + settings.job_dir_bytes


def _encode(script: str) -> bytes:
    return script.encode("utf-8", "surrogatepass")


def _script_dir_bytes(script: str) -> int:
    needed = len(_encode(script)) + len(_SITECUSTOMIZE) + _SCRIPT_DIR_SLACK_BYTES
    return math.ceil(needed / MiB) * MiB


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
