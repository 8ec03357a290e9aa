"""WS /ws/contributor: agents say hello, heartbeat, stream logs and report job endings."""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import WebSocket

from compound.coordinator.sessions import ContributorSession
from compound.coordinator.socket import PeerGone, receive_text_or_bytes
from compound.coordinator.state import CoordinatorState
from compound.protocol import (
    CLOSE_PROTOCOL_ERROR,
    PROTOCOL_VERSION,
    Abandon,
    Ack,
    Done,
    Heartbeat,
    Hello,
    JobStatus,
    Log,
    LogRecord,
    ProtocolError,
    Welcome,
    parse_agent_message,
)

log = logging.getLogger("compound.coordinator")

AgentMessage = Hello | Heartbeat | Log | Done


async def contributor_endpoint(websocket: WebSocket, state: CoordinatorState) -> None:
    await websocket.accept()
    session: ContributorSession | None = None
    try:
        first = parse_agent_message(await receive_text_or_bytes(websocket))
        session = await _open_session(websocket, state, first)
        if not isinstance(first, Hello):
            await _handle(state, session, first)
        while True:
            message = parse_agent_message(await receive_text_or_bytes(websocket))
            session.last_seen = time.monotonic()
            state.scheduler.renew(session)
            await _handle(state, session, message)
    except PeerGone:
        pass
    except ProtocolError as exc:
        who = session.name if session else websocket.client
        log.warning(
            "contributor %s sent a bad message (%s); closing %d", who, exc.reason, exc.close_code
        )
        await websocket.close(code=exc.close_code, reason=exc.reason[:120])
    finally:
        if session is not None:
            await state.scheduler.contributor_gone(session)
            log.info("contributor %s disconnected", session.name)


async def _open_session(
    websocket: WebSocket, state: CoordinatorState, first: AgentMessage
) -> ContributorSession:
    if isinstance(first, Hello):
        if first.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"unsupported protocol version {first.protocol_version}", CLOSE_PROTOCOL_ERROR
            )
        hello, legacy = first, False
    else:
        # A seed agent starts talking without introducing itself.
        hello = Hello(
            protocol_version=0,
            node_id=f"seed-{uuid.uuid4().hex[:12]}",
            name="seed agent",
            cores=0,
            memory_bytes=0,
        )
        legacy = True
    session = ContributorSession(hello.node_id, hello.name, websocket, legacy=legacy)
    await state.store.contributors.connected(hello)
    # Reattach before registering, so the session is never seen idle while it runs a job.
    acked, abandon = await state.scheduler.reattach(session, hello.running)
    replaced = state.sessions.add(session)
    if replaced is not None:
        await replaced.websocket.close(code=1000, reason="replaced by a new connection")
    if not legacy:
        await session.send(
            Welcome(
                contributor_id=session.contributor_id,
                heartbeat_interval_s=state.settings.heartbeat_interval_s,
                acked=acked,
            )
        )
    for message in abandon:
        await session.send(message)
    log.info(
        "contributor %s (%s) connected%s",
        session.name,
        session.contributor_id,
        f", resuming {sorted(acked)}" if acked else "",
    )
    await state.scheduler.dispatch()
    return session


async def _handle(
    state: CoordinatorState, session: ContributorSession, message: AgentMessage
) -> None:
    if isinstance(message, Heartbeat):
        await state.store.contributors.seen(
            session.contributor_id,
            cpu_percent=message.cpu_percent,
            ram_free_bytes=message.ram_free_bytes,
            ram_total_bytes=message.ram_total_bytes,
        )
    elif isinstance(message, Log):
        await _handle_log(state, session, message)
    elif isinstance(message, Done):
        await _handle_done(state, session, message)
    else:
        raise ProtocolError("hello is only allowed as the first message")


def _job_of(session: ContributorSession, job_id: str | None) -> str | None:
    """The job a report is about; a seed agent's reports name none: it runs one at a time."""
    if job_id is not None:
        return job_id
    return next(iter(session.running), None) if len(session.running) == 1 else None


async def _check_lease(
    state: CoordinatorState,
    session: ContributorSession,
    job_id: str | None,
    lease_id: str | None,
) -> str | None:
    job_id = _job_of(session, job_id)
    if job_id is None:
        log.warning("contributor %s reported on no job it runs; ignored", session.name)
        return None
    if state.scheduler.holds_lease(job_id, lease_id, session.contributor_id):
        return job_id
    log.warning("refused a report on job %s from %s: lease not held", job_id, session.name)
    session.running.discard(job_id)
    if not session.legacy:
        await session.send(Abandon(job_id=job_id, reason="lease expired or job ended"))
    return None


async def _handle_log(state: CoordinatorState, session: ContributorSession, message: Log) -> None:
    job_id = await _check_lease(state, session, message.job_id, message.lease_id)
    if job_id is None:
        return
    records = list(message.records)
    if message.line is not None:
        job = await state.store.get_job(job_id)
        next_seq = (job.last_seq + 1) if job else 0
        records.append(LogRecord(seq=next_seq, stream=message.stream, data=message.line + "\n"))
    last_seq = await state.store.append_logs(job_id, records)
    state.hub.notify(job_id)
    if not session.legacy:
        await session.send(Ack(job_id=job_id, seq=last_seq))


async def _handle_done(state: CoordinatorState, session: ContributorSession, message: Done) -> None:
    job_id = await _check_lease(state, session, message.job_id, message.lease_id)
    if job_id is None:
        return
    status = message.status
    if status is None or not status.is_terminal:
        status = JobStatus.SUCCEEDED if message.exit_code in (None, 0) else JobStatus.FAILED
    await state.scheduler.finish(job_id, status, exit_code=message.exit_code, error=message.error)
    if not session.legacy:
        # Stored (or already over): either way the agent can forget the job now.
        job = await state.store.get_job(job_id)
        await session.send(Ack(job_id=job_id, seq=job.last_seq if job else -1, done=True))
