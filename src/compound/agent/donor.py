"""What the donor of this machine chose, changed live (``compound agent set``) and kept in
``STATE_DIR/donor.json``: hours, idle-only and how long the machine stays calm before it
lends again, on battery, per-job CPU and memory, slots, and whether they paused it.

Every value is kept in the text form the donor typed and validated by the same parser when
read back: a damaged or hand-edited file gives the defaults and one warning, never a crash.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, fields, replace
from datetime import time
from enum import StrEnum
from pathlib import Path
from typing import Any

from compound.protocol import MAX_SLOTS

DONOR_FILE = "donor.json"
MAX_DONOR_FILE_BYTES = 64 * 1024
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
MAX_CPUS = 1024.0
MIN_MEMORY_MIB = 16
MAX_MEMORY_MIB = 1024 * 1024
# An hour: past it a donor would rather turn idle-only lending off than wait for it.
MAX_IDLE_RESUME_S = 3600.0


class SettingError(ValueError):
    """A value the donor cannot set; ``str()`` is one sentence saying what is accepted."""


class OnBattery(StrEnum):
    RUN = "run"
    PAUSE = "pause"


@dataclass(frozen=True)
class Hours:
    """A daily window of local time, minutes since midnight; ``end`` before ``start``
    crosses midnight (22:00-06:00)."""

    start_min: int
    end_min: int

    def contains(self, moment: time) -> bool:
        minute = moment.hour * 60 + moment.minute
        if self.start_min < self.end_min:
            return self.start_min <= minute < self.end_min
        return minute >= self.start_min or minute < self.end_min

    def __str__(self) -> str:
        return f"{_clock(self.start_min)}-{_clock(self.end_min)}"


@dataclass(frozen=True)
class DonorSettings:
    """None for ``hours``, ``idle_cpu_percent``: no such rule; for ``idle_resume_s``,
    ``cpus``, ``memory_mib`` and ``slots``: the agent's command-line value."""

    hours: Hours | None = None
    idle_cpu_percent: float | None = None
    # Idle-only: seconds the machine's own CPU use stays under the threshold to lend again.
    idle_resume_s: float | None = None
    on_battery: OnBattery = OnBattery.RUN
    cpus: float | None = None
    memory_mib: int | None = None
    slots: int | None = None
    # Paused by the donor (``compound agent pause``), until they resume it.
    paused: bool = False


# The donor's key -> the field it sets.
KEYS = {
    "hours": "hours",
    "idle-cpu-percent": "idle_cpu_percent",
    "idle-resume-s": "idle_resume_s",
    "on-battery": "on_battery",
    "cpus": "cpus",
    "memory-mib": "memory_mib",
    "slots": "slots",
}


def with_setting(donor: DonorSettings, key: str, value: str) -> DonorSettings:
    """``donor`` with ``key`` set from the donor's text ``value``; SettingError if invalid."""
    parser = _PARSERS.get(key)
    if parser is None:
        raise SettingError(f"unknown setting {key!r}: one of {', '.join(KEYS)}")
    changes: dict[str, Any] = {KEYS[key]: parser(value.strip())}
    return replace(donor, **changes)


def described(donor: DonorSettings) -> dict[str, str]:
    """Each setting in the text form ``with_setting`` reads (``default``: the agent's own)."""
    return {key: _text(key, getattr(donor, name)) for key, name in KEYS.items()}


def _text(key: str, value: object) -> str:
    if value is None:
        return {"hours": "always", "idle-cpu-percent": "off"}.get(key, "default")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parse_hours(value: str) -> Hours | None:
    if value == "always":
        return None
    start, sep, end = value.partition("-")
    starts, ends = _CLOCK.fullmatch(start), _CLOCK.fullmatch(end)
    if not sep or starts is None or ends is None:
        raise SettingError("hours: HH:MM-HH:MM in local time (e.g. 22:00-07:00), or always")
    window = Hours(int(starts[1]) * 60 + int(starts[2]), int(ends[1]) * 60 + int(ends[2]))
    if window.start_min == window.end_min:
        raise SettingError("hours: the start and the end must differ (for all day: always)")
    return window


