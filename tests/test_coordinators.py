"""The coordinator list policy (compound/coordinators.py): parsing ``A,B,...``, the order it
tries them in, and how long it waits between tries. Pure: no network, no clock."""

from __future__ import annotations

import random

import pytest

from compound.agent.settings import AgentSettings
from compound.cli.client import ClientError, CoordinatorClient
from compound.coordinators import (
    HOP_DELAY_S,
    MAX_COORDINATORS,
    MAX_DELAY_S,
    CoordinatorList,
    CoordinatorListError,
    parse_coordinators,
)
from compound.desktop.settings import SettingsError, validate_coordinator_url

A, B, C = "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"


def test_parse_keeps_order_and_drops_blanks_slashes_and_repeats() -> None:
    """``A, B/,,A`` is (A, B): blanks and trailing slashes dropped, a repeat kept once."""
    assert parse_coordinators(f" {A}, {B}/,,{A}") == (A, B)
    assert parse_coordinators(A) == (A,)


@pytest.mark.parametrize("text", ["", " , ,", ",".join(f"http://h{i}" for i in range(17))])
def test_parse_refuses_no_url_and_too_many(text: str) -> None:
    """An empty list, or one longer than MAX_COORDINATORS, is refused with a sentence."""
    assert MAX_COORDINATORS == 16
    with pytest.raises(CoordinatorListError):
        parse_coordinators(text)


def test_failure_moves_to_the_next_at_once_until_a_round_failed() -> None:
    """Each failure moves on; hops within a round are short, then the wait grows by round."""
    rng = random.Random(7)
    coordinators = CoordinatorList((A, B, C))
    assert coordinators.current == A
    tried, delays = [], []
    for _ in range(12):
        delays.append(coordinators.failed(rng))
        tried.append(coordinators.current)
    assert tried == [B, C, A] * 4
    hops = [d for i, d in enumerate(delays) if (i + 1) % 3]
    rounds = [d for i, d in enumerate(delays) if (i + 1) % 3 == 0]
    assert all(0 <= d <= HOP_DELAY_S for d in hops)
    assert rounds[0] <= 0.5 < rounds[3] and max(rounds) <= MAX_DELAY_S


def test_success_stays_and_restarts_the_backoff() -> None:
    """The coordinator that worked is kept (the last good one); the next failure only hops."""
    coordinators = CoordinatorList((A, B))
    coordinators.failed()
    coordinators.failed()
    coordinators.failed()
    assert coordinators.current == B and coordinators.failures == 3
    coordinators.succeeded()
    assert coordinators.last_good == B and coordinators.failures == 0
    assert coordinators.failed(random.Random(1)) <= HOP_DELAY_S
    assert coordinators.current == A


def test_one_url_backs_off_as_before() -> None:
    """With a single coordinator every failure ends a round: the plain exponential backoff."""
    rng = random.Random(3)
    coordinators = CoordinatorList((A,))
    delays = [coordinators.failed(rng) for _ in range(8)]
    assert coordinators.current == A
    assert 0.25 <= delays[0] <= 0.5 < delays[5]


def test_agent_cli_and_desktop_take_a_list() -> None:
    """The agent's settings, the CLI's client and the desktop setting read the same list."""
    settings = AgentSettings(coordinator_url=f"{A},{B}/")
    assert settings.coordinator_urls == (A, B)
    assert settings.contributor_ws_url == "ws://127.0.0.1:1/ws/contributor"
    client = CoordinatorClient(f"{A}, {B}")
    assert client.base_url == A and client.coordinators.urls == (A, B)
    client.fail_over()
    assert client.base_url == B
    assert validate_coordinator_url(f" {A}/ ,{B}") == f"{A},{B}"
    with pytest.raises(SettingsError):
        validate_coordinator_url(f"{A},ftp://x")
    with pytest.raises(ClientError):
        CoordinatorClient(f"{A},ftp://x")
