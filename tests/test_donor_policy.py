"""The donor's settings and the pure policy: parsing, the kept file, hours, idle-only
hysteresis, battery, and the control requests' parser."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import time
from pathlib import Path

import pytest

from compound.agent.control import parse_request
from compound.agent.donor import (
    DONOR_FILE,
    DonorSettings,
    OnBattery,
    SettingError,
    described,
    load,
    save,
    with_setting,
)
from compound.agent.policy import IdleCpu, Observed, decide
from compound.protocol import Lending

NOON = time(12, 0)


def test_hours_across_midnight() -> None:
    """22:00-06:00 holds 23:30 and 05:59, not 06:00 nor noon."""
    donor = with_setting(DonorSettings(), "hours", "22:00-06:00")
    assert donor.hours is not None
    assert donor.hours.contains(time(23, 30)) and donor.hours.contains(time(5, 59))
    assert not donor.hours.contains(time(6, 0)) and not donor.hours.contains(NOON)
    assert decide(donor, Observed(local_time=NOON)).reason == "outside its hours (22:00-06:00)"
    assert decide(donor, Observed(local_time=time(2, 0))).lending is Lending.ACTIVE


def test_hours_within_a_day_and_always() -> None:
    """09:00-17:00 holds 09:00 but not 17:00; always removes the rule."""
    donor = with_setting(DonorSettings(), "hours", "09:00-17:00")
    assert donor.hours is not None
    assert donor.hours.contains(time(9, 0)) and not donor.hours.contains(time(17, 0))
    assert with_setting(donor, "hours", "always").hours is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hours", "9-17"),
        ("hours", "25:00-01:00"),
        ("hours", "08:00-08:00"),
        ("idle-cpu-percent", "0"),
        ("idle-cpu-percent", "nan"),
        ("on-battery", "maybe"),
        ("cpus", "0"),
        ("cpus", "inf"),
        ("memory-mib", "8"),
        ("slots", "17"),
        ("slots", "-1"),
        ("idle-resume-s", "-1"),
        ("colour", "blue"),
    ],
)
def test_bad_values_are_refused_with_a_sentence(key: str, value: str) -> None:
    """Every bad value raises SettingError, never another exception."""
    with pytest.raises(SettingError):
        with_setting(DonorSettings(), key, value)


@pytest.mark.parametrize(
    ("value", "seconds", "text"),
    [
        ("0", 0.0, "0"),
        ("120", 120.0, "120"),
        ("1.5", 1.5, "1.5"),
        ("3600", 3600.0, "3600"),
        ("-0", 0.0, "0"),
        ("default", None, "default"),
    ],
)
def test_idle_resume_values_are_read(value: str, seconds: float | None, text: str) -> None:
    """idle-resume-s takes seconds from 0 to 3600 or default (the agent's own), and reads
    back the text it describes."""
    donor = with_setting(DonorSettings(), "idle-resume-s", value)
    assert donor.idle_resume_s == seconds
    assert described(donor)["idle-resume-s"] == text
    assert with_setting(DonorSettings(), "idle-resume-s", text) == donor


@pytest.mark.parametrize(
    "value", ["-1", "-0.5", "nan", "inf", "-inf", "1e9", "3600.5", "soon", "", "30s", "0x10", "off"]
)
def test_bad_idle_resume_values_get_the_sentence(value: str) -> None:
    """Negative, not a number, huge or text: refused with the sentence saying what is
    accepted."""
    with pytest.raises(SettingError) as refused:
        with_setting(DonorSettings(), "idle-resume-s", value)
    assert str(refused.value) == "idle-resume-s: seconds from 0 to 3600, or default"


def test_idle_cpu_hysteresis() -> None:
    """Busy as soon as over the threshold; idle again only after resume_after_s under it."""
    idle = IdleCpu(resume_after_s=30)
    assert not idle.observe(10, 25, now_s=0)
    assert idle.observe(60, 25, now_s=1)
    assert idle.observe(5, 25, now_s=20)  # under it, but not for long enough
    assert idle.observe(None, 25, now_s=25)  # an unknown reading changes nothing
    assert idle.observe(30, 25, now_s=40)  # over again: the wait starts over
    assert not idle.observe(5, 25, now_s=71)
    assert not idle.observe(99, None, now_s=72)  # the rule is off


def test_idle_only_decides_with_its_reason() -> None:
    """A busy machine pauses with the threshold in the reason, which stays the same however
    the readings vary (each new reason would be a log line and a message)."""
    donor = with_setting(DonorSettings(), "idle-cpu-percent", "25")
    busy = Observed(local_time=NOON, cpu_busy=True, cpu_percent=80.4)
    decision = decide(donor, busy)
    assert decision.lending is Lending.PAUSED
    assert decision.reason == "its donor is using the machine (CPU over 25%)"
    assert decide(donor, replace(busy, cpu_percent=97.0)) == decision
    assert decide(DonorSettings(), busy).lending is Lending.ACTIVE


def test_battery_and_the_donors_pause_come_first() -> None:
    """On battery pauses only with on-battery pause; the donor's own pause wins over all."""
    on_battery = Observed(local_time=NOON, on_battery=True)
    assert decide(DonorSettings(), on_battery).lending is Lending.ACTIVE
    donor = DonorSettings(on_battery=OnBattery.PAUSE)
    assert decide(donor, on_battery).reason == "on battery"
    assert decide(donor, Observed(local_time=NOON)).lending is Lending.ACTIVE
    paused = with_setting(DonorSettings(paused=True), "hours", "01:00-02:00")
    assert decide(paused, on_battery).reason == "paused by its donor"


def test_settings_are_kept_and_read_back(tmp_path: Path) -> None:
    """What is saved is read back the same; the text forms round-trip."""
    donor = DonorSettings(paused=True)
    for key, value in [
        ("hours", "22:00-06:00"),
        ("cpus", "1.5"),
        ("slots", "3"),
        ("idle-resume-s", "120"),
    ]:
        donor = with_setting(donor, key, value)
    save(tmp_path, donor)
    assert load(tmp_path) == (donor, None)
    assert json.loads((tmp_path / DONOR_FILE).read_text())["idle-resume-s"] == "120"
    assert described(donor)["idle-cpu-percent"] == "off"
    assert described(DonorSettings())["idle-resume-s"] == "default"
    assert (tmp_path / DONOR_FILE).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"slots": "99"}',
        b'{"paused": "yes"}',
        b'{"x": "1"}',
        b'{"idle-resume-s": "-5"}',
        b'{"idle-resume-s": 120}',
        b"{" * 70000,
    ],
)
def test_a_damaged_file_gives_the_defaults_and_a_warning(tmp_path: Path, content: bytes) -> None:
    """A damaged donor.json never raises: the defaults, and one sentence naming the file."""
    (tmp_path / DONOR_FILE).write_bytes(content)
    donor, warning = load(tmp_path)
    assert donor == DonorSettings()
    assert warning is not None and DONOR_FILE in warning


@pytest.mark.parametrize(
    "line", [b"", b"\xff\xfe", b"[1]", b'{"command": "format"}', b'{"command": "set"}', b"[" * 5000]
)
def test_bad_control_requests_become_sentences(line: bytes) -> None:
    """parse_request never raises: bad input is a refusal sentence."""
    assert isinstance(parse_request(line), str)


def test_a_set_request_is_parsed() -> None:
    """A set request carries its key and value."""
    request = parse_request(b'{"command": "set", "key": "slots", "value": "2"}\n')
    assert not isinstance(request, str)
    assert (request.command, request.key, request.value) == ("set", "slots", "2")
