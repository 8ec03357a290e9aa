"""What a job's container is: the Engine API create body and what goes to its stdin.

Pure data, no I/O: with ``runtime.choose_runtime``, ``sandbox_key``, ``container_config``
and ``job_payload`` are all ``DockerRunner`` needs to create a container, start it, and hand
it one job. The create body depends on the ``SandboxKey`` alone, never on the job, so a
container can be started before its job exists (see ``warm_pool``).
"""

from __future__ import annotations

import math
import re
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compound.agent.runners.base import Limits, MiB, RunSpec
from compound.agent.runners.docker.env import container_env
from compound.agent.runners.docker.image import DEFAULT_TAG
from compound.agent.runners.docker.payload import (
    BOOTSTRAP_SOURCE,
    IN_CONTAINER,
    boot,
    encode_script,
    job_env,
    job_sections,
    payload,
)
from compound.agent.runners.docker.runtime import Chosen, Runtime
from compound.agent.runners.docker.seccomp import security_options
from compound.protocol.script_names import DEFAULT_SCRIPT_NAME

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
# The job's own tmpfs and working directory, writable for the job: the script (named as in
# RunSpec.script_name, main.py by default) and the input files, written by the launcher
# (see in_container.launcher), outputs/ and whatever else the job writes there.
SCRIPT_DIR = "/job"
SCRIPT_PATH = f"{SCRIPT_DIR}/{DEFAULT_SCRIPT_NAME}"
# Our sitecustomize.py (see in_container.stdio), mounted read-only from the agent's machine: it
# must be in place when the container's interpreter starts, before anything could write it.
SITE_DIR = "/opt/compound/site"
SITECUSTOMIZE_NAME = "sitecustomize.py"
# A job's dependency directory (RunSpec.deps_dir), mounted read-only, first after our site.
DEPS_DIR = "/opt/compound/deps"
# One program, one namespace: the launcher calls the files' functions by their names. The
# __future__ import is only valid at a program's top; there it keeps annotations unevaluated,
# so the shipped code need not import typing.
LAUNCHER_SOURCE = "from __future__ import annotations\n" + "".join(
    (IN_CONTAINER / name)
    .read_text(encoding="utf-8")
    .replace("from __future__ import annotations\n", "")
    for name in ("files.py", "prestart.py", "relay.py", "launcher.py")
)
# The job's interpreter, started before the job arrives (see in_container.prestart).
ZYGOTE_SOURCE = (IN_CONTAINER / "zygote.py").read_text(encoding="utf-8")
# Room in the job's tmpfs beyond the script: directory entries, page rounding.
_SCRIPT_DIR_SLACK_BYTES = 1 * MiB
# Must match in_container.launcher.CONTROL: the files section's fixed head.
_FILES_CONTROL = struct.Struct(">QQQdHB")
# The trailer's marker starts with bytes text output rarely ends with: the agent holds back
# only a chunk's suffix that could be the start of it (see trailer).
TRAILER_MARKER_PREFIX = b"\x00\xffcompound-outputs:"
# What a launcher staying for another job writes once ready for it, after the last job's
# marker. Must match in_container.launcher.READY_SUFFIX.
READY_SUFFIX = b":ready"
# What the agent asks a kept container's launcher with. Must match in_container.launcher.
ASK_READY = b"?"
# The launcher SIGKILLs the job this long before the agent's grace period is over, so the
# outputs are on their way before the agent would kill the container.
OUTPUTS_MARGIN_S = 2.0
# Under gVisor the pids cgroup counts the sandbox's own host tasks, not the job's processes
# (which gVisor bounds with RLIMIT_NPROC instead): about 40 for the sandbox, and about 5.3
# per guest process on the ptrace platform (threads cost ~none). At the cgroup's limit the
# sandbox itself dies (exit 2, output lost), so it must sit above what RLIMIT_NPROC admits.
RUNSC_BASE_HOST_PIDS = 64
RUNSC_HOST_PIDS_PER_PROCESS = 8


