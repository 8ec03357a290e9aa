"""The container runtimes a job can run under, named once: what may be asked, what is used.

``runc`` is Docker's default; ``runsc`` is gVisor's, a user-space kernel between the job and
the host's (stronger isolation, slower system calls). ``auto`` is a wish, never a container's
runtime: it becomes gVisor when Docker has it registered, else runc (``choose_runtime``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class Runtime(StrEnum):
    """A runtime the agent can be asked for (``--runtime``)."""

    AUTO = "auto"
    RUNC = "runc"
    RUNSC = "runsc"


# What a container runs under: a runtime ``choose_runtime`` returned, never AUTO.
Chosen = Literal[Runtime.RUNC, Runtime.RUNSC]

HELP = (
    "Container runtime: auto (gVisor when Docker has it, else runc), runc (Docker's"
    " default) or runsc (gVisor, stronger isolation)."
)


def choose_runtime(wanted: str, registered: dict[str, object]) -> Chosen:
    """The runtime to use: ``wanted``, or for "auto" gVisor when Docker has it, else runc.

    ``registered``: the engine's runtimes (``Runtimes`` of ``docker info``). Raises
    EngineError, saying what to do, when ``wanted`` is not registered.
    """
    if wanted == Runtime.AUTO:
        return Runtime.RUNSC if Runtime.RUNSC in registered else Runtime.RUNC
    if wanted not in (Runtime.RUNC, Runtime.RUNSC) or wanted not in registered:
        # Here, not at the top: engine imports aiodocker, and the CLI names the runtimes
        # (``--runtime``) without paying for it.
        from compound.agent.runners.docker.engine import EngineError

        raise EngineError(
            f"the {wanted} runtime is not registered with Docker: run scripts/setup-docker.sh"
        )
    return Runtime.RUNSC if wanted == Runtime.RUNSC else Runtime.RUNC
