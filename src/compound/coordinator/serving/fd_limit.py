"""The open-file limit: raised as far as allowed, and the connections that fit under it."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("compound.coordinator")

# Descriptors kept for everything that is not a client connection: the database, the
# listener, the event loop's own pipes, log files.
RESERVED_FDS = 256
# Stands for "no limit" in the arithmetic.
UNLIMITED = 1 << 20
# With no --max-connections, the cap follows the open-file limit up to this: each open
# connection costs tens of KiB of memory, so a huge fd limit is not a promise to keep.
MAX_DEFAULT_CONNECTIONS = 65_536


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
        else:
            soft = hard
    return soft


def connections_within_fd_limit(fd_limit: int, listen_backlog: int) -> int:
    """Most connections that cannot exhaust `fd_limit`: asyncio accepts up to a backlog's
    worth of sockets at once before any of them can be refused."""
    return max(1, fd_limit - listen_backlog - RESERVED_FDS)


def connection_cap(requested: int, fd_limit: int, listen_backlog: int) -> int:
    """The connection cap to serve with: ``requested`` (0: as many as the open-file limit
    lets in, up to ``MAX_DEFAULT_CONNECTIONS``), never more than the limit lets in."""
    allowed = connections_within_fd_limit(fd_limit, listen_backlog)
    if requested <= 0:
        return min(allowed, MAX_DEFAULT_CONNECTIONS)
    return min(requested, allowed)
