"""The garbage-collection policy: a frozen heap, and a full collection only on growth.

These run CPython's real collector in this process (no stand-in for ``gc``); every test
gives the heap back (``stop``/``unfreeze``) so the rest of the session is unaffected.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from compound.coordinator.serving.collector import CollectorPolicy, resident_bytes

pytestmark = pytest.mark.timeout(60)
CYCLE_BYTES = 1024 * 1024


class Node:
    """One member of a reference cycle carrying a MiB, so leaking it shows in RSS."""

    def __init__(self) -> None:
        self.payload = b"x" * CYCLE_BYTES  # written, so resident
        self.other: Node | None = None


def cycle() -> Node:
    first, second = Node(), Node()
    first.other, second.other = second, first
    return first


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    gc.collect()
    yield
    gc.unfreeze()
    gc.collect()


def test_tick_freezes_what_exists_so_collections_skip_it(thawed: None) -> None:
    """After a tick, objects alive then are out of every generation the collector walks."""
    policy = CollectorPolicy(min_growth_bytes=1 << 40)
    keep = [cycle() for _ in range(3)]
    frozen_before = gc.get_freeze_count()
    assert policy.tick() is False
    assert gc.get_freeze_count() >= frozen_before + len(keep) * 2
    assert not any(obj is keep[0] for obj in gc.get_objects())


def test_cycles_leaked_while_frozen_are_collected_once_the_process_grows(thawed: None) -> None:
    """Cycles that die while frozen are kept until the resident size passes the bound; the
    tick that sees it collects everything, and memory comes back to the collector."""
    policy = CollectorPolicy(growth=0.0, min_growth_bytes=32 * CYCLE_BYTES)
    policy.collect_all()
    leaked = [cycle() for _ in range(40)]  # 80 MiB in cycles
    probes = [weakref.ref(node) for node in leaked]
    assert policy.tick() is True  # grew by 80 MiB > 32 MiB: collected right away, nothing dead
    assert all(probe() is not None for probe in probes)
    del leaked  # now garbage, but frozen: reference counting cannot free a cycle
    assert policy.tick() is False
    assert all(probe() is not None for probe in probes)
    grow = [b"y" * CYCLE_BYTES for _ in range(40)]  # the process grows past the bound
    assert resident_bytes() > policy.limit_bytes
    assert policy.tick() is True
    assert all(probe() is None for probe in probes)
    assert policy.full_collections == 3
    del grow


def test_steady_process_gets_no_full_collection(thawed: None) -> None:
    """Allocating and freeing without net growth never triggers a full collection."""
    policy = CollectorPolicy(min_growth_bytes=256 * CYCLE_BYTES)
    policy.collect_all()
    for _ in range(50):
        garbage = [cycle() for _ in range(2)]
        del garbage
        assert policy.tick() is False
    assert policy.full_collections == 1


def test_started_policy_ticks_on_the_loop_and_stop_thaws_the_heap(thawed: None) -> None:
    """start() collects once and freezes every interval; stop() unfreezes everything."""

    async def run() -> int:
        policy = CollectorPolicy(freeze_every_s=0.01, min_growth_bytes=1 << 40)
        policy.start()
        keep = [cycle()]
        before = gc.get_freeze_count()
        await asyncio.sleep(0.1)
        assert gc.get_freeze_count() > before, "no tick froze what was allocated since"
        await policy.stop()
        del keep
        return policy.full_collections

    assert asyncio.run(run()) == 1
    assert gc.get_freeze_count() == 0


def test_without_a_resident_size_the_heap_is_never_frozen(thawed: None) -> None:
    """Where the size cannot be read, nothing would bound frozen cycles: no freezing at all."""

    async def run() -> int:
        policy = CollectorPolicy(freeze_every_s=0.01, size=lambda: 0)
        policy.start()
        await asyncio.sleep(0.05)
        frozen = gc.get_freeze_count()
        await policy.stop()
        return frozen

    assert asyncio.run(run()) == 0
