"""The sandbox image: find it, pull it, or build an equivalent offline with debootstrap.

The agent runs jobs in ``python:3.11-slim``. Where Docker Hub is unreachable we build a
stand-in under the same tag: a trimmed Debian bookworm ``minbase`` with ``python3`` (3.11),
made with debootstrap from the machine's own Debian mirror and loaded with
``docker import``. ``python`` and ``python3`` both work in it, like in the official image.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import aiodocker
from aiodocker.exceptions import DockerError

from compound.agent.runners.docker.engine import EngineError, check_engine, connect, describe

DEFAULT_TAG = "python:3.11-slim"
SUITE = "bookworm"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
PULL_TIMEOUT_S = 20.0
IMAGE_LABEL = "compound.image"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Docs, translations and package caches are of no use to a job and are most of the size.
TRIM_GLOBS = (
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/share/lintian/*",
    "var/lib/apt/lists/*",
    "var/cache/apt/*",
    "var/cache/debconf/*-old",
    "var/log/*",
)

# Called with a short description of the current step (also debootstrap's own lines).
ProgressCallback = Callable[[str], None]
EnsureOutcome = Literal["present", "pulled", "built"]


def _ignore_progress(message: str) -> None:
    pass


class ImageError(EngineError):
    """The image could not be found or built; ``str(exc)`` is one human sentence."""


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields:
            stanzas.append(fields)
    return stanzas


def _mirror_from_deb822(text: str) -> str | None:
    for fields in _deb822_stanzas(text):
        if "deb" in fields.get("types", "").split() and SUITE in fields.get("suites", "").split():
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0]
    return None


def _mirror_from_one_line(text: str) -> str | None:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        # deb [options] URI suite components...
        words = [w for w in words if not (w.startswith("[") or w.endswith("]"))]
        if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
            return words[1]
    return None


def find_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine installs ``bookworm`` from, or deb.debian.org."""
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        mirror = _mirror_from_deb822(path.read_text(errors="replace"))
        if mirror:
            return mirror
    paths = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in paths:
        if path.is_file():
            mirror = _mirror_from_one_line(path.read_text(errors="replace"))
            if mirror:
                return mirror
    return FALLBACK_MIRROR


async def image_exists(tag: str = DEFAULT_TAG, docker_url: str | None = None) -> bool:
    """Whether the engine has an image called ``tag``; EngineError if it does not answer."""
    docker = connect(docker_url)
    try:
        return await _exists(docker, tag)
    finally:
        await docker.close()


async def _exists(docker: aiodocker.Docker, tag: str) -> bool:
    try:
        await docker.images.inspect(tag)
    except DockerError as exc:
        if exc.status == 404:
            return False
        raise EngineError(describe(exc)) from exc
    return True


async def _try_pull(docker: aiodocker.Docker, tag: str, timeout_s: float) -> bool:
    """Pull ``tag``; False (not an error) when the registry is out of reach."""
    try:
        async with asyncio.timeout(timeout_s):
            await docker.images.pull(tag)
    except (DockerError, TimeoutError):
        return False
    return await _exists(docker, tag)


async def ensure_image(
    tag: str = DEFAULT_TAG,
    progress: ProgressCallback = _ignore_progress,
    docker_url: str | None = None,
    pull_timeout_s: float = PULL_TIMEOUT_S,
) -> EnsureOutcome:
    """Make sure ``tag`` exists: keep it, else pull it, else build the offline stand-in."""
    docker = connect(docker_url)
    try:
        progress(f"looking for image {tag}")
        await check_engine(docker)
        if await _exists(docker, tag):
            return "present"
        progress(f"pulling {tag} (up to {pull_timeout_s:.0f} s)")
        if await _try_pull(docker, tag, pull_timeout_s):
            return "pulled"
        progress("the registry is out of reach; building offline instead")
    finally:
        await docker.close()
    await build_image(tag, progress, docker_url)
    return "built"


async def build_image(
    tag: str = DEFAULT_TAG,
    progress: ProgressCallback = _ignore_progress,
    docker_url: str | None = None,
) -> None:
    """Build the stand-in image offline and load it as ``tag`` (about 40 s, 120 MB)."""
    docker = connect(docker_url)
    try:
        await check_engine(docker)
    finally:
        await docker.close()
    debootstrap = shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap")
    if debootstrap is None:
        raise ImageError("debootstrap is not installed: run scripts/setup-docker.sh")
    if os.geteuid() != 0:
        raise ImageError("building the image needs root (debootstrap creates device files)")
    work = Path(tempfile.mkdtemp(prefix="compound-rootfs-", dir="/var/tmp"))
    try:
        rootfs = work / "rootfs"
        await _debootstrap(debootstrap, rootfs, find_mirror(), progress)
        progress("trimming docs, locales and package caches")
        _trim(rootfs)
        _add_python_alias(rootfs)
        progress(f"importing into Docker as {tag}")
        await _import(rootfs, tag, docker_url)
    finally:
        await _unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)


async def _debootstrap(
    debootstrap: str, rootfs: Path, mirror: str, progress: ProgressCallback
) -> None:
    progress(f"debootstrap {SUITE} from {mirror}")
    proc = await asyncio.create_subprocess_exec(
        debootstrap,
        "--variant=minbase",
        "--include=python3",
        SUITE,
        str(rootfs),
        mirror,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    last = ""
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").strip()
        if line:
            last = line
            progress(f"debootstrap: {line}")
    if await proc.wait() != 0:
        raise ImageError(f"debootstrap failed ({last or 'no output'}); is {mirror} reachable?")


def _trim(rootfs: Path) -> None:
    for pattern in TRIM_GLOBS:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _add_python_alias(rootfs: Path) -> None:
    # The official image answers to `python`; scripts and shebangs expect it.
    alias = rootfs / "usr/local/bin/python"
    alias.parent.mkdir(parents=True, exist_ok=True)
    if not alias.is_symlink():
        alias.symlink_to("/usr/bin/python3")


async def _import(rootfs: Path, tag: str, docker_url: str | None) -> None:
    cli = shutil.which("docker")
    if cli is None:
        raise ImageError("the docker command is not installed: run scripts/setup-docker.sh")
    changes = [
        f"ENV PATH={PATH_ENV}",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
        f"LABEL {IMAGE_LABEL}=1",
    ]
    args = [cli, "import"]
    for change in changes:
        args += ["--change", change]
    env = dict(os.environ)
    if docker_url:
        env["DOCKER_HOST"] = docker_url
    read_end, write_end = os.pipe()
    # tar streams the rootfs straight into `docker import`: no 120 MB temporary file.
    try:
        tar = await asyncio.create_subprocess_exec(
            "tar", "--numeric-owner", "-C", str(rootfs), "-c", ".", stdout=write_end
        )
        importer = await asyncio.create_subprocess_exec(
            *args,
            "-",
            tag,
            stdin=read_end,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    _, err = await importer.communicate()
    tar_status = await tar.wait()
    if importer.returncode != 0 or tar_status != 0:
        reason = err.decode(errors="replace").strip().splitlines()
        raise ImageError(f"docker import failed: {reason[-1] if reason else 'tar failed'}")


async def _unmount_under(root: Path) -> None:
    """Unmount anything a failed debootstrap left mounted, so cleanup cannot reach the host."""
    mounts = Path("/proc/mounts").read_text().splitlines()
    prefix = str(root) + "/"
    targets = [m.split()[1] for m in mounts if m.split()[1].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        proc = await asyncio.create_subprocess_exec("umount", "-l", target)
        await proc.wait()
