"""The coordinators sharing one PostgreSQL database, as the database itself sees them.

Each coordinator names itself in the ``application_name`` of its listening connection
(``notify_channel``), which stays open as long as it lives; the server drops a connection
whose process died (SIGKILL included) as soon as its socket closes. So the live coordinators
are one read of ``pg_stat_activity`` away: no table of coordinators, no heartbeat rows, no
stale entry to expire. Only sessions on the same database count (one server may hold
several clusters' databases).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

PREFIX = "compound-coordinator "
# PostgreSQL keeps at most 63 bytes of an application_name.
MAX_NAME_CHARS = 63 - len(PREFIX)


def application_name(name: str) -> str:
    """The ``application_name`` a coordinator called ``name`` connects with (printable ASCII,
    as PostgreSQL keeps it)."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in name)
    return PREFIX + printable[:MAX_NAME_CHARS]


def stored_name(name: str) -> str:
    """``name`` as the live list reads it back (what contributor rows must hold to match)."""
    return application_name(name).removeprefix(PREFIX)


async def live_coordinators(reader: AsyncEngine) -> set[str]:
    """The names of the coordinators listening on this database now."""
    async with reader.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT DISTINCT application_name FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE :prefix"
            ),
            {"prefix": PREFIX + "%"},
        )
        return {row[0].removeprefix(PREFIX) for row in result}