@dataclass(frozen=True)
class DockerRunnerSettings:
    image: str = DEFAULT_TAG
    # AUTO: runsc (gVisor) when Docker has it registered, else runc (see runtime).
    runtime: Runtime = Runtime.AUTO
    limits: Limits = field(default_factory=Limits)
    # Between SIGTERM and SIGKILL when a job is cancelled or times out.
    grace_s: float = 10.0
    node_id: str = "local"
    docker_url: str | None = None
    # tmpfs pages count against the memory limit too; these only cap each mount on its own.
    tmp_bytes: int = 256 * MiB
    shm_bytes: int = 64 * MiB
    # The job's own tmpfs, /job: script, sitecustomize, input files and what the job writes
    # to outputs/. Fixed, so a started container fits any job; its pages count against the
    # memory limit only as far as they are used. Script and inputs together may take all but
    # the room kept for outputs (the coordinator caps a script at 1 MiB, inputs at 100 MiB).
    job_dir_bytes: int = 400 * MiB
    # Of /job, what script and inputs may never take: the job's room for outputs/.
    outputs_room_bytes: int = 256 * MiB
    # What comes back from the job's outputs/ directory at most (the agent's
    # --max-output-files-mib); past it, what fits and a note.
    max_outputs_bytes: int = 100 * MiB
    # Input tars with more entries are refused before the job runs.
    max_input_files: int = 100_000
    # Where outputs tars are written for the caller (None: the system's temp directory).
    outputs_dir: Path | None = None
    # Started, idle containers kept ready for the next job (see warm_pool); 0 turns it off.
    warm: int = 1
    # Containers kept after a job that ended by itself, each for the next job of the same
    # submitter (see reuse); 0 turns it off. One left idle this long is removed.
    reuse: int = 1
    reuse_idle_s: float = 10.0
    # Where our sitecustomize is kept for containers to mount (None: a private temporary
    # directory, removed at close).
    site_dir: Path | None = None


@dataclass(frozen=True)
class SandboxKey:
    """Everything that makes one container differ from another before its job is in.

    A warm container is used only for a job with an equal key.
    """

    image: str
    runtime: Chosen
    limits: Limits
    tmp_bytes: int
    shm_bytes: int
    job_dir_bytes: int
    deps_dir: Path | None = None
    # The engine's machine ("x86_64"), which picks the seccomp profile (see seccomp.py).
    architecture: str | None = None


def sandbox_key(
    settings: DockerRunnerSettings,
    runtime: Chosen,
    deps_dir: Path | None,
    architecture: str | None = None,
) -> SandboxKey:
    """The key of the container a job with ``deps_dir`` needs under ``settings``, on an
    engine of ``architecture``."""
    return SandboxKey(
        image=settings.image,
        runtime=runtime,
        limits=settings.limits,
        tmp_bytes=settings.tmp_bytes,
        shm_bytes=settings.shm_bytes,
        job_dir_bytes=settings.job_dir_bytes,
        deps_dir=deps_dir,
        architecture=architecture,
    )


def container_config(
    key: SandboxKey, node_id: str, site_source: Path, *, pooled: bool
) -> dict[str, Any]:
    """The Engine API ``containers/create`` body for a container of ``key``, for any job;
    ``site_source``: the agent's directory holding our sitecustomize (``SITECUSTOMIZE``)."""
    limits = key.limits
    labels = {MANAGED_LABEL: "1", NODE_LABEL: node_id}
    if pooled:
        labels[POOL_LABEL] = "1"
    return {
        "Image": key.image,
        # The job's interpreter, started now: it reads LAUNCHER_BOOT from stdin (sent at the
        # start), forks the zygote and runs the launcher, which reads the job from stdin.
        "Cmd": ["python3", "-u", "-c", BOOTSTRAP_SOURCE],
        # Only ours: the job's variables go to stdin and reach only the job's interpreter.
        "Env": container_env({}, _python_path(key)),
        "User": JOB_USER,
        # The job's inputs and its outputs/ are in /job (HOME stays /tmp, for scratch files).
        "WorkingDir": SCRIPT_DIR,
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
            "Runtime": str(key.runtime),
            "NetworkMode": "none",
            "Memory": limits.memory_bytes,
            "MemorySwap": limits.memory_bytes,
            "NanoCpus": int(limits.cpus * 1e9),
            **_process_limits(limits, key.runtime),
            "CapDrop": ["ALL"],
            "SecurityOpt": security_options(key.architecture),
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
            "Mounts": _mounts(key, site_source),
            "ShmSize": key.shm_bytes,
            # tini as PID 1 forwards SIGTERM to the script; a bare PID 1 would ignore it.
            "Init": True,
            "LogConfig": {"Type": "none", "Config": {}},
            "AutoRemove": False,
            "Privileged": False,
        },
    }


