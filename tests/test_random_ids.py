"""Job and lease ids drawn a block at a time from the OS's random source."""

from __future__ import annotations

import re

import pytest

from compound.coordinator.scheduling.random_ids import RandomIds


@pytest.mark.timeout(10)
def test_ids_have_the_asked_length_and_never_repeat_across_blocks() -> None:
    """Ids are lowercase hex of the asked length, distinct over many blocks."""
    ids = RandomIds(16, ids_per_block=8)
    drawn = [ids.next() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", one) for one in drawn)
    assert len(set(drawn)) == len(drawn)


@pytest.mark.timeout(10)
def test_two_sources_do_not_share_a_sequence() -> None:
    """Two sources (two coordinators, or a restart) draw unrelated ids: nothing is seeded."""
    first, second = RandomIds(32), RandomIds(32)
    assert {first.next() for _ in range(300)}.isdisjoint({second.next() for _ in range(300)})


@pytest.mark.timeout(10)
def test_an_odd_or_empty_length_is_refused() -> None:
    """An id length that whole random bytes cannot give is a programming error, refused."""
    for chars in (0, 7, -2):
        with pytest.raises(ValueError):
            RandomIds(chars)
