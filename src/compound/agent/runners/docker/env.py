"""The environment a job's container gets, and the variables a job may not set.

Pure data, no I/O. Kernel limits (memory, CPU, processes, files, network, capabilities)
cannot be changed from the environment; what can is the code that runs before the job's
script and the settings the agent's output guarantees rest on. Those variables are refused,
not dropped: a job that needs ``LD_LIBRARY_PATH`` would otherwise run without it and fail
somewhere confusing, while a refusal names the variable before any container exists.
See docs/sandbox.md for the list and the reasons.
"""

from __future__ import annotations

import re

# Same rule as the coordinator's: a name with "=" could shadow a variable we set.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Output streaming and byte-exactness depend on these; a job may repeat them, not change them.
PYTHON_ENV = {
    "PYTHONUNBUFFERED": "1",
    "PYTHONIOENCODING": "utf-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
# Read by the dynamic loader in every process the container starts, tini and our launcher
# included, before any of the job's code: they would load or tune code inside them.
REFUSED_NAMES = frozenset({"GLIBC_TUNABLES"})
REFUSED_PREFIXES = (
    "LD_",
    # tini (PID 1) reads these: verbosity, subreaper, signalling the process group. They
    # change how our SIGTERM reaches the job and add output that is not the job's.
    "TINI_",
)
DEFAULT_HOME = "/tmp"


def refused_variable(env: dict[str, str]) -> str | None:
    """Why the job's ``env`` cannot be used, in one sentence; None when it can."""
    for name, value in env.items():
        if not _NAME.fullmatch(name) or "\x00" in value:
            return f"invalid environment variable {name!r}"
        if name in REFUSED_NAMES or name.startswith(REFUSED_PREFIXES):
            return f"the job may not set {name}: it would change how the sandbox starts the job"
        if name in PYTHON_ENV and value != PYTHON_ENV[name]:
            return (
                f"the job may not set {name} (the agent sets {name}={PYTHON_ENV[name]} "
                "so output arrives live and byte-exact)"
            )
    return None


def container_env(env: dict[str, str], python_path: list[str]) -> list[str]:
    """The job's environment: its variables, ours, ``python_path`` first on the path.

    ``python_path`` is our sitecustomize's directory (and the dependency directory when the
    job has one). ``env`` must have passed ``refused_variable``.
    """
    merged = {"HOME": DEFAULT_HOME, **env, **PYTHON_ENV}
    merged["PYTHONPATH"] = ":".join(filter(None, [*python_path, env.get("PYTHONPATH")]))
    return [f"{name}={value}" for name, value in merged.items()]
