"""WS /ws/contributor: agents say hello, heartbeat, stream logs and report job endings.

The handler is thin: it parses, lets the seed adapter turn a seed agent's frames into v1
messages, and hands each message to the scheduler and the store, which enforce the lease
and sequence rules. A report that breaks them closes the socket with 1008 and the job is
handled as its contributor's loss.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from fastapi import WebSocket

from compound.coordinator.routes.access import require_on_socket
from compound.coordinator.routes.socket import PeerGone, receive_text_or_bytes
from compound.coordinator.scheduling.reports import Violation
from compound.coordinator.scheduling.sessions import ContributorSession
from compound.coordinator.state import CoordinatorState
from compound.coordinator.storage.tokens import Principal
from compound.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_POLICY,
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
from compound.protocol.auth import Role

log = logging.getLogger("compound.coordinator")

AgentMessage = Hello | Heartbeat | Log | Done
# A connection must introduce itself (or, a seed agent, say anything) within this time.
FIRST_MESSAGE_TIMEOUT_S = 10.0


class ReportRefused(ProtocolError):
    """A log or done report broke the lease's rules (close 1008)."""

    def __init__(self, reason: str, job_id: str) -> None:
        super().__init__(reason, CLOSE_POLICY)
        self.job_id = job_id


async def contributor_endpoint(websocket: WebSocket, state: CoordinatorState) -> None:
    await websocket.accept()
    principal = await require_on_socket(websocket, Role.CONTRIBUTOR)
    if principal is None:
        return
    session: ContributorSession | None = None
    try:
        first = parse_agent_message(
            await asyncio.wait_for(receive_text_or_bytes(websocket), FIRST_MESSAGE_TIMEOUT_S)
        )
        session = await _open_session(websocket, state, first, principal)
        # Silence is counted from when we start reading it, not from before the hello's writes.
        state.sessions.heard(session)
        if not isinstance(first, Hello):
            await _handle(state, session, first)
        while not session.closed:
            message = parse_agent_message(await receive_text_or_bytes(websocket))
            state.sessions.heard(session)
            state.scheduler.renew(session)
            await _handle(state, session, message)
    except (PeerGone, TimeoutError):
        pass
    except ProtocolError as exc:
        await _refuse(websocket, state, session, exc)
    finally:
        if session is not None:
            await state.scheduler.contributor_gone(session)
            session.closed = True
            await session.wait_closed()
            log.info("contributor %s disconnected", session.name)


async def _refuse(
    websocket: WebSocket,
    state: CoordinatorState,
    session: ContributorSession | None,
    exc: ProtocolError,
) -> None:
    who = session.name if session else websocket.client
    log.warning(
        "contributor %s sent a bad message (%s); closing %d", who, exc.reason, exc.close_code
    )
    if session is None:
        await _close_quietly(websocket, exc.close_code, exc.reason)
        return
    # Closed first, so the job it loses is never handed straight back to it.
    session.close(exc.close_code, exc.reason)
    if isinstance(exc, ReportRefused):
        lease = state.scheduler.leases.get(exc.job_id)
        if lease is not None and lease.holder == session.contributor_id:
            await state.scheduler.contributor_misbehaved(lease)


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await asyncio.wait_for(websocket.close(code=code, reason=reason[:120]), 5.0)
    except Exception as exc:  # the peer may be gone already
        log.debug("close failed: %s", exc)


async def _open_session(
    websocket: WebSocket, state: CoordinatorState, first: AgentMessage, principal: Principal
) -> ContributorSession:
    if isinstance(first, Hello):
        if first.protocol_version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"unsupported protocol version {first.protocol_version}", CLOSE_PROTOCOL_ERROR
            )
        await _check_identity(state, first.node_id, principal)
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
    session = ContributorSession(
        hello.node_id, hello.name, websocket, legacy=legacy, deps=hello.deps, slots=hello.slots
    )
    session.start()
    await state.store.contributors.connected(
        hello, principal.name if principal.authenticated else None
    )
    # Reattach before registering, so the session is never seen idle while it runs a job.
    kept, abandon = state.scheduler.reattach(session, hello.running)
    replaced = state.sessions.add(session)
    if replaced is not None:
        replaced.close(1000, "replaced by a new connection")
    state.scheduler.joined(session)
    if not legacy:
        acked = {job_id: await state.store.stored_last_seq(job_id) for job_id in kept}
        session.send(
            Welcome(
                contributor_id=session.contributor_id,
                heartbeat_interval_s=state.settings.heartbeat_interval_s,
                acked=acked,
            )
        )
    for message in abandon:
        session.send(message)
    log.info(
        "contributor %s (%s) connected%s",
        session.name,
        session.contributor_id,
        f", resuming {sorted(kept)}" if kept else "",
    )
    await state.scheduler.offer_idle()
    return session


