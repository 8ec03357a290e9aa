"""Where the directories that jobs' containers mount live: a path that names no one.

Under runc a job reads the source path of each bind mount in ``/proc/self/mountinfo``, and
the agent's state directory is under the contributor's home by default: mounting from there
would tell every job the contributor's user name. So what containers mount (our
sitecustomize, the installed package sets) lives in a directory with a random name under
``/var/tmp`` (kept across reboots, unlike ``/tmp``), private to the agent's user (the Docker
daemon mounts it as root), and recorded in the state directory so that the package cache
outlives a restart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

log = logging.getLogger("compound.agent")

RECORD_NAME = "mount-dir"
PREFIX = "compound-"
# What agents before this one kept in the state directory for containers to mount.
_OLD_PLACES = ("deps", "sandbox-site")


def mount_dir(state_dir: Path) -> Path:
    """The agent's directory for mount sources: the recorded one if it is still ours, else
    a new one (recorded). Removes what older agents kept under ``state_dir`` instead."""
    state_dir.mkdir(parents=True, exist_ok=True)
    record = state_dir / RECORD_NAME
    with contextlib.suppress(OSError, ValueError):
        recorded = Path(record.read_text(encoding="utf-8").strip())
        if _is_ours(recorded):
            return recorded
    made = Path(tempfile.mkdtemp(prefix=PREFIX, dir=_base()))
    staged = state_dir / f".{RECORD_NAME}.tmp"
    staged.write_text(f"{made}\n", encoding="utf-8")
    staged.replace(record)
    for old in _OLD_PLACES:
        shutil.rmtree(state_dir / old, ignore_errors=True)
    log.info("containers mount from %s", made)
    return made


def _is_ours(path: Path) -> bool:
    """A real directory (no link) of ours that nobody else may write: another local user
    must not be able to put a sitecustomize of theirs into our jobs."""
    if not path.is_absolute() or not path.name.startswith(PREFIX):
        return False
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _base() -> str:
    var_tmp = "/var/tmp"
    if os.path.isdir(var_tmp) and os.access(var_tmp, os.W_OK | os.X_OK):
        return var_tmp
    return tempfile.gettempdir()
