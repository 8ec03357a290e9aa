"""Several coordinator URLs for one client: which one to try next, and how long to wait first.

Agents, the CLI and the desktop app take ``A,B,...`` (``--coordinator`` or
$COMPOUND_COORDINATOR): coordinators sharing one database, any of which serves every job.
The policy is pure (no I/O, no clock: the callers connect and sleep) and stays on a
coordinator while it works; on a failure it moves to the next one at once (with a little
jitter, so a crowd of agents that lost the same coordinator does not land on the next one in
the same millisecond), and backs off exponentially only once every coordinator of the list
has failed in a row.

Standard library only, and ``random`` only when a delay is drawn: the CLI imports this on
every `compound submit`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable

SEPARATOR = ","
# After a failure, before trying the next coordinator of the list: at most this, jittered.
HOP_DELAY_S = 0.1
# Once every coordinator failed in a row: exponential from this, capped, jittered.
BASE_DELAY_S = 0.5
MAX_DELAY_S = 30.0
# A list longer than this is a mistake (or an attack on whoever parses it).
MAX_COORDINATORS = 16


class CoordinatorListError(ValueError):
    """The coordinator list cannot be used; ``str()`` is a sentence for the user."""


def parse_coordinators(text: str) -> tuple[str, ...]:
    """The URLs of ``A,B,...`` in order: blanks around them and a trailing slash dropped, a
    repeated one kept once. Raises CoordinatorListError when none is given or too many."""
    urls: list[str] = []
    for part in text.split(SEPARATOR):
        url = part.strip().rstrip("/")
        if url and url not in urls:
            urls.append(url)
    if not urls:
        raise CoordinatorListError("no coordinator URL given")
    if len(urls) > MAX_COORDINATORS:
        raise CoordinatorListError(
            f"{len(urls)} coordinator URLs given; at most {MAX_COORDINATORS} are taken"
        )
    return tuple(urls)


def join_coordinators(urls: Iterable[str]) -> str:
    """The ``A,B,...`` form of ``urls`` (what a flag or the environment takes)."""
    return SEPARATOR.join(urls)


def reconnect_delay_s(attempt: int, rng: random.Random | None = None) -> float:
    """Delay before reconnection ``attempt`` (0-based): exponential, capped, jittered.

    Jitter spreads a crowd of clients that lost the same coordinator over time.
    """
    ceiling = min(MAX_DELAY_S, BASE_DELAY_S * 2 ** min(attempt, 16))
    return float(ceiling * (0.5 + 0.5 * _draw(rng)))


def _draw(rng: random.Random | None) -> float:
    if rng is None:
        import random

        return random.random()
    return rng.random()


class CoordinatorList:
    """The coordinators of one client, the one in use first; see the module docstring."""

    def __init__(self, urls: Iterable[str]) -> None:
        """Raises CoordinatorListError when ``urls`` is empty."""
        self.urls = tuple(urls)
        if not self.urls:
            raise CoordinatorListError("no coordinator URL given")
        self._index = 0
        # Failures in a row since the last success (or since the start).
        self._failures = 0
        self._last_good: str | None = None

    @classmethod
    def parse(cls, text: str) -> CoordinatorList:
        """The list of ``A,B,...``; raises CoordinatorListError as parse_coordinators."""
        return cls(parse_coordinators(text))

    @property
    def current(self) -> str:
        """The coordinator to use (or to try) now."""
        return self.urls[self._index]

    @property
    def last_good(self) -> str | None:
        """The last coordinator that worked, None before any did."""
        return self._last_good

    @property
    def failures(self) -> int:
        """Failures in a row since the last success."""
        return self._failures

    def succeeded(self) -> None:
        """The current coordinator worked: stay on it, and start the backoff afresh."""
        self._failures = 0
        self._last_good = self.current

    def failed(self, rng: random.Random | None = None) -> float:
        """The current coordinator failed (refused, unreachable, or lost): move to the next
        one; returns how long to wait, in seconds, before trying it.

        A short jittered hop while some coordinator is untried in this round of failures;
        after a whole round failed, ``reconnect_delay_s`` of the number of rounds. With one
        URL every failure ends a round: the plain exponential backoff.
        """
        self._failures += 1
        self._index = (self._index + 1) % len(self.urls)
        rounds, within = divmod(self._failures, len(self.urls))
        if within:
            return HOP_DELAY_S * _draw(rng)
        return reconnect_delay_s(rounds - 1, rng)
