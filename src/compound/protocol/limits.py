"""The protocol's version and the bounds on what travels, shared by every reader."""

from __future__ import annotations

PROTOCOL_VERSION = 1
# Bounds every WebSocket message in both directions; a 1 MiB script plus JSON overhead fits.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# A log record carries at most this many characters; longer lines travel as several records
# whose data concatenate back to the exact original.
MAX_RECORD_CHARS = 64 * 1024
# Sequence numbers and byte counts are stored as SQLite integers: signed 64-bit.
MAX_INT64 = 2**63 - 1
# A job's error as reported by an agent; longer reasons are cut by the agent.
MAX_ERROR_CHARS = 2000
# A hand-back's reason, and a leaving agent's.
MAX_HANDBACK_CHARS = 200
# Jobs one agent may run at once (hello's ``slots``): each in its own container with its own
# limits, so the contributor lends up to this many times the per-job CPU and memory.
MAX_SLOTS = 16
# GET /api/v1/jobs?limit=: how many jobs one answer lists, by default and at most.
JOB_LIST_DEFAULT = 50
JOB_LIST_MAX = 1000
# GET /api/v1/jobs/{id}/logs?limit=: how many records one page holds, by default and at most
# (a page also stops at about 4 MiB of data).
LOG_PAGE_RECORDS_DEFAULT = 5000
LOG_PAGE_RECORDS_MAX = 20000