async def _check_identity(state: CoordinatorState, node_id: str, principal: Principal) -> None:
    """A node id belongs to the token that first registered it: no takeover by another."""
    if not principal.authenticated:
        return
    owner = await state.store.contributors.token_of(node_id)
    if owner is not None and owner != principal.name:
        raise ProtocolError("this node id is registered to another token", CLOSE_FORBIDDEN)


async def _handle(
    state: CoordinatorState, session: ContributorSession, message: AgentMessage
) -> None:
    if session.legacy:
        message = await _from_seed(state, session, message)
    if isinstance(message, Heartbeat):
        state.scheduler.heartbeat(session, message)
    elif isinstance(message, Log):
        await _handle_log(state, session, message)
    elif isinstance(message, Done):
        await _handle_done(state, session, message)
    else:
        raise ProtocolError("hello is only allowed as the first message")


async def _from_seed(
    state: CoordinatorState, session: ContributorSession, message: AgentMessage
) -> AgentMessage:
    """The edge adapter: a seed agent's reports name no job, lease or sequence number.

    It runs one job at a time, so they are about the one lease it holds; a seed ``line``
    becomes the record after the last one stored.
    """
    if not isinstance(message, Log | Done):
        return message
    leases = state.scheduler.leases_of(session)
    if len(leases) != 1:
        return message.model_copy(update={"job_id": None, "lease_id": None})
    lease = leases[0]
    if isinstance(message, Done):
        return message.model_copy(update={"job_id": lease.job_id, "lease_id": lease.lease_id})
    records = list(message.records)
    if message.line is not None:
        seq = await state.store.stored_last_seq(lease.job_id) + 1
        records = [LogRecord(seq=seq, stream=message.stream, data=message.line + "\n")]
    return Log(job_id=lease.job_id, lease_id=lease.lease_id, records=records)


def _refuse_report(session: ContributorSession, job_id: str | None) -> None:
    """A report on a job this session holds no lease on: tell the agent to drop it."""
    log.warning("refused a report on job %s from %s: lease not held", job_id, session.name)
    if job_id is not None and not session.legacy:
        session.send(Abandon(job_id=job_id, reason="lease expired or job ended"))


async def _handle_log(state: CoordinatorState, session: ContributorSession, message: Log) -> None:
    job_id = message.job_id
    lease = job_id and state.scheduler.lease_of(job_id, message.lease_id, session.contributor_id)
    if not lease:
        _refuse_report(session, job_id)
        return
    result = await state.store.append_logs(
        lease.job_id, lease.lease_id, message.records, state.settings.max_log_bytes_per_job
    )
    if isinstance(result, Violation):
        raise ReportRefused(result.reason, lease.job_id)
    if result is None:
        _refuse_report(session, lease.job_id)
        return
    state.hub.records_added(lease.job_id)
    if not session.legacy:
        session.send(Ack(job_id=lease.job_id, seq=result))


async def _handle_done(state: CoordinatorState, session: ContributorSession, message: Done) -> None:
    job_id = message.job_id
    lease = job_id and state.scheduler.lease_of(job_id, message.lease_id, session.contributor_id)
    if not lease:
        _refuse_report(session, job_id)
        return
    status = message.status
    if status is None or not status.is_terminal:
        status = JobStatus.SUCCEEDED if message.exit_code in (None, 0) else JobStatus.FAILED
    result = await state.scheduler.finish(
        lease,
        status,
        exit_code=message.exit_code,
        error=message.error,
        last_seq=message.last_seq,
    )
    if isinstance(result, Violation):
        raise ReportRefused(result.reason, lease.job_id)
    if not session.legacy:
        # Stored (or already over): either way the agent can forget the job now. The ended
        # row carries its last sequence number; only a refused ending needs a read.
        if result is None:
            seq = await state.store.stored_last_seq(lease.job_id)
        else:
            seq = result.last_seq
        session.send(Ack(job_id=lease.job_id, seq=seq, done=True))
