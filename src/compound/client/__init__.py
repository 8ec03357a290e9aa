"""The Python client library: submit jobs, follow them, wait, fetch their files, map.

``Client`` (blocking) and ``AsyncClient`` (the same methods as coroutines) talk to one
coordinator over its HTTP API with the CLI's own transport (``compound.cli.client``): the
same defaults from the environment, the same TLS checks and the same sentences; each cause
of failure is one exception type (see ``errors``). See docs/client.md.

Imports: compound.cli, compound.protocol, compound.tls
"""

from __future__ import annotations

from compound.client.aio import AsyncClient, AsyncJob
from compound.client.errors import (
    AuthError,
    ClientError,
    RefusedError,
    TlsError,
    UnknownJobError,
    UnreachableError,
)
from compound.client.jobs import Client, Job, Record, Result

__all__ = [
    "AsyncClient",
    "AsyncJob",
    "AuthError",
    "Client",
    "ClientError",
    "Job",
    "Record",
    "RefusedError",
    "Result",
    "TlsError",
    "UnknownJobError",
    "UnreachableError",
]
