"""The soak's observer: measures the coordinator from a process of its own.

It probes /healthz, samples the coordinator's memory and CPU, and follows the ordinary jobs,
in a separate process from the load so that a busy load generator cannot make the
coordinator look slow: a late answer here is the coordinator's, not our event loop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from compound.protocol import FollowEnd, FollowRecords, ProtocolError, parse_follow_message

HEALTHZ_EVERY_S = 0.1
HEALTHZ_TIMEOUT_S = 5.0
RSS_EVERY_S = 0.5
FOLLOW_MAX_BYTES = 8 * 1024 * 1024
FOLLOW_RETRY_PAUSE_S = 1.0
# Followers connect a little before their job is due to print, to see it live.
FOLLOW_LEAD_S = 1.0
MiB = 1024 * 1024


@dataclass(frozen=True)
class OrdinaryJob:
    job_id: str
    expected_stdout: str
    prints_at_epoch: float


@dataclass(frozen=True)
class ObserverPlan:
    port: int
    coordinator_pid: int
    agent_pid: int
    # /healthz is probed from here to load_start_epoch too: the same machine, no load.
    baseline_start_epoch: float
    load_start_epoch: float
    load_end_epoch: float
    drain_until_epoch: float
    ordinary: list[OrdinaryJob]
    result_path: Path


@dataclass
class OrdinaryResult:
    job_id: str
    ok: bool = False
    status: str | None = None
    reason: str = "not finished by the deadline"
    connect_retries: int = 0
    stdout_bytes: int = 0
    finished_after_s: float | None = None


@dataclass
class Probes:
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # (when the probe started, its latency or None if it failed): when the trouble was.
    timeline: list[tuple[float, float | None]] = field(default_factory=list)

    def worst_by_window(self, window_s: float = 5.0) -> list[float | None]:
        """The slowest probe of each window (None: one failed), from the first probe on."""
        if not self.timeline:
            return []
        start = min(at for at, _ in self.timeline)
        worst: dict[int, float | None] = {}
        for at, latency in self.timeline:
            index = int((at - start) // window_s)
            seen = worst.get(index, 0.0)
            worst[index] = None if latency is None or seen is None else max(seen, latency)
        return [
            None if (value := worst.get(i, 0.0)) is None else round(value, 3)
            for i in range(max(worst) + 1)
        ]

    def summary(self) -> dict[str, Any]:
        latencies = sorted(self.latencies_s) or [float("inf")]
        return {
            "worst_per_5s": self.worst_by_window(),
            "worst_per_1s_first_10s": self.worst_by_window(1.0)[:10],
            "probes": len(self.latencies_s) + len(self.failures),
            "answered": len(self.latencies_s),
            "failures": len(self.failures),
            "failure_kinds": sorted(set(self.failures))[:10],
            "p50_s": statistics.median(latencies),
            "p99_s": latencies[int(0.99 * (len(latencies) - 1))],
            "max_s": latencies[-1],
        }


@dataclass
class Observations:
    baseline: Probes = field(default_factory=Probes)
    healthz: Probes = field(default_factory=Probes)
    rss_bytes: list[int] = field(default_factory=list)
    # CPU seconds spent during the load window.
    coordinator_cpu_s: float = 0.0
    coordinator_runqueue_wait_s: float = 0.0
    agent_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0
    observer_cpu_s: float = 0.0
    ordinary: list[OrdinaryResult] = field(default_factory=list)


async def _sleep_until(epoch: float) -> None:
    await asyncio.sleep(max(0.0, epoch - time.time()))


async def _probe_healthz(port: int) -> float:
    """Seconds for one GET /healthz over a new connection; raises unless it answers 200."""
    began = time.monotonic()
    async with asyncio.timeout(HEALTHZ_TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
        finally:
            writer.close()
    if not answer.startswith(b"HTTP/1.1 200"):
        raise ValueError(answer.split(b"\r\n", 1)[0].decode(errors="replace") or "empty answer")
    return time.monotonic() - began


async def _record_probe(port: int, probes: Probes) -> None:
    started = time.time()
    try:
        latency = await _probe_healthz(port)
    except TimeoutError:
        probes.failures.append(f"no answer within {HEALTHZ_TIMEOUT_S:.0f} s")
        probes.timeline.append((started, None))
    except (OSError, ValueError) as exc:
        probes.failures.append(f"{type(exc).__name__}: {exc}"[:200])
        probes.timeline.append((started, None))
    else:
        probes.latencies_s.append(latency)
        probes.timeline.append((started, latency))


async def _probe_window(port: int, start_epoch: float, end_epoch: float, probes: Probes) -> None:
    # A new probe every 100 ms whether or not the last one answered: a stuck server must
    # not slow the probing down and hide how long it was stuck.
    running: set[asyncio.Task[None]] = set()
    due = start_epoch
    while due < end_epoch:
        await _sleep_until(due)
        probe = asyncio.create_task(_record_probe(port, probes))
        running.add(probe)
        probe.add_done_callback(running.discard)
        due += HEALTHZ_EVERY_S
    await asyncio.gather(*running)


async def _probe_healthz_windows(plan: ObserverPlan, found: Observations) -> None:
    await _probe_window(plan.port, plan.baseline_start_epoch, plan.load_start_epoch, found.baseline)
    await _probe_window(plan.port, plan.load_start_epoch, plan.load_end_epoch, found.healthz)


def _cpu_s(process: psutil.Process) -> float:
    try:
        return float(sum(process.cpu_times()[:2]))
    except psutil.Error:
        return 0.0


def _runqueue_wait_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (Linux schedstat).

    Tells a coordinator starved by the rest of the machine from one that is slow by itself.
    """
    total_ns = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total_ns += int(stat.read_text().split()[1])
    return total_ns / 1e9


