"""Resolving and installing a job's packages with uv, on the host, binary wheels only.

uv runs here, outside the sandbox, so it must never run package code: ``--only-binary
:all:`` refuses source distributions (whose build would run their setup code), and a wheel
is only unpacked, never executed (no bytecode compilation either). What uv writes is held
to the package cache's cap while it writes (see deps_budget). It resolves for the
sandbox, not for this machine: CPython 3.11 on x86_64 manylinux with glibc 2.36 (Debian
bookworm, the python:3.11-slim image). Its configuration files and ``UV_*`` variables are
ignored, so only the contributor's agent settings say where packages come from.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import uv

from compound.agent.deps_budget import DiskBudget, OverBudget

PYTHON_VERSION = "3.11"
PYTHON_PLATFORM = "x86_64-manylinux_2_36"
DEFAULT_INDEX_URL = "https://pypi.org/simple"
# A resolution pins at most this many packages; more is not a script's environment.
MAX_PINNED = 256
# uv's error, cut to one line of this many characters for the submitter.
MAX_REASON_CHARS = 500
_BOX_DRAWING = re.compile(r"[\u2500-\u25ff\u00d7\u2022]+")
_PIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(==)[A-Za-z0-9.+!_-]+")


class UvError(Exception):
    """uv could not resolve or install; ``str(error)`` is its reason in one line."""


@dataclass(frozen=True)
class UvSettings:
    index_url: str = DEFAULT_INDEX_URL
    # Resolution and download together; a slow index fails the job, not the agent.
    timeout_s: float = 600.0


def base_args(settings: UvSettings, cache_dir: Path) -> list[str]:
    return [
        "--no-config",
        "--only-binary",
        ":all:",
        "--python-version",
        PYTHON_VERSION,
        "--python-platform",
        PYTHON_PLATFORM,
        "--index-url",
        settings.index_url,
        "--cache-dir",
        str(cache_dir),
        "--no-progress",
    ]


async def resolve(
    requirements: list[str], settings: UvSettings, cache_dir: Path, budget: DiskBudget
) -> list[str]:
    """The pinned set (``name==version`` lines, sorted) that satisfies ``requirements``."""
    args = ["pip", "compile", "-", "--no-header", "--no-annotate", "--quiet"]
    stdout = await _run_uv(
        [*args, *base_args(settings, cache_dir)],
        "\n".join(requirements) + "\n",
        settings,
        budget,
    )
    pinned = sorted({line.strip() for line in stdout.splitlines() if line.strip()})
    if len(pinned) > MAX_PINNED:
        raise UvError(f"the requirements pull in more than {MAX_PINNED} packages")
    if not all(_PIN.fullmatch(line) for line in pinned):
        raise UvError("the resolver's answer could not be read")
    return pinned


async def install(
    pinned: list[str], target: Path, settings: UvSettings, cache_dir: Path, budget: DiskBudget
) -> None:
    """Unpack exactly ``pinned`` (no further dependencies) into ``target``.

    Hard links from uv's cache, not copies: the cache is this installation's own (removed
    once the set is in place), and a copy would write every byte twice, halving the set
    that fits the budget.
    """
    args = ["pip", "install", "--target", str(target), "--no-deps", "--link-mode", "hardlink"]
    requirements_file = cache_dir.parent / "pinned.txt"
    requirements_file.write_text("\n".join(pinned) + "\n", encoding="utf-8")
    await _run_uv(
        [*args, "--quiet", "-r", str(requirements_file), *base_args(settings, cache_dir)],
        None,
        settings,
        budget,
    )


async def _run_uv(
    args: list[str], stdin: str | None, settings: UvSettings, budget: DiskBudget
) -> str:
    """uv's stdout; UvError with its one-line reason when it fails or takes too long,
    OverBudget when what it wrote under ``budget.root`` grew past the budget."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("UV_")}
    # uv's temporary files count against the budget too.
    env["TMPDIR"] = str(budget.root)
    process = await asyncio.create_subprocess_exec(
        uv.find_uv_bin(),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    budget.limit_file_size(process.pid)
    talking = asyncio.ensure_future(
        process.communicate(stdin.encode() if stdin is not None else None)
    )
    watching = asyncio.ensure_future(budget.first_excess())
    try:
        done, _ = await asyncio.wait(
            {talking, watching}, timeout=settings.timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if watching in done:
            raise OverBudget(budget.limit_bytes)
        if talking not in done:
            raise UvError(f"resolving and downloading took longer than {settings.timeout_s:g} s")
        stdout, stderr = talking.result()
    finally:
        watching.cancel()
        # Cancelled, timed out or over budget: uv must not go on writing for nobody.
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await asyncio.gather(talking, watching, return_exceptions=True)
    if budget.killed_for_size(process.returncode):
        raise OverBudget(budget.limit_bytes)
    if process.returncode != 0:
        raise UvError(one_line(stderr.decode("utf-8", "replace")))
    return stdout.decode("utf-8", "replace")


def one_line(text: str) -> str:
    """uv's multi-line, box-drawn error as one plain line of bounded length."""
    plain = _BOX_DRAWING.sub(" ", text)
    line = " ".join(plain.split())
    if not line:
        return "uv failed without saying why"
    return line if len(line) <= MAX_REASON_CHARS else line[: MAX_REASON_CHARS - 1] + "…"
