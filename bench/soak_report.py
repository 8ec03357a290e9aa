"""The soak's summary: a table of figures, the acceptance criteria, one verdict line."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

HEALTHZ_P99_LIMIT_S = 1.0
RSS_LIMIT_MIB = 512.0
SIGTERM_LIMIT_S = 10.0
# Above this the load generator itself was late, and the load smaller than claimed.
LOOP_LAG_WARNING_S = 0.5


class Verdict(enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Criterion:
    name: str
    measured: str
    limit: str
    ok: bool


def criteria(figures: dict[str, Any]) -> list[Criterion]:
    observed = figures["observer"]
    healthz = observed["healthz"]
    ordinary = observed["ordinary"]
    intact = sum(1 for job in ordinary if job["ok"])
    sigterm = figures["sigterm"]
    exit_s = sigterm["exit_s"]
    return [
        Criterion(
            "/healthz p99",
            f"{healthz['p99_s']:.3f} s",
            f"< {HEALTHZ_P99_LIMIT_S:.0f} s",
            healthz["p99_s"] < HEALTHZ_P99_LIMIT_S,
        ),
        Criterion("/healthz failures", str(healthz["failures"]), "0", healthz["failures"] == 0),
        Criterion(
            "coordinator RSS max",
            f"{observed['rss_max_mib']:.0f} MiB",
            f"< {RSS_LIMIT_MIB:.0f} MiB",
            observed["rss_max_mib"] < RSS_LIMIT_MIB,
        ),
        Criterion(
            "ordinary jobs intact",
            f"{intact}/{len(ordinary)}",
            "all",
            bool(ordinary) and intact == len(ordinary),
        ),
        Criterion(
            "SIGTERM exit",
            "killed after 20 s" if exit_s is None else f"{exit_s:.2f} s",
            f"<= {SIGTERM_LIMIT_S:.0f} s",
            exit_s is not None and exit_s <= SIGTERM_LIMIT_S,
        ),
    ]


def _load_lines(figures: dict[str, Any]) -> list[str]:
    load = figures["load"]
    fake = figures["bad_contributor"]
    healthz = figures["observer"]["healthz"]
    return [
        f"abandoned submitters   {load['abandoned_submitters']}",
        f"silent followers       {load['silent_followers']}",
        f"half-open connections  {load['half_open']}",
        f"bad contributor        sent {fake['messages_sent']}, "
        f"connections {fake['connections']} (failed {fake['connect_failures']}), "
        f"closes {fake['close_codes']}, decoy lost at {fake['decoy_lost_at_s']}, "
        f"jobs captured {len(fake['captured_jobs'])}",
        f"/healthz               {healthz['answered']}/{healthz['probes']} answered, "
        f"p50 {healthz['p50_s']:.3f} s, p99 {healthz['p99_s']:.3f} s, "
        f"max {healthz['max_s']:.3f} s, failures {healthz['failures']} "
        f"{healthz['failure_kinds'][:3]}",
        f"/healthz worst per 5 s {healthz.get('worst_per_5s')} (None: a probe failed)",
        f"/healthz worst per 1 s, first 10 s {healthz.get('worst_per_1s_first_10s')}",
    ]


def _cpu_line(figures: dict[str, Any]) -> str:
    """Who used the two cores during the load window, in percent of one core."""
    window_s = figures["scale"]["duration_s"]
    used = dict(figures["observer"]["cpu_s"])
    used["load generator"] = figures["load"]["load_cpu_s"]
    machine = used.pop("machine")
    used["everything else"] = machine - sum(used.values())
    shares = ", ".join(f"{name} {100 * cpu_s / window_s:.0f}%" for name, cpu_s in used.items())
    waited_s = figures["observer"]["coordinator_runqueue_wait_s"]
    return (
        f"CPU (% of one core)    {shares}; machine total {100 * machine / window_s:.0f}%; "
        f"coordinator waited {waited_s:.1f} s of {window_s:.0f} s for a CPU"
    )


def _generator_lines(figures: dict[str, Any]) -> list[str]:
    load = figures["load"]
    lag = load["load_loop_lag"]
    baseline = figures["observer"]["healthz_baseline"]
    lines = [
        _cpu_line(figures),
        f"load generator loop    lag p99 {lag['p99_s']:.3f} s, max {lag['max_s']:.3f} s; "
        f"tasks stuck at stop {load['load_tasks_stuck']}",
        f"/healthz before load   p50 {baseline['p50_s']:.3f} s, p99 {baseline['p99_s']:.3f} s, "
        f"failures {baseline['failures']} (same machine, idle coordinator)",
        f"coordinator RSS        max {figures['observer']['rss_max_mib']:.0f} MiB, "
        f"at the end {figures['observer']['rss_last_mib']:.0f} MiB",
    ]
    if lag["p99_s"] > LOOP_LAG_WARNING_S:
        lines.append("WARNING: the load generator's loop lagged: it applied less load than asked")
    lines.extend(_shortfalls(figures))
    return lines


def _shortfalls(figures: dict[str, Any]) -> list[str]:
    """Where the load reached less than asked (the coordinator refused or was too slow)."""
    scale, load = figures["scale"], figures["load"]
    reached = {
        "abandoned submitters": (load["abandoned_submitters"]["sockets_abandoned"], "abandoned"),
        "silent followers": (load["silent_followers"]["opened"], "followers"),
        "half-open connections (peak)": (load["half_open"]["peak_open"], "half_open"),
    }
    return [
        f"NOTE: {name}: {count} of {scale[key]} reached"
        for name, (count, key) in reached.items()
        if count < scale[key]
    ]


def _ordinary_lines(figures: dict[str, Any]) -> list[str]:
    failed = [job for job in figures["observer"]["ordinary"] if not job["ok"]]
    return [f"ordinary job {job['job_id']} failed: {job['reason']}" for job in failed[:10]]


def print_report(figures: dict[str, Any]) -> Verdict:
    print()
    for line in [*_load_lines(figures), *_generator_lines(figures), *_ordinary_lines(figures)]:
        print(line)
    checks = criteria(figures)
    print()
    print(f"{'criterion':<24}{'measured':>20}{'limit':>12}  ok")
    for check in checks:
        print(
            f"{check.name:<24}{check.measured:>20}{check.limit:>12}  {'yes' if check.ok else 'NO'}"
        )
    verdict = Verdict.PASS if all(check.ok for check in checks) else Verdict.FAIL
    failed = [check.name for check in checks if not check.ok]
    figures["verdict"] = verdict.value
    figures["failed_criteria"] = failed
    print()
    print(f"VERDICT: {verdict.value}" + (f" ({', '.join(failed)})" if failed else ""))
    return verdict