def _parse_idle(value: str) -> float | None:
    if value in ("off", "default"):
        return None
    percent = _number(value, "idle-cpu-percent: a percentage from 1 to 100, or off")
    if not 1 <= percent <= 100:
        raise SettingError("idle-cpu-percent: a percentage from 1 to 100, or off")
    return percent


def _parse_idle_resume(value: str) -> float | None:
    sentence = f"idle-resume-s: seconds from 0 to {MAX_IDLE_RESUME_S:g}, or default"
    if value == "default":
        return None
    seconds = _number(value, sentence)
    if not 0 <= seconds <= MAX_IDLE_RESUME_S:
        raise SettingError(sentence)
    # -0 reads back as "-0", which this parser would then refuse.
    return seconds + 0.0


def _parse_battery(value: str) -> OnBattery:
    try:
        return OnBattery(value)
    except ValueError:
        raise SettingError("on-battery: run or pause") from None


def _parse_cpus(value: str) -> float | None:
    if value == "default":
        return None
    cpus = _number(value, f"cpus: cores per job, from 0.01 to {MAX_CPUS:g}, or default")
    if not 0.01 <= cpus <= MAX_CPUS:
        raise SettingError(f"cpus: cores per job, from 0.01 to {MAX_CPUS:g}, or default")
    return cpus


def _parse_memory(value: str) -> int | None:
    sentence = f"memory-mib: MiB per job, from {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB}, or default"
    if value == "default":
        return None
    if not value.isdigit() or not MIN_MEMORY_MIB <= int(value) <= MAX_MEMORY_MIB:
        raise SettingError(sentence)
    return int(value)


def _parse_slots(value: str) -> int | None:
    if value == "default":
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_SLOTS:
        raise SettingError(f"slots: jobs at once, from 1 to {MAX_SLOTS}, or default")
    return int(value)


def _number(value: str, sentence: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SettingError(sentence) from None
    if not math.isfinite(number):
        raise SettingError(sentence)
    return number


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


_PARSERS = {
    "hours": _parse_hours,
    "idle-cpu-percent": _parse_idle,
    "idle-resume-s": _parse_idle_resume,
    "on-battery": _parse_battery,
    "cpus": _parse_cpus,
    "memory-mib": _parse_memory,
    "slots": _parse_slots,
}
assert set(_PARSERS) == set(KEYS) and {f.name for f in fields(DonorSettings)} >= set(KEYS.values())


def load(state_dir: Path) -> tuple[DonorSettings, str | None]:
    """The donor's settings kept in ``state_dir`` (defaults when there are none), and a
    warning when the file could not be used."""
    path = state_dir / DONOR_FILE
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_DONOR_FILE_BYTES + 1)
    except FileNotFoundError:
        return DonorSettings(), None
    except OSError as exc:
        return DonorSettings(), f"cannot read {path} ({exc.strerror}): using the defaults"
    try:
        if len(raw) > MAX_DONOR_FILE_BYTES:
            raise SettingError("the file is too big")
        return _from_json(json.loads(raw)), None
    except (ValueError, TypeError) as exc:
        return DonorSettings(), f"{path} is damaged ({exc}): using the defaults"


def _from_json(data: object) -> DonorSettings:
    if not isinstance(data, dict):
        raise SettingError("not an object")
    donor = DonorSettings()
    for key, value in data.items():
        if key == "paused":
            if not isinstance(value, bool):
                raise SettingError("paused is not true or false")
            donor = replace(donor, paused=value)
        elif isinstance(value, str):
            donor = with_setting(donor, key, value)
        else:
            raise SettingError(f"{key} is not text")
    return donor


def save(state_dir: Path, donor: DonorSettings) -> None:
    """Keep ``donor`` in ``state_dir`` (written then renamed: never half a file)."""
    data: dict[str, object] = {**described(donor), "paused": donor.paused}
    path = state_dir / DONOR_FILE
    staged = path.with_suffix(".tmp")
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
    staged.replace(path)
