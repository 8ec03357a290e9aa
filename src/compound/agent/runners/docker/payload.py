"""What the agent writes to a started container's stdin: the whole job, for the launcher.

Pure data, no I/O. The format is ``in_container.launcher``'s (its docstring and constants are the
definition): a length-prefixed ``marshal`` header with the arguments, the environment and the list
of sections, then the sections' bytes. A new kind of content (input files, a dependency
directory) is one more ``Section`` here and one more writer in ``in_container.launcher``.
"""

from __future__ import annotations

import marshal
from dataclasses import dataclass
from importlib.util import MAGIC_NUMBER
from pathlib import Path
from types import CodeType

from compound.agent.runners.docker.env import container_env
from compound.agent.runners.docker.in_container import relay
from compound.agent.runners.docker.in_container.launcher import (
    HEADER_LENGTH,
    MARSHAL_FORMAT,
    MAX_HEADER_BYTES,
    SCRIPT_NAME_SECTION,
    SCRIPT_SECTION,
)
from compound.protocol.script_names import DEFAULT_SCRIPT_NAME

# The in-container modules are shipped as source (read here by path), never imported there.
IN_CONTAINER = Path(__file__).with_name("in_container")
SITECUSTOMIZE = (IN_CONTAINER / "stdio.py").read_bytes()
# The container's program, run as ``python3 -u -c BOOTSTRAP_SOURCE``: the interpreter the
# job will run in, started with the container. It reads from stdin the programs to run
# (``boot``), forks, and the child becomes the zygote (the job's interpreter waiting for its
# job, see in_container.zygote) while the parent runs the launcher (see in_container.launcher) with
# ``args`` and the zygote's pid and pipes. One interpreter start per container, not two: the
# zygote is a fork, not a second ``python3``, and it was started exactly as the job's own
# ``python3 -u`` would be (same flags, environment, site and sitecustomize), before it
# imported anything ``python3 -u`` does not import. The parent keeps only the standard
# library on its path before the launcher imports anything (no dependency directory can
# shadow its modules).
#
# The programs come here rather than in the command: the engine stores a container's
# command in its own and in containerd's records at every state change, which cost each
# container ~10 ms of the engine's CPU for the ~40 KB they take. They come compiled too,
# used when the image's Python reads the same bytecode as the agent's (compiling the
# launcher cost every container ~4 ms), else from source.
BOOTSTRAP_SOURCE = (
    """\
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
magic, programs, args = marshal.loads(read_exactly(int.from_bytes(read_exactly(4), "big")))
def load(name):
    code, source = programs[name]
    if magic == MAGIC_NUMBER:
        return marshal.loads(code)
    return compile(source, "<compound " + name + ">", "exec", dont_inherit=True)
def open_relay():
    # The job's output ring and pipes (see in_container.relay), at fixed descriptors.
    try:
        ring = os.memfd_create("compound-output")
    except (AttributeError, OSError):
        return ""
    os.ftruncate(ring, RELAY_BYTES)
    os.pwrite(ring, RELAY_MAGIC, 0)
    kick_read, kick_write = os.pipe()
    answer_read, answer_write = os.pipe()
    for fd, fixed in zip((ring, kick_write, answer_read), RELAY_FDS):
        os.dup2(fd, fixed)
        os.close(fd)
    return f"{kick_read}:{answer_write}"
relay = open_relay()
zygote, child = "", False
if "zygote" in programs:
    job_read, job_write = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    child = pid == 0
    if child:
        os.close(job_write)
        os.close(ready_read)
        if relay:
            for fd in relay.split(":"):
                os.close(int(fd))
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    else:
        os.close(job_read)
        os.close(ready_write)
        zygote = f"{pid}:{job_write}:{ready_read}"
if child:
    # Called from here: the frames above the job's script are this one, serve, run_main.
    namespace = {"__name__": "compound_zygote"}
    exec(load("zygote"), namespace)
    namespace["serve"](job_read, ready_write)
else:
    stdlib = os.path.dirname(os.__file__)
    sys.path[:] = [
        entry for entry in sys.path
        if (entry == stdlib or entry.startswith(stdlib + os.sep) or entry.endswith(".zip"))
        and not entry.rstrip(os.sep).endswith("-packages")
    ]
    sys.argv[1:] = [*args, zygote, relay, programs["zygote"][1] if zygote else ""]
    exec(load("launcher"))
""".replace("RELAY_BYTES", str(relay.DATA_AT + relay.RING_BYTES))
    .replace("RELAY_MAGIC", repr(relay.MAGIC))
    .replace("RELAY_FDS", repr((relay.RING_FD, relay.KICK_FD, relay.ANSWER_FD)))
)


@dataclass(frozen=True)
class Section:
    name: str
    data: bytes


class PayloadTooBig(ValueError):
    """The job's arguments and environment do not fit in the launcher's header."""


def encode_script(script: str) -> bytes:
    # surrogatepass: a script with lone surrogates arrives as the bytes it was sent as.
    return script.encode("utf-8", "surrogatepass")


def job_sections(script: str, script_name: str = DEFAULT_SCRIPT_NAME) -> list[Section]:
    """The sections of a plain job: the script's file name when it is not the default,
    then the script (our sitecustomize is in the container's command, written before the
    job's interpreter starts: see in_container.prestart)."""
    sections = [Section(SCRIPT_SECTION, encode_script(script))]
    if script_name != DEFAULT_SCRIPT_NAME:
        sections.insert(0, Section(SCRIPT_NAME_SECTION, script_name.encode("ascii")))
    return sections


def job_env(env: dict[str, str], python_path: list[str]) -> dict[str, str]:
    """The job's environment as its interpreter sees it: the job's variables and ours.

    ``env`` must have passed ``env.refused_variable``.
    """
    return dict(item.split("=", 1) for item in container_env(env, python_path))


def boot(programs: dict[str, str], args: list[str]) -> bytes:
    """What ``BOOTSTRAP_SOURCE`` reads from stdin: ``programs`` by name (``launcher``,
    run with ``args``; ``zygote``, optional) as source and compiled."""
    compiled = {
        name: (marshal.dumps(_compiled(name, source)), source) for name, source in programs.items()
    }
    encoded = marshal.dumps((MAGIC_NUMBER, compiled, args), MARSHAL_FORMAT)
    return HEADER_LENGTH.pack(len(encoded)) + encoded


def _compiled(name: str, source: str) -> CodeType:
    return compile(source, f"<compound {name}>", "exec", dont_inherit=True, optimize=0)


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
