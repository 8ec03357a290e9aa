"""The opaque tenant sent with each job: equal exactly for jobs of one owner, a strict shape
on the wire, and set by a real coordinator from the submitter's token."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from compound.coordinator.scheduling.tenants import tenant_of
from compound.protocol import Job, ProtocolError, parse_coordinator_message, serialize
from fake_agent import FakeAgent
from support import Coordinator

_JOB = {"type": "job", "job_id": "j1", "lease_id": "l1", "script": "print(1)"}


def _tenant_pattern() -> str:
    """The protocol's own pattern for a tenant."""
    (pattern,) = (
        rule.pattern for rule in Job.model_fields["tenant"].metadata if hasattr(rule, "pattern")
    )
    assert isinstance(pattern, str)
    return pattern


# ---------------------------------------------------------------- the function


def test_one_owner_has_one_tenant_and_two_owners_two() -> None:
    """The same owner always gets the same tenant; different owners, even close ones, differ."""
    assert tenant_of("alice") == tenant_of("alice")
    owners = ["alice", "bob", "Alice", "alice ", "127.0.0.1", "127.0.0.2", ""]
    tenants = [tenant_of(owner) for owner in owners]
    assert len(set(tenants)) == len(owners)


def test_no_owner_has_no_tenant() -> None:
    """A job without a known owner gets no tenant, so no agent reuses a sandbox for it."""
    assert tenant_of(None) is None


def test_a_tenant_has_the_protocol_shape_and_hides_the_owner() -> None:
    """32 lowercase hex characters the protocol accepts, holding no trace of the owner's text
    nor its plain (unkeyed) hash."""
    for owner in ["alice", "127.0.0.1", "a" * 300, "é ünïcode"]:
        tenant = tenant_of(owner)
        assert tenant is not None and len(tenant) == 32
        assert re.fullmatch(_tenant_pattern(), tenant)
        assert owner not in tenant and owner.encode().hex() not in tenant
        assert tenant not in hashlib.sha256(owner.encode()).hexdigest()
        parsed = parse_coordinator_message(serialize(Job(**_JOB, tenant=tenant)))
        assert isinstance(parsed, Job) and parsed.tenant == tenant


# ---------------------------------------------------------------- the wire


def test_a_job_without_a_tenant_parses_as_none() -> None:
    """An older coordinator's job (no tenant) parses, with no tenant: no reuse."""
    parsed = parse_coordinator_message(json.dumps(_JOB))
    assert isinstance(parsed, Job) and parsed.tenant is None
    parsed = parse_coordinator_message(json.dumps({**_JOB, "tenant": None}))
    assert isinstance(parsed, Job) and parsed.tenant is None


@pytest.mark.parametrize(
    "tenant",
    [
        "ABCDEF0123",  # upper case
        "a" * 65,  # too long
        "0123456789abcdeg",  # not hex
        "../../etc",
        "ab cd",
        "abc\n",
        "",
        1234,  # a number
        ["ab"],
    ],
)
def test_a_job_with_a_bad_tenant_is_refused(tenant: Any) -> None:
    """A tenant that is not 1 to 64 lowercase hex characters is a protocol error."""
    with pytest.raises(ProtocolError):
        parse_coordinator_message(json.dumps({**_JOB, "tenant": tenant}))


# ---------------------------------------------------------------- a real coordinator


def test_jobs_arrive_with_their_owners_tenant(
    secured: tuple[Coordinator, dict[str, str]],
) -> None:
    """Two jobs of alice reach the agent with one tenant, a job of bob with another; neither
    shows the owner's name."""
    coordinator, tokens = secured
    owners: dict[str, str] = {}
    for name in ["alice", "bob", "alice"]:
        response = coordinator.api(
            "POST",
            "/api/v1/jobs",
            json={"script": "print(1)"},
            headers={"Authorization": f"Bearer {tokens[name]}"},
        )
        assert response.status_code == 201, response.text
        owners[response.json()["id"]] = name
    agent = FakeAgent(coordinator, token=tokens["worker"])
    tenants: dict[str, set[str]] = {"alice": set(), "bob": set()}
    for _ in owners:
        job = agent.recv_type("job")
        tenant = job["tenant"]
        assert isinstance(tenant, str) and re.fullmatch(_tenant_pattern(), tenant)
        assert owners[job["job_id"]] not in tenant
        tenants[owners[job["job_id"]]].add(tenant)
        agent.run(job, [])  # done: the next job comes
    agent.close()
    assert len(tenants["alice"]) == 1 and len(tenants["bob"]) == 1
    assert tenants["alice"] != tenants["bob"]
