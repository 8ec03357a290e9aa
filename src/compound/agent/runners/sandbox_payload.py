"""What the agent writes to a started container's stdin: the whole job, for the launcher.

Pure data, no I/O. The format is ``sandbox_launch``'s (its docstring and constants are the
definition): a length-prefixed ``marshal`` header with the arguments, the environment and the list
of sections, then the sections' bytes. A new kind of content (input files, a dependency
directory) is one more ``Section`` here and one more writer in ``sandbox_launch``.
"""

from __future__ import annotations

import marshal
from dataclasses import dataclass
from pathlib import Path

from compound.agent.runners.sandbox_env import container_env
from compound.agent.runners.sandbox_launch import (
    HEADER_LENGTH,
    MARSHAL_FORMAT,
    MAX_HEADER_BYTES,
    SCRIPT_SECTION,
)

SITECUSTOMIZE = Path(__file__).with_name("sandbox_stdio.py").read_bytes()


@dataclass(frozen=True)
class Section:
    name: str
    data: bytes


class PayloadTooBig(ValueError):
    """The job's arguments and environment do not fit in the launcher's header."""


def encode_script(script: str) -> bytes:
    # surrogatepass: a script with lone surrogates arrives as the bytes it was sent as.
    return script.encode("utf-8", "surrogatepass")


def job_sections(script: str) -> list[Section]:
    """The sections of a plain job: the script (our sitecustomize is in the container's
    command, written before the job's interpreter starts: see sandbox_prestart)."""
    return [Section(SCRIPT_SECTION, encode_script(script))]


def job_env(env: dict[str, str], python_path: list[str]) -> dict[str, str]:
    """The job's environment as its interpreter sees it: the job's variables and ours.

    ``env`` must have passed ``sandbox_env.refused_variable``.
    """
    return dict(item.split("=", 1) for item in container_env(env, python_path))


def payload(args: list[str], env: dict[str, str], sections: list[Section]) -> bytes:
    """The bytes for the launcher's stdin; raises PayloadTooBig past its header bound."""
    header = {
        "args": args,
        "env": env,
        "sections": [[section.name, len(section.data)] for section in sections],
    }
    # marshal keeps a lone surrogate (as surrogatepass UTF-8): it fails in the launcher's
    # exec, with a sentence, instead of here.
    encoded = marshal.dumps(header, MARSHAL_FORMAT)
    if len(encoded) > MAX_HEADER_BYTES:
        raise PayloadTooBig(
            f"the job's arguments and environment are too big ({len(encoded)} bytes, "
            f"at most {MAX_HEADER_BYTES})"
        )
    return b"".join([HEADER_LENGTH.pack(len(encoded)), encoded, *(s.data for s in sections)])
