"""The coordinator's Prometheus metrics: counters moved in place, gauges read at scrape time.

One :class:`Metrics` per app (its own registry, never the library's global one). The stores
call its verbs as jobs move and records are stored (one increment each, no I/O); the edge
middleware counts requests and refusals by cause; everything that is a level (queued jobs,
contributors, slots, open connections) is read from the in-memory state when ``/metrics`` is
scraped and handed in as a :class:`Snapshot`. No label carries a job or contributor id: the
series stay few whatever the load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    exposition,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = exposition.CONTENT_TYPE_LATEST
OUTCOMES = ("succeeded", "failed", "cancelled", "timed_out")
# Seconds: from a few milliseconds (an idle contributor waiting) to a day in the queue.
WAIT_BUCKETS_S = (0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600)
RUN_BUCKETS_S = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
# What a refusal says, by HTTP status or WebSocket close code.
HTTP_CAUSES = {
    401: "unauthorized",
    403: "forbidden",
    408: "too_slow",
    413: "too_large",
    422: "invalid",
    429: "quota",
    503: "overloaded",
}
WS_CAUSES = {
    1002: "invalid",
    1007: "invalid",
    1008: "policy",
    1009: "too_large",
    1013: "overloaded",
    4401: "unauthorized",
    4403: "forbidden",
}


@dataclass(frozen=True)
class Snapshot:
    """The levels, read from the in-memory state when ``/metrics`` is asked for."""

    queued: int
    running: int
    oldest_queued_age_s: float
    # Connected contributors by what they lend now (active, paused, draining).
    contributors: dict[str, int] = field(default_factory=dict)
    slots_busy: int = 0
    slots_idle: int = 0
    http_connections: int = 0
    websockets: int = 0
    followers: int = 0


class Metrics:
    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=False)
        self._submitted = Counter(
            "compound_jobs_submitted", "Jobs accepted into the queue.", registry=registry
        )
        self._finished = Counter(
            "compound_jobs_finished",
            "Jobs ended, by outcome.",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self._finished.labels(outcome)
        self._wait = Histogram(
            "compound_job_queue_wait_seconds",
            "From submission to a contributor's claim (a retried job counts from submission).",
            buckets=WAIT_BUCKETS_S,
            registry=registry,
        )
        self._run = Histogram(
            "compound_job_run_seconds",
            "From the last claim to the end, for jobs that ran.",
            buckets=RUN_BUCKETS_S,
            registry=registry,
        )
        self._records = Counter("compound_log_records", "Log records stored.", registry=registry)
        self._bytes = Counter(
            "compound_log_bytes", "Bytes of log records stored (UTF-8).", registry=registry
        )
        self._requests = Counter(
            "compound_http_requests", "HTTP requests answered.", registry=registry
        )
        self._websockets = Counter(
            "compound_websocket_connections", "WebSocket handshakes received.", registry=registry
        )
        self._refusals = Counter(
            "compound_refusals",
            "Requests and sockets refused, by cause.",
            ["cause"],
            registry=registry,
        )
        for cause in sorted({*HTTP_CAUSES.values(), *WS_CAUSES.values()}):
            self._refusals.labels(cause)
        self._queued = Gauge("compound_jobs_queued", "Jobs waiting.", registry=registry)
        self._running = Gauge(
            "compound_jobs_running", "Jobs running (as of the last sweep).", registry=registry
        )
        self._oldest = Gauge(
            "compound_oldest_queued_job_age_seconds",
            "Age of the oldest queued job since its submission; 0 with none queued.",
            registry=registry,
        )
        self._contributors = Gauge(
            "compound_contributors",
            "Connected contributors, by what they lend (active, paused, draining).",
            ["state"],
            registry=registry,
        )
        self._slots = Gauge(
            "compound_slots",
            "Job slots of connected contributors, busy or idle.",
            ["state"],
            registry=registry,
        )
        self._connections = Gauge(
            "compound_connections_open",
            "Open client connections, by kind (http: every connection, websocket among them).",
            ["kind"],
            registry=registry,
        )
        self._followers = Gauge("compound_followers", "Open log followers.", registry=registry)

    # ------------------------------------------------------------------ the stores' verbs

    def job_created(self) -> None:
        self._submitted.inc()

    def job_claimed(self, waited_s: float) -> None:
        self._wait.observe(max(0.0, waited_s))

    def job_ended(self, outcome: str, ran_s: float | None) -> None:
        self._finished.labels(outcome).inc()
        if ran_s is not None:
            self._run.observe(max(0.0, ran_s))

    def records_stored(self, count: int, size_bytes: int) -> None:
        self._records.inc(count)
        self._bytes.inc(size_bytes)

    # ------------------------------------------------------------------ the edge's verbs

    def request(self) -> None:
        self._requests.inc()

    def websocket(self) -> None:
        self._websockets.inc()

    def refused(self, cause: str) -> None:
        self._refusals.labels(cause).inc()

    # ------------------------------------------------------------------ a scrape

    def render(self, snapshot: Snapshot) -> bytes:
        """The text exposition, its gauges set from ``snapshot`` first."""
        self._queued.set(snapshot.queued)
        self._running.set(snapshot.running)
        self._oldest.set(snapshot.oldest_queued_age_s)
        for state in ("active", "paused", "draining", *snapshot.contributors):
            self._contributors.labels(state).set(snapshot.contributors.get(state, 0))
        self._slots.labels("busy").set(snapshot.slots_busy)
        self._slots.labels("idle").set(snapshot.slots_idle)
        self._connections.labels("http").set(snapshot.http_connections)
        self._connections.labels("websocket").set(snapshot.websockets)
        self._followers.set(snapshot.followers)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts requests, WebSocket handshakes and refusals (by their status or close code)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            self.metrics.request()
            await self.app(scope, receive, self._watching(send))
        elif kind == "websocket":
            self.metrics.websocket()
            await self.app(scope, receive, self._watching(send))
        else:
            await self.app(scope, receive, send)

    def _watching(self, send: Send) -> Send:
        metrics = self.metrics

        async def watched(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                cause = HTTP_CAUSES.get(message.get("status", 200))
            elif kind == "websocket.close":
                cause = WS_CAUSES.get(message.get("code", 1000))
            else:
                cause = None
            if cause is not None:
                metrics.refused(cause)
            await send(message)

        return watched
