"""Checks that requirements.lock agrees with pyproject.toml, offline and in well under a second.

Every requirement of the project (its dependencies and every extra) must be pinned in the
lock, each pin must satisfy the requirement's specifier, and each pin must carry a hash
(scripts/install installs with --require-hashes). What the lock pins beyond that (the
dependencies of dependencies) needs the index to judge: `scripts/lock` does that.

Usage: python scripts/check_lock.py [PYPROJECT [LOCK]]; exits 1 with a line per problem.
"""

from __future__ import annotations

import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
FIX = "run scripts/lock"


@dataclass(frozen=True)
class Pin:
    """One `name==version` entry of the lock (a name may have several, under markers)."""

    name: str
    version: Version
    marker: str
    hashed: bool


def project_requirements(pyproject: dict[str, object]) -> list[Requirement]:
    """The project's dependencies and those of all its extras."""
    project = pyproject.get("project")
    if not isinstance(project, dict):
        raise ValueError("pyproject.toml has no [project] table")
    texts = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        texts.extend(extra)
    return [Requirement(text) for text in texts]


def parse_lock(text: str) -> tuple[list[Pin], list[str]]:
    """The lock's pins, and the entries that could not be read."""
    pins: list[Pin] = []
    unreadable: list[str] = []
    for entry in _entries(text):
        requirement, *hashes = entry.split("--hash=")
        head, _, marker = requirement.partition(";")
        name, equals, version = head.partition("==")
        try:
            if not equals:
                raise InvalidVersion(head)
            pinned = Version(version.strip())
        except InvalidVersion:
            unreadable.append(head.strip())
            continue
        pins.append(Pin(canonicalize_name(name.strip()), pinned, marker.strip(), bool(hashes)))
    return pins, unreadable


def _entries(text: str) -> list[str]:
    """The lock's entries, continuation lines joined; comment lines (uv's "# via ...")
    and option lines (`--index-url ...`) dropped."""
    entries: list[str] = []
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith(("#", "-"))):
            continue
        current.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            entries.append(" ".join(current))
            current = []
    if current:
        entries.append(" ".join(current))
    return entries


def problems(pyproject_text: str, lock_text: str) -> list[str]:
    """Every way the lock fails the project's requirements, one sentence each."""
    try:
        requirements = project_requirements(tomllib.loads(pyproject_text))
    except (tomllib.TOMLDecodeError, ValueError, InvalidRequirement) as exc:
        return [f"pyproject.toml cannot be read: {exc}"]
    pins, unreadable = parse_lock(lock_text)
    found = [f"requirements.lock: cannot read the entry {entry!r}" for entry in unreadable]
    by_name: dict[str, list[Pin]] = {}
    for pin in pins:
        by_name.setdefault(pin.name, []).append(pin)
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        wanted = f"{requirement.name}{requirement.specifier}"
        if name not in by_name:
            found.append(f"requirements.lock does not pin {requirement.name} ({wanted}); {FIX}")
            continue
        for pin in by_name[name]:
            if not requirement.specifier.contains(pin.version, prereleases=True):
                found.append(
                    f"requirements.lock pins {pin.name}=={pin.version}, "
                    f"which pyproject.toml does not allow ({wanted}); {FIX}"
                )
    found.extend(
        f"requirements.lock pins {pin.name}=={pin.version} without a hash; {FIX}"
        for pin in pins
        if not pin.hashed
    )
    return found


def main(argv: list[str]) -> int:
    pyproject = Path(argv[0]) if argv else ROOT / "pyproject.toml"
    lock = Path(argv[1]) if len(argv) > 1 else ROOT / "requirements.lock"
    if not lock.is_file():
        print(f"{lock} is missing; {FIX}", file=sys.stderr)
        return 1
    found = problems(pyproject.read_text(encoding="utf-8"), lock.read_text(encoding="utf-8"))
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
