"""The file name a job's script runs under in the sandbox, made from the job's name.

The CLI and the Python client name a job after its file by default (``job.py``); the agent
writes the script as ``/job/<that name>`` so tracebacks and ``__file__`` show it. A name
that is not a plain Python file name after sanitising runs as ``main.py``.
Must agree with ``agent.runners.docker.in_container.launcher.script_name_problem``.
"""

from __future__ import annotations

import re

DEFAULT_SCRIPT_NAME = "main.py"
MAX_SCRIPT_NAME_CHARS = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
# Names the sandbox uses in the job's directory (see in_container.files.RESERVED_NAMES).
_RESERVED = frozenset({"site", "outputs"})


def script_file_name(job_name: str | None) -> str:
    """The script's file name for a job named ``job_name``: its base name with any
    character but letters, digits, ``_.-`` replaced by ``_``, when that ends in ``.py``;
    else ``main.py``."""
    if not job_name:
        return DEFAULT_SCRIPT_NAME
    base = job_name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", base).lstrip(".")
    if (
        not name.endswith(".py")
        or name == ".py"
        or len(name) > MAX_SCRIPT_NAME_CHARS
        or name in _RESERVED
    ):
        return DEFAULT_SCRIPT_NAME
    return name
