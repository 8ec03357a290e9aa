"""The lease object (scheduling/leases.py) alone: its verbs, without sockets or a database."""

from __future__ import annotations

import dataclasses

import pytest

from compound.coordinator.scheduling.leases import Lease, Leases


def _lease(job: str = "j1", holder: str = "n1", expires_at: float = 100.0) -> Lease:
    return Lease(job, f"lease-{job}", holder, first_seq=0, expires_at=expires_at)


def test_a_granted_lease_checks_only_for_its_holder_and_id() -> None:
    """check() matches the exact (job, lease id, holder); anything else is None."""
    leases = Leases()
    leases.grant(_lease())
    assert leases.check("j1", "lease-j1", "n1") == _lease()
    assert leases.check("j1", "lease-j1", "n2") is None
    assert leases.check("j1", "other", "n1") is None
    assert leases.check("j1", None, "n1") is None
    assert leases.check("j2", "lease-j1", "n1") is None


def test_renewal_moves_every_lease_of_the_holder_and_is_written_back_once() -> None:
    """renew() extends all of one holder's leases; take_renewed() hands each once."""
    leases = Leases()
    leases.grant(_lease("j1"))
    leases.grant(_lease("j2"))
    leases.grant(_lease("j3", holder="n2"))
    leases.renew("n1", 200.0)
    assert leases.take_renewed() == {"j1": 200.0, "j2": 200.0}
    assert leases.take_renewed() == {}
    assert leases.of("j3") == _lease("j3", holder="n2")  # another holder's is untouched


def test_expired_lists_only_leases_past_their_expiry() -> None:
    """A lease expires at its expires_at, not before; a renewed one is not expired."""
    leases = Leases()
    leases.grant(_lease("j1", expires_at=10.0))
    leases.grant(_lease("j2", expires_at=20.0))
    assert [lease.job_id for lease in leases.expired(now=10.0)] == ["j1"]
    leases.renew("n1", 30.0)
    assert leases.expired(now=25.0) == []


def test_release_frees_the_holders_slot_and_forgets_its_renewal() -> None:
    """release() returns the lease once; the holder's count drops; no write-back remains."""
    leases = Leases()
    leases.grant(_lease("j1"))
    leases.renew("n1", 50.0)
    assert leases.release("j1") is not None
    assert leases.release("j1") is None
    assert leases.held_count("n1") == 0 and leases.held_by("n1") == []
    assert leases.take_renewed() == {} and len(leases) == 0


def test_granting_again_replaces_the_old_holder() -> None:
    """A job re-claimed by another contributor belongs to the new holder only."""
    leases = Leases()
    leases.grant(_lease("j1", holder="n1"))
    leases.grant(_lease("j1", holder="n2"))
    assert leases.held_count("n1") == 0 and leases.held_count("n2") == 1


def test_nobody_changes_a_lease_but_through_the_verbs() -> None:
    """A lease handed out is frozen: its fields cannot be set from outside."""
    leases = Leases()
    leases.grant(_lease())
    lease = leases.of("j1")
    assert lease is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        lease.expires_at = 0.0  # type: ignore[misc]
