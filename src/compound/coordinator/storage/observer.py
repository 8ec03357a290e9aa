"""What the stores tell whoever watches them (the metrics) as jobs move and records are stored.

Called on the hot paths after each commit: an implementation only counts, in memory.
"""

from __future__ import annotations

from typing import Protocol


class StoreObserver(Protocol):
    def job_created(self) -> None: ...

    def job_claimed(self, waited_s: float) -> None: ...

    def job_ended(self, outcome: str, ran_s: float | None) -> None: ...

    def records_stored(self, count: int, size_bytes: int) -> None: ...


class NoObserver:
    """Nobody watching (tools and tests that build a store alone)."""

    def job_created(self) -> None:
        pass

    def job_claimed(self, waited_s: float) -> None:
        pass

    def job_ended(self, outcome: str, ran_s: float | None) -> None:
        pass

    def records_stored(self, count: int, size_bytes: int) -> None:
        pass
