"""A job's Python packages: PEP 723 inline metadata, requirements files, one strict check.

Pure functions, no I/O. Requirements come from whoever submits a job and end up on a
contributor's command line (``uv pip compile``), so each must be a plain PEP 508 requirement
on a package index: a name, extras and a version specifier, nothing else. No URL or local
path (the contributor would fetch or read what the submitter names), no option (``-e``,
``--index-url``), no environment marker (the sandbox is always CPython 3.11 on x86_64 Linux,
and markers are the one part of a requirement the host resolver evaluates). Every failure
is :class:`RequirementsError` with one sentence that is safe to show the sender.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

MAX_REQUIREMENTS = 64
MAX_REQUIREMENT_CHARS = 200
# A PEP 723 block is a few lines of TOML; a bigger one is not metadata.
MAX_METADATA_CHARS = 64 * 1024
# What the sandbox image runs (python:3.11-slim); requires-python is checked against it.
SANDBOX_PYTHON = "3.11"

# PEP 723: "# /// TYPE" opens a block, "# ///" closes it, every line between is "#" or "# ...".
_OPEN = re.compile(r"# /// (?P<type>[a-zA-Z0-9-]+)")
_BODY = re.compile(r"#(| .*)")
_CLOSE = "# ///"
# Printable ASCII only: a requirement's name, extras and specifiers need nothing else.
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


class RequirementsError(ValueError):
    """The requirements cannot be used; ``str(error)`` is one sentence for the sender."""


def check_requirements(requirements: list[str]) -> list[str]:
    """The requirements in canonical form (normalized names, deduplicated, in order), or
    RequirementsError."""
    if len(requirements) > MAX_REQUIREMENTS:
        raise RequirementsError(f"at most {MAX_REQUIREMENTS} requirements are allowed")
    result: list[str] = []
    for text in requirements:
        requirement = canonical(parse_requirement(text))
        if requirement not in result:
            result.append(requirement)
    return result


def parse_requirement(text: str) -> Requirement:
    """One requirement: a package on an index with optional extras and versions."""
    shown = ascii(text[:60])
    if len(text) > MAX_REQUIREMENT_CHARS:
        raise RequirementsError(
            f"requirement {shown}... is longer than {MAX_REQUIREMENT_CHARS} characters"
        )
    stripped = text.strip()
    if not _PRINTABLE.fullmatch(stripped):
        raise RequirementsError(f"requirement {shown} must be printable ASCII, one line")
    if stripped.startswith("-"):
        raise RequirementsError(
            f"requirement {shown} is an option; only package requirements are accepted"
        )
    try:
        requirement = Requirement(stripped)
    except InvalidRequirement:
        raise RequirementsError(f"requirement {shown} is not a valid PEP 508 requirement") from None
    if requirement.url:
        raise RequirementsError(
            f"requirement {shown} names a URL or path; only packages from the index are accepted"
        )
    if requirement.marker is not None:
        raise RequirementsError(
            f"requirement {shown} has an environment marker; the sandbox is always "
            f"CPython {SANDBOX_PYTHON} on x86_64 Linux, so list only what it needs"
        )
    return requirement


def canonical(requirement: Requirement) -> str:
    """``name[extras]specifier`` with the name normalized (PEP 503) and extras sorted."""
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    return f"{canonicalize_name(requirement.name)}{extras}{requirement.specifier}"


def read_requirements_file(text: str) -> list[str]:
    """The requirements of a requirements.txt: comments and blank lines skipped, options
    (``-e``, ``-r``, ``--index-url``, ...) refused, each line checked."""
    requirements: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            option = ascii(line.split()[0][:40])
            raise RequirementsError(
                f"line {number}: the option {option} is not supported; list package "
                "requirements only (the contributor chooses the index)"
            )
        if len(requirements) >= MAX_REQUIREMENTS:
            raise RequirementsError(f"at most {MAX_REQUIREMENTS} requirements are allowed")
        try:
            parse_requirement(line)
        except RequirementsError as exc:
            raise RequirementsError(f"line {number}: {exc}") from None
        requirements.append(line)
    return requirements


def script_requirements(script: str) -> list[str]:
    """The ``dependencies`` of the script's PEP 723 ``script`` block ([] without one),
    after checking its ``requires-python`` admits the sandbox's Python."""
    metadata = read_script_metadata(script)
    if metadata is None:
        return []
    _check_requires_python(metadata.get("requires-python"))
    dependencies = metadata.get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise RequirementsError("the script's dependencies must be a list of strings")
    return check_requirements(dependencies)


def read_script_metadata(script: str) -> dict[str, Any] | None:
    """The TOML of the script's ``# /// script`` block, None without one.

    Equivalent to the reference regex of PEP 723, but one pass over the lines: the regex
    backtracks quadratically on a script of many unclosed ``# ///`` lines.
    """
    blocks = [body for kind, body in _blocks(script.split("\n")) if kind == "script"]
    if not blocks:
        return None
    if len(blocks) > 1:
        raise RequirementsError("the script has more than one '# /// script' block")
    content = "".join(
        line[2:] + "\n" if line.startswith("# ") else line[1:] + "\n" for line in blocks[0]
    )
    if len(content) > MAX_METADATA_CHARS:
        raise RequirementsError(
            f"the script's '# /// script' block is larger than {MAX_METADATA_CHARS // 1024} KiB"
        )
    try:
        return tomllib.loads(content)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:120] if isinstance(exc, ValueError) else "too deep"
        raise RequirementsError(
            f"the script's '# /// script' block is not valid TOML ({reason})"
        ) from None


def _blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Every PEP 723 block as (type, body lines): a block runs from its opening line to the
    last closing line of the comment lines that follow it, with at least one line between."""
    # last_close[i]: the last closing line of the run of comment lines starting at i.
    last_close: list[int | None] = [None] * (len(lines) + 1)
    for index in range(len(lines) - 1, -1, -1):
        if not _BODY.fullmatch(lines[index]):
            continue
        later = last_close[index + 1]
        last_close[index] = (
            later if later is not None else (index if lines[index] == _CLOSE else None)
        )
    blocks: list[tuple[str, list[str]]] = []
    index = 0
    while index < len(lines):
        opening = _OPEN.fullmatch(lines[index])
        close = last_close[index + 1] if opening else None
        if opening and close is not None and close > index + 1:
            blocks.append((opening["type"], lines[index + 1 : close]))
            index = close + 1
        else:
            index += 1
    return blocks


def _check_requires_python(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value) > MAX_REQUIREMENT_CHARS:
        raise RequirementsError("the script's requires-python must be a short string")
    try:
        specifier = SpecifierSet(value)
    except InvalidSpecifier:
        raise RequirementsError(f"the script's requires-python {value!r} is not valid") from None
    # Any 3.11 patch release: the image's exact patch level is the image's business.
    if not any(specifier.contains(f"{SANDBOX_PYTHON}.{patch}") for patch in range(100)):
        raise RequirementsError(
            f"the script requires Python {value}, but jobs run on Python {SANDBOX_PYTHON}"
        )
