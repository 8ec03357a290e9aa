"""One connection to the coordinator: hello, then heartbeats, logs out, commands in."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psutil
from websockets.asyncio.client import ClientConnection

from compound import __version__
from compound.agent.events import EventSink
from compound.agent.outbox import Outbox
from compound.agent.settings import AgentSettings
from compound.agent.worker import Worker
from compound.protocol import (
    PROTOCOL_VERSION,
    Abandon,
    Ack,
    Availability,
    Cancel,
    Heartbeat,
    Hello,
    Job,
    Log,
    ProtocolError,
    RunningJob,
    Welcome,
    parse_coordinator_message,
    serialize,
)
from compound.protocol.events import Connected, Stats

log = logging.getLogger("compound.agent")

WELCOME_TIMEOUT_S = 10.0


class CoordinatorConnection:
    def __init__(
        self,
        websocket: ClientConnection,
        settings: AgentSettings,
        node_id: str,
        worker: Worker,
        outbox: Outbox,
        events: EventSink,
    ) -> None:
        self._ws = websocket
        self._settings = settings
        # Set once the coordinator's welcome came: this coordinator works.
        self.welcomed = False
        self._node_id = node_id
        self._worker = worker
        self._outbox = outbox
        self._events = events
        self._send_lock = asyncio.Lock()
        self._heartbeat_interval_s = settings.heartbeat_interval_s
        self._lending_said = 0  # the outbox's lending_changes this connection has said

    async def run(self) -> None:
        """Serve this connection until it closes (returns) or breaks (raises)."""
        await self._handshake()
        tasks = [
            asyncio.create_task(self._receive(), name="receive"),
            asyncio.create_task(self._ship_logs(), name="ship-logs"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise what broke the connection
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _send(self, message: Any) -> None:
        async with self._send_lock:
            await self._ws.send(serialize(message))

    def _running(self) -> list[RunningJob]:
        """The leases this agent holds: every job from its assignment to its ending's ack."""
        return [
            RunningJob(job_id=j.job_id, lease_id=j.lease_id) for j in self._outbox.jobs.values()
        ]

    async def _handshake(self) -> None:
        memory = psutil.virtual_memory()
        running = self._running()
        await self._send(
            Hello(
                protocol_version=PROTOCOL_VERSION,
                node_id=self._node_id,
                name=self._settings.name,
                cores=psutil.cpu_count() or 1,
                memory_bytes=memory.total,
                runtime=self._settings.runtime,
                version=__version__,
                running=running,
                deps=self._settings.deps,
                slots=self._outbox.slots or self._settings.slots,
                lending=self._outbox.lending,
                lending_reason=self._outbox.lending_reason,
            )
        )
        self._lending_said = self._outbox.lending_changes
        raw = await asyncio.wait_for(self._ws.recv(), WELCOME_TIMEOUT_S)
        welcome = parse_coordinator_message(raw)
        if not isinstance(welcome, Welcome):
            raise ProtocolError(f"expected welcome, got {welcome.type}")
        self._heartbeat_interval_s = welcome.heartbeat_interval_s
        self.welcomed = True
        self._outbox.rewind()
        for job_id, seq in welcome.acked.items():
            job_log = self._outbox.jobs.get(job_id)
            if job_log is not None:
                job_log.acknowledge(seq)
        self._events.emit(
            Connected(
                node_id=self._node_id,
                contributor_id=welcome.contributor_id,
                runtime=self._settings.runtime,
            )
        )
        self._events.say(
            f"connected to {self._settings.coordinator_url} as {self._node_id}"
            + (f", resuming {len(welcome.acked)} job(s)" if welcome.acked else "")
        )

    async def _receive(self) -> None:
        async for raw in self._ws:
            message = parse_coordinator_message(raw)
            if isinstance(message, Job):
                self._worker.start(message)
            elif isinstance(message, Ack):
                self._acknowledge(message)
            elif isinstance(message, Cancel):
                self._events.say(f"job {message.job_id}: {message.reason}")
                self._worker.cancel(message.job_id)
            elif isinstance(message, Abandon):
                self._worker.abandon(message.job_id, message.reason, message.lease_id)

    def _acknowledge(self, ack: Ack) -> None:
        job_log = self._outbox.jobs.get(ack.job_id)
        if job_log is None:
            return
        job_log.acknowledge(ack.seq)
        if ack.done:
            self._worker.forget(ack.job_id)
        else:
            self._outbox.changed.set()  # a batch held back for this ack may go now

    async def _ship_logs(self) -> None:
        while True:
            await self._outbox.changed.wait()
            self._outbox.changed.clear()
            while await self._ship_once():
                pass

    async def _ship_once(self) -> bool:
        """Send one batch per job with something pending; True if anything was sent."""
        sent = False
        if self._outbox.lending_changes != self._lending_said:
            # First, so no job is given to an agent that is pausing or going.
            self._lending_said = self._outbox.lending_changes
            await self._send(
                Availability(
                    lending=self._outbox.lending,
                    reason=self._outbox.lending_reason,
                    slots=self._outbox.slots,
                )
            )
            sent = True
        for job_log in list(self._outbox.jobs.values()):
            now = asyncio.get_running_loop().time()
            batch = job_log.pending_batch(now)
            if job_log.sent_seq <= job_log.acked_seq and now < job_log.partial_due_at:
                # Output gathered or held now goes once due, unless an ack or more wakes us.
                self._outbox.wake_at(job_log.partial_due_at)
            if batch:
                if not job_log.may_send(batch, now):
                    continue  # held until an ack (see _acknowledge) or until it is due
                # Marked before the send: a lost connection rewinds it anyway (Outbox.rewind).
                job_log.mark_sent(batch, now)
                await self._send(
                    Log(job_id=job_log.job_id, lease_id=job_log.lease_id, records=batch)
                )
                sent = True
            elif job_log.ending is not None and not job_log.ending_sent:
                await self._send(job_log.ending)
                job_log.ending_sent = True
                sent = True
        return sent

    async def _heartbeat(self) -> None:
        while True:
            memory = psutil.virtual_memory()
            cpu = psutil.cpu_percent(interval=None)
            await self._send(
                Heartbeat(
                    cpu_percent=cpu,
                    ram_free_bytes=memory.available,
                    ram_total_bytes=memory.total,
                    running=self._running(),
                )
            )
            self._events.emit(
                Stats(
                    cpu_percent=cpu, ram_free_bytes=memory.available, ram_total_bytes=memory.total
                )
            )
            await asyncio.sleep(self._heartbeat_interval_s)