def _machine_cpu_s() -> float:
    times = psutil.cpu_times()
    return float(times.user + times.nice + times.system + times.irq + times.softirq)


async def _sample_load_window(plan: ObserverPlan, found: Observations) -> None:
    """The coordinator's RSS every 500 ms, and who used the CPU, over the load window."""
    coordinator = psutil.Process(plan.coordinator_pid)
    agent = psutil.Process(plan.agent_pid)
    await _sleep_until(plan.load_start_epoch)
    before = (_cpu_s(coordinator), _cpu_s(agent), _machine_cpu_s())
    waited_before = _runqueue_wait_s(plan.coordinator_pid)
    while time.time() < plan.load_end_epoch:
        with contextlib.suppress(psutil.Error):
            found.rss_bytes.append(coordinator.memory_info().rss)
        await asyncio.sleep(RSS_EVERY_S)
    after = (_cpu_s(coordinator), _cpu_s(agent), _machine_cpu_s())
    found.coordinator_runqueue_wait_s = _runqueue_wait_s(plan.coordinator_pid) - waited_before
    found.coordinator_cpu_s, found.agent_cpu_s, found.machine_cpu_s = (
        end - start for start, end in zip(before, after, strict=True)
    )


async def _follow_once(port: int, job_id: str, result: OrdinaryResult) -> str:
    """Stdout of one follow from the start; sets the job's final status."""
    url = f"ws://127.0.0.1:{port}/api/v1/jobs/{job_id}/follow?after=-1"
    chunks: list[str] = []
    async with connect(url, max_size=FOLLOW_MAX_BYTES, open_timeout=HEALTHZ_TIMEOUT_S) as ws:
        async for raw in ws:
            message = parse_follow_message(raw)
            if isinstance(message, FollowRecords):
                chunks.extend(r.data for r in message.records if r.stream.value == "stdout")
            elif isinstance(message, FollowEnd):
                result.status = message.job.status.value
                return "".join(chunks)
    raise ConnectionError("the follow socket closed before the job's end")


async def _check_ordinary(plan: ObserverPlan, job: OrdinaryJob) -> OrdinaryResult:
    result = OrdinaryResult(job.job_id)
    await _sleep_until(job.prints_at_epoch - FOLLOW_LEAD_S)
    while time.time() < plan.drain_until_epoch:
        try:
            async with asyncio.timeout(plan.drain_until_epoch - time.time()):
                stdout = await _follow_once(plan.port, job.job_id, result)
        except TimeoutError:
            return result
        except (OSError, ConnectionClosed, InvalidHandshake, ProtocolError) as exc:
            result.connect_retries += 1
            result.reason = f"follow failed: {type(exc).__name__}: {exc}"[:200]
            await asyncio.sleep(FOLLOW_RETRY_PAUSE_S)
            continue
        result.stdout_bytes = len(stdout.encode())
        result.finished_after_s = time.time() - job.prints_at_epoch
        result.ok = result.status == "succeeded" and stdout == job.expected_stdout
        result.reason = "" if result.ok else _what_differs(result.status, stdout, job)
        return result
    return result


def _what_differs(status: str | None, stdout: str, job: OrdinaryJob) -> str:
    if status != "succeeded":
        return f"job ended {status}"
    got, expected = stdout.splitlines(), job.expected_stdout.splitlines()
    return f"stdout differs: {len(got)} lines, {len(expected)} expected"


async def observe(plan: ObserverPlan) -> Observations:
    found = Observations()
    own = psutil.Process()
    cpu_before = sum(own.cpu_times()[:2])
    checks = [_check_ordinary(plan, job) for job in plan.ordinary]
    _, _, found.ordinary = await asyncio.gather(
        _probe_healthz_windows(plan, found),
        _sample_load_window(plan, found),
        asyncio.gather(*checks),
    )
    found.observer_cpu_s = sum(own.cpu_times()[:2]) - cpu_before
    return found


def summarize(found: Observations) -> dict[str, Any]:
    return {
        "healthz_baseline": found.baseline.summary(),
        "healthz": found.healthz.summary(),
        "rss_max_mib": max(found.rss_bytes, default=0) / MiB,
        "rss_last_mib": (found.rss_bytes[-1] if found.rss_bytes else 0) / MiB,
        "cpu_s": {
            "coordinator": found.coordinator_cpu_s,
            "agent": found.agent_cpu_s,
            "observer": found.observer_cpu_s,
            "machine": found.machine_cpu_s,
        },
        "coordinator_runqueue_wait_s": found.coordinator_runqueue_wait_s,
        "ordinary": [asdict(result) for result in found.ordinary],
    }


def run_observer(plan: ObserverPlan) -> None:
    """Entry point of the observer process: measures, then writes its JSON file."""
    found = asyncio.run(observe(plan))
    plan.result_path.write_text(json.dumps(summarize(found)))
