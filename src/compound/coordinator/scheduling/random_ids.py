"""Unguessable ids (jobs, leases) drawn from the OS's random source a block at a time.

``uuid.uuid4()`` reads 16 bytes with one ``getrandom`` call per id, and CPython releases the
GIL around that call: with the group writer's thread busy, the event loop then waits for the
GIL back on every id. Two ids a job were ~9 % of the coordinator's samples under the (e)
flood. Reading a block of ids at once keeps the same source (``os.urandom``, never a
seeded PRNG whose next output could be predicted) and gives the GIL away once a block.
"""

from __future__ import annotations

import os

# Ids per read of the OS source.
IDS_PER_BLOCK = 256


class RandomIds:
    """Hex ids of ``chars`` characters (``chars * 4`` random bits); not thread-safe, for one
    event loop."""

    def __init__(self, chars: int, ids_per_block: int = IDS_PER_BLOCK) -> None:
        if chars < 1 or chars % 2:
            raise ValueError("an id has a positive, even number of hex characters")
        self._bytes = chars // 2
        self._block_bytes = self._bytes * ids_per_block
        self._block = b""
        self._at = 0

    def next(self) -> str:
        if self._at >= len(self._block):
            self._block = os.urandom(self._block_bytes)
            self._at = 0
        start = self._at
        self._at += self._bytes
        return self._block[start : self._at].hex()
