"""Figures of the benchmark: samples reduced to median and p95, a baseline, a target.

Pure data and arithmetic: every part of the suite returns a list of :class:`Figure` and
``run_all.py`` prints them as one table and writes them into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in [0, 1]); 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else 0.0


@dataclass(frozen=True)
class Target:
    """What the issue asks of a figure: ``value`` compared with ``kind``, shown as ``text``."""

    text: str
    check: Callable[[Figure], bool]


@dataclass(frozen=True)
class Figure:
    part: str  # "a" .. "g", as in the issue
    name: str
    unit: str
    median: float
    p95: float | None = None
    baseline: float | None = None  # the baseline's median, same unit, same run
    target: Target | None = None
    note: str = ""
    # How it was measured: the runtime, the agent's slots and warm containers.
    setup: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0.0):
            return None
        assert self.baseline is not None
        return self.median / self.baseline

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "pass" if self.target.check(self) else "FAIL"


def from_samples(
    part: str,
    name: str,
    unit: str,
    samples: Sequence[float],
    baseline: Sequence[float] | None = None,
    target: Target | None = None,
    note: str = "",
    setup: str = "",
) -> Figure:
    return Figure(
        part=part,
        name=name,
        unit=unit,
        median=median(samples),
        p95=percentile(samples, 0.95),
        baseline=median(baseline) if baseline else None,
        target=target,
        note=note,
        setup=setup,
    )


def ratio_at_most(limit: float) -> Target:
    return Target(f"<= {limit:g}x", lambda f: f.ratio is not None and f.ratio <= limit)


def ratio_at_least(limit: float) -> Target:
    return Target(f">= {limit:g}x", lambda f: f.ratio is not None and f.ratio >= limit)


def median_at_least(limit: float, unit: str) -> Target:
    return Target(f">= {limit:,g} {unit}", lambda f: f.median >= limit)


def median_at_most(limit: float, unit: str) -> Target:
    return Target(f"<= {limit:,g} {unit}", lambda f: f.median <= limit)


def p99_at_most(samples: Sequence[float], limit: float, unit: str) -> Target:
    """A p99 bound: the table shows p95, so the p99 is taken from the samples here."""
    p99 = percentile(samples, 0.99)
    return Target(
        f"p99 <= {limit:,g} {unit} (p99 {p99:.1f})", lambda _: bool(samples) and p99 <= limit
    )


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


HEADER = (
    "part",
    "figure",
    "setup",
    "unit",
    "median",
    "p95",
    "baseline",
    "ratio",
    "target",
    "verdict",
)


def rows(figures: Sequence[Figure]) -> list[tuple[str, ...]]:
    return [
        (
            f.part,
            f.name,
            f.setup,
            f.unit,
            _number(f.median),
            _number(f.p95),
            _number(f.baseline),
            "" if f.ratio is None else f"{f.ratio:.2f}x",
            f.target.text if f.target else "",
            f.verdict,
        )
        for f in figures
    ]


def text_table(figures: Sequence[Figure]) -> str:
    table = [HEADER, *rows(figures)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def markdown_table(figures: Sequence[Figure]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(figures)]
    return "\n".join(lines)