def launcher_boot(script_path: str, *, zygote: bool = True) -> bytes:
    """What a container is sent on stdin as it starts (see payload.BOOTSTRAP_SOURCE);
    ``zygote`` False: no job is handed to a pre-started interpreter."""
    programs = {"launcher": LAUNCHER_SOURCE}
    if zygote:
        programs["zygote"] = ZYGOTE_SOURCE
    return boot(programs, [script_path])


LAUNCHER_BOOT = launcher_boot(SCRIPT_PATH)


def warm_name() -> str:
    """A unique name for a container started ahead of its job."""
    return f"{WARM_NAME_PREFIX}{uuid.uuid4().hex[:16]}"


def job_name(job_id: str) -> str:
    """A unique container name showing ``job_id`` (which came over the network: sanitised)."""
    return f"{JOB_NAME_PREFIX}{_NAME_UNSAFE.sub('_', job_id)[:64]}-{uuid.uuid4().hex[:8]}"


def _python_path(key: SandboxKey) -> list[str]:
    return [SITE_DIR, DEPS_DIR] if key.deps_dir is not None else [SITE_DIR]


def _mounts(key: SandboxKey, site_source: Path) -> list[dict[str, Any]]:
    site = {"Type": "bind", "Source": str(site_source), "Target": SITE_DIR, "ReadOnly": True}
    if key.deps_dir is None:
        return [site]
    deps = {"Type": "bind", "Source": str(key.deps_dir), "Target": DEPS_DIR, "ReadOnly": True}
    return [site, deps]


def job_payload(spec: RunSpec, key: SandboxKey) -> bytes:
    """What the launcher of a container of ``key`` reads from stdin to become ``spec``.

    ``spec.env`` must have passed ``env.refused_variable``; raises
    ``payload.PayloadTooBig`` when arguments and environment are too big.
    """
    env = job_env(spec.env, _python_path(key))
    return payload(spec.args, env, job_sections(spec.script, spec.script_name))


def script_refusal(
    spec: RunSpec, key: SandboxKey, inputs_bytes: int, outputs_room_bytes: int
) -> str | None:
    """Why ``spec``'s script and ``inputs_bytes`` of input files cannot go into a container
    of ``key`` and still leave ``outputs_room_bytes``; None when they fit."""
    fixed = _SCRIPT_DIR_SLACK_BYTES + outputs_room_bytes
    inputs = math.ceil(inputs_bytes / MiB) * MiB
    if len(encode_script(spec.script)) + inputs + fixed <= key.job_dir_bytes:
        return None
    limit_mib = max(key.job_dir_bytes - fixed, 0) / MiB
    what = "the script and its input files are" if inputs_bytes else "the script is"
    return f"{what} too big for the sandbox (at most {limit_mib:.1f} MiB)"


def files_control(
    marker: bytes, inputs_bytes: int, settings: DockerRunnerSettings, *, stay: bool = False
) -> bytes:
    """The files section's head (see in_container.launcher.FilesControl); the inputs tar of
    ``inputs_bytes`` follows it on stdin. ``stay``: the launcher waits for another job
    after this one (see reuse)."""
    kill_after_s = max(settings.grace_s - OUTPUTS_MARGIN_S, settings.grace_s / 2)
    head = _FILES_CONTROL.pack(
        inputs_bytes,
        settings.max_input_files,
        settings.max_outputs_bytes,
        kill_after_s,
        len(marker),
        int(stay),
    )
    return head + marker


def _process_limits(limits: Limits, runtime: Chosen) -> dict[str, Any]:
    ulimits = [
        {"Name": "nofile", "Soft": limits.nofile, "Hard": limits.nofile},
        {"Name": "fsize", "Soft": limits.file_bytes, "Hard": limits.file_bytes},
    ]
    if runtime != Runtime.RUNSC:
        # The pids cgroup counts the job's processes and threads exactly. RLIMIT_NPROC would
        # count every process of uid 65534 on the host, across concurrent jobs.
        return {"PidsLimit": limits.pids, "Ulimits": ulimits}
    # gVisor counts RLIMIT_NPROC per sandbox, so there it is the job's process bound.
    return {
        "PidsLimit": RUNSC_BASE_HOST_PIDS + RUNSC_HOST_PIDS_PER_PROCESS * limits.pids,
        "Ulimits": [*ulimits, {"Name": "nproc", "Soft": limits.pids, "Hard": limits.pids}],
    }
