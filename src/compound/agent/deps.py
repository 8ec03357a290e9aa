"""A job's Python packages, ready before its container starts: resolved, installed, cached.

The requirements come from the submitter through the coordinator; they are checked again
here (the contributor's machine runs uv on them). A request seen before is a cache hit with
no network at all; otherwise uv resolves it to a pinned set, and a set already installed
(another request that resolved alike) is a hit too. Only a new set is downloaded and
installed. Progress goes to ``note``, which the worker turns into the job's ``system``
records; any failure is :class:`DepsError` with one sentence for the submitter.

Two bounds, both the contributor's: the preparation gets the time left of the job's timeout
(:class:`DepsTimedOut` past it: the job's clock runs from when the agent got it, as the
coordinator's does), and what uv downloads and unpacks for one job is capped
(``deps_download.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from compound.agent.deps_budget import DiskBudget, OverBudget
from compound.agent.deps_cache import DepsCache, InstalledSet, SetTooBig, digest
from compound.agent.deps_download import DownloadTooBig, within_cap
from compound.agent.deps_uv import PYTHON_PLATFORM, PYTHON_VERSION, UvError, UvSettings
from compound.agent.deps_uv import install as uv_install
from compound.agent.deps_uv import resolve as uv_resolve
from compound.protocol.requirements import RequirementsError, check_requirements

log = logging.getLogger("compound.agent")

Note = Callable[[str], None]
_TARGET = [f"python={PYTHON_VERSION}", f"platform={PYTHON_PLATFORM}"]


class DepsError(Exception):
    """The job's packages cannot be made ready; ``str(error)`` is one sentence."""


class DepsCancelled(Exception):
    """The job was cancelled while its packages were prepared."""


class DepsTimedOut(Exception):
    """The job's time ran out while its packages were prepared."""


GiB = 1024**3


class Packages:
    """Prepares package sets for jobs; one per agent, built from its settings."""

    def __init__(self, cache: DepsCache, uv: UvSettings, max_download_bytes: int = 1 * GiB) -> None:
        self._cache = cache
        self._uv = uv
        # What uv may download and unpack for one job (its cache directory for it).
        self._max_download_bytes = max_download_bytes
        # One preparation at a time: two jobs with the same new set install it once.
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def prepared(
        self,
        requirements: list[str],
        note: Note,
        cancel: asyncio.Event,
        timeout_s: float | None = None,
    ) -> AsyncIterator[Path]:
        """The directory of the installed set, kept from eviction until the block ends.

        Raises DepsError when the set cannot be made ready, DepsCancelled when ``cancel``
        is set first, DepsTimedOut when it is not ready within ``timeout_s`` (uv is stopped
        in both cases).
        """
        preparing = asyncio.ensure_future(self._prepare(requirements, note))
        cancelled = asyncio.ensure_future(cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {preparing, cancelled},
                timeout=None if timeout_s is None else max(0.0, timeout_s),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            cancelled.cancel()
            if not preparing.done():
                preparing.cancel()
                await asyncio.gather(preparing, return_exceptions=True)
        if preparing not in done:
            raise DepsCancelled() if cancel.is_set() else DepsTimedOut()
        installed = preparing.result()
        with self._cache.using(installed) as path:
            # After marking this set used: it is the newest, and never evicted while in use.
            evicted = await asyncio.to_thread(self._cache.evict)
            if evicted:
                log.info("deps cache: %d set(s) evicted to stay under the cap", len(evicted))
            yield path

    async def _prepare(self, requirements: list[str], note: Note) -> InstalledSet:
        try:
            wanted = check_requirements(requirements)
        except RequirementsError as exc:
            raise DepsError(str(exc)) from None
        request_key = digest([*_TARGET, f"index={self._uv.index_url}", *sorted(wanted)])
        async with self._lock:
            installed = self._cache.for_request(request_key)
            if installed is not None:
                note(f"[compound] packages ready (cached, {installed.packages} packages)")
                return installed
            installed = await self._resolve_and_install(wanted, note)
            self._cache.remember(request_key, installed.key)
        return installed

    async def _resolve_and_install(self, wanted: list[str], note: Note) -> InstalledSet:
        started = time.monotonic()
        workspace = self._cache.new_workspace()
        try:
            note(f"[compound] resolving {len(wanted)} requirement(s): {', '.join(wanted)}"[:2000])
            uv_cache = workspace / "uv-cache"
            cap = self._max_download_bytes
            # Everything uv writes is in the workspace, held to the cache cap as it is written.
            budget = DiskBudget(workspace, self._cache.cap_bytes)
            try:
                pinned = await within_cap(
                    uv_resolve(wanted, self._uv, uv_cache, budget), uv_cache, cap
                )
                key = digest([*_TARGET, *pinned])
                installed = self._cache.get(key)
                if installed is not None:
                    note(f"[compound] packages ready (cached, {installed.packages} packages)")
                    return installed
                note(f"[compound] downloading and installing {len(pinned)} package(s)")
                target = workspace / "target"
                await within_cap(
                    uv_install(pinned, target, self._uv, uv_cache, budget), uv_cache, cap
                )
            except OverBudget as exc:
                raise DepsError(str(exc)) from None
            except UvError as exc:
                raise DepsError(f"the requirements could not be installed: {exc}") from None
            except DownloadTooBig as exc:
                raise DepsError(str(exc)) from None
            try:
                installed = await asyncio.to_thread(self._cache.add, target, key, len(pinned))
            except SetTooBig as exc:
                raise DepsError(str(exc)) from None
            elapsed_s = time.monotonic() - started
            note(f"[compound] {len(pinned)} package(s) installed in {elapsed_s:.1f} s")
            return installed
        finally:
            # Gone already when the set was added; otherwise nothing in it is of use.
            await asyncio.to_thread(shutil.rmtree, workspace, True)
