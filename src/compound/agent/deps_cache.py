"""Installed package sets on disk: one directory per resolved set, least recently used first out.

Layout under the agent's ``MOUNT_DIR/deps`` (see ``mount_dir``)::

    sets/<key>/         the installed set (what a job's container mounts read-only)
    meta/<key>.json     its size and packages; the file's mtime is the set's last use
    requests/<key>      the set a request (requirements + index) resolved to, for hits
                        without asking the index again
    tmp/                installations under way; emptied when the agent starts

``<key>`` of a set is the sha256 of its pinned packages and target platform, so two
requests that resolve alike share one set. A set appears at once (a rename) or not at all.
Sets in use by a job are never evicted; the rest are evicted oldest use first while the
total is over the cap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from compound.agent.deps_download import tree_bytes

log = logging.getLogger("compound.agent")

GiB = 1024**3
_KEY_CHARS = frozenset("0123456789abcdef")


class SetTooBig(Exception):
    """An installed set is larger than the whole cache may be; ``str()`` says so."""


@dataclass(frozen=True)
class InstalledSet:
    key: str
    path: Path
    packages: int


def digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


class DepsCache:
    def __init__(self, root: Path, cap_bytes: int) -> None:
        self.root = root
        self.cap_bytes = cap_bytes
        self._in_use: Counter[str] = Counter()
        for name in ("sets", "meta", "requests"):
            (root / name).mkdir(parents=True, exist_ok=True)
        # Left by an agent that died mid-installation: never complete, never used.
        shutil.rmtree(root / "tmp", ignore_errors=True)
        (root / "tmp").mkdir()

    # ------------------------------------------------------------------ lookups

    def for_request(self, request_key: str) -> InstalledSet | None:
        """The set ``request_key`` resolved to before, if it is still here."""
        try:
            key = (self.root / "requests" / request_key).read_text(encoding="ascii").strip()
        except OSError:
            return None
        return self.get(key)

    def get(self, key: str) -> InstalledSet | None:
        if len(key) != 64 or not set(key) <= _KEY_CHARS:
            return None
        path = self.root / "sets" / key
        try:
            meta = json.loads((self.root / "meta" / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not path.is_dir():
            return None
        return InstalledSet(key, path, int(meta.get("packages", 0)))

    def remember(self, request_key: str, key: str) -> None:
        _write_atomically(self.root / "requests" / request_key, key, self.root / "tmp")

    # ------------------------------------------------------------------ use

    @contextlib.contextmanager
    def using(self, installed: InstalledSet) -> Iterator[Path]:
        """Mark the set used now and keep it from eviction until the block ends."""
        self._in_use[installed.key] += 1
        with contextlib.suppress(OSError):
            os.utime(self.root / "meta" / f"{installed.key}.json")
        try:
            yield installed.path
        finally:
            self._in_use[installed.key] -= 1
            if self._in_use[installed.key] <= 0:
                del self._in_use[installed.key]

    # ------------------------------------------------------------------ adding

    def new_workspace(self) -> Path:
        """An empty directory for one installation, on the cache's file system."""
        return Path(tempfile.mkdtemp(dir=self.root / "tmp"))

    def add(self, target: Path, key: str, packages: int) -> InstalledSet:
        """Move the installed ``target`` (made in a ``new_workspace``) into the cache;
        SetTooBig when it alone is over the cap (it is left for the workspace's removal)."""
        size_bytes = tree_bytes(target)
        if size_bytes > self.cap_bytes:
            raise SetTooBig(
                f"the packages take {size_bytes / GiB:.2f} GiB installed, more than this "
                f"contributor's package cache of {self.cap_bytes / GiB:.2f} GiB"
            )
        _make_readable(target)
        destination = self.root / "sets" / key
        try:
            target.rename(destination)
        except OSError:
            if not destination.is_dir():  # not a set installed meanwhile: a real failure
                raise
        meta = json.dumps({"size_bytes": size_bytes, "packages": packages, "at": time.time()})
        _write_atomically(self.root / "meta" / f"{key}.json", meta, self.root / "tmp")
        return InstalledSet(key, destination, packages)

    def evict(self) -> list[str]:
        """Remove least recently used sets not in use until the total fits the cap."""
        entries = []
        for meta_path in (self.root / "meta").glob("*.json"):
            try:
                size = int(json.loads(meta_path.read_text(encoding="utf-8"))["size_bytes"])
                entries.append((meta_path.stat().st_mtime, meta_path.stem, size))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        total = sum(size for _, _, size in entries)
        evicted = []
        for _, key, size in sorted(entries):
            if total <= self.cap_bytes:
                break
            if key in self._in_use:
                continue
            self._remove(key)
            total -= size
            evicted.append(key)
        return evicted

    def _remove(self, key: str) -> None:
        # Meta first: a set without meta is never handed out, then the directory goes.
        with contextlib.suppress(OSError):
            (self.root / "meta" / f"{key}.json").unlink()
        doomed = self.root / "tmp" / f"evicted-{key}"
        with contextlib.suppress(OSError):
            (self.root / "sets" / key).rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        log.info("package set %s evicted from the cache", key[:12])


def _write_atomically(path: Path, text: str, tmp_dir: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=tmp_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(tmp, path)


def _make_readable(root: Path) -> None:
    """Everything readable by the job's user (nobody), nothing writable but by us."""
    with contextlib.suppress(FileNotFoundError):
        (root / ".lock").unlink()  # uv's, of no use once installed
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, 0o755 if mode & 0o111 else 0o644)
