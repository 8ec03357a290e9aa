"""What the agent writes to a started container's stdin: the whole job, for the launcher.

Pure data, no I/O. The format is ``sandbox_launch``'s (its docstring and constants are the
definition): a length-prefixed ``marshal`` header with the arguments, the environment and the list
of sections, then the sections' bytes. A new kind of content (input files, a dependency
directory) is one more ``Section`` here and one more writer in ``sandbox_launch``.
"""

from __future__ import annotations

import marshal
from dataclasses import dataclass
from importlib.util import MAGIC_NUMBER
from pathlib import Path

from compound.agent.runners.sandbox_env import container_env
from compound.agent.runners.sandbox_launch import (
    HEADER_LENGTH,
    MARSHAL_FORMAT,
    MAX_HEADER_BYTES,
    SCRIPT_SECTION,
)

SITECUSTOMIZE = Path(__file__).with_name("sandbox_stdio.py").read_bytes()
LAUNCHER_NAME = "<compound launcher>"
# The container's program: it reads the launcher (its source and arguments) from stdin, then
# runs it. The launcher (~40 KB with the sources it carries) goes there rather than in the
# command: the engine stores a container's command in its own and in containerd's records
# at every state change, which cost each container ~10 ms of the engine's CPU. It comes
# compiled too, used when the image's Python reads the same bytecode as the agent's
# (compiling it cost every container ~4 ms), else from source.
BOOTSTRAP_SOURCE = """\
import marshal, os, sys
from _frozen_importlib_external import MAGIC_NUMBER
def read_exactly(size):
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            os._exit(125)
        data += chunk
    return data
magic, code, source, sys.argv[1:] = marshal.loads(
    read_exactly(int.from_bytes(read_exactly(4), "big")))
del read_exactly
exec(marshal.loads(code) if magic == MAGIC_NUMBER else compile(source, LAUNCHER_NAME, "exec"))
""".replace("LAUNCHER_NAME", repr(LAUNCHER_NAME))


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


def boot(source: str, args: list[str]) -> bytes:
    """What ``BOOTSTRAP_SOURCE`` reads from stdin to run ``source`` with ``args``."""
    code = compile(source, LAUNCHER_NAME, "exec", dont_inherit=True, optimize=0)
    parts = (MAGIC_NUMBER, marshal.dumps(code), source, args)
    encoded = marshal.dumps(parts, MARSHAL_FORMAT)
    return HEADER_LENGTH.pack(len(encoded)) + encoded


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
