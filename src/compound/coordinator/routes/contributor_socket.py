"""WS /ws/contributor: agents say hello, heartbeat, stream logs and report job endings.

The handler is thin: it reads and parses frames, lets the connection's protocol state
machine (``contributor_protocol``) decide what each means, and hands reports to the
scheduler, which checks them against the job's lease as it stores them. A report that breaks
the rules closes the socket with 1008 and the job is handled as its contributor's loss.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from fastapi import WebSocket
from pydantic import BaseModel

from compound.coordinator.routes.access import require_on_socket
from compound.coordinator.routes.contributor_protocol import (
    ContributorConversation,
    Report,
    ReportRefused,
    ending_status,
)
from compound.coordinator.routes.socket import PeerGone, receive_text_or_bytes
from compound.coordinator.scheduling.sessions import ContributorSession
from compound.coordinator.state import CoordinatorState
from compound.coordinator.storage.reports import Violation
from compound.coordinator.storage.tokens import Principal
from compound.protocol import (
    CLOSE_FORBIDDEN,
    Availability,
    Done,
    Heartbeat,
    Hello,
    Log,
    ProtocolError,
    parse_agent_message,
)
from compound.protocol.auth import Role

log = logging.getLogger("compound.coordinator")

# A connection must introduce itself (or, a seed agent, say anything) within this time.
FIRST_MESSAGE_TIMEOUT_S = 10.0


async def contributor_endpoint(websocket: WebSocket, state: CoordinatorState) -> None:
    await websocket.accept()
    principal = await require_on_socket(websocket, Role.CONTRIBUTOR)
    if principal is None:
        return
    session: ContributorSession | None = None
    conversation = ContributorConversation()
    try:
        first = parse_agent_message(
            await asyncio.wait_for(receive_text_or_bytes(websocket), FIRST_MESSAGE_TIMEOUT_S)
        )
        hello, first_report = conversation.open(first, f"seed-{uuid.uuid4().hex[:12]}")
        session = await _open_session(websocket, state, conversation, hello, principal)
        # Silence is counted from when we start reading it, not from before the hello's writes.
        state.sessions.heard(session)
        if first_report is not None:
            await _handle(state, session, conversation, first_report)
        while not session.closed:
            message = parse_agent_message(await receive_text_or_bytes(websocket))
            state.sessions.heard(session)
            state.scheduler.renew(session)
            await _handle(state, session, conversation, conversation.report(message))
    except (PeerGone, TimeoutError):
        pass
    except ProtocolError as exc:
        await _refuse(websocket, state, session, exc)
    finally:
        if session is not None:
            await state.scheduler.contributor_gone(session)
            session.closed = True
            await session.wait_closed()
            log.info(
                "contributor %s disconnected",
                session.name,
                extra={"contributor_id": session.contributor_id},
            )


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
        await state.scheduler.report_refused(session.contributor_id, exc.job_id)


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await asyncio.wait_for(websocket.close(code=code, reason=reason[:120]), 5.0)
    except Exception as exc:  # the peer may be gone already
        log.debug("close failed: %s", exc)


def _send(session: ContributorSession, message: BaseModel | None) -> None:
    if message is not None:
        session.send(message)


async def _open_session(
    websocket: WebSocket,
    state: CoordinatorState,
    conversation: ContributorConversation,
    hello: Hello,
    principal: Principal,
) -> ContributorSession:
    await _register(state, hello, principal)
    session = ContributorSession(
        hello.node_id,
        hello.name,
        websocket,
        legacy=conversation.legacy,
        deps=hello.deps,
        slots=hello.slots,
        lending=hello.lending,
        lending_reason=hello.lending_reason,
    )
    session.start()
    # Reattach before registering, so the session is never seen idle while it runs a job.
    await state.scheduler.adopt_leases(session.contributor_id)
    kept, abandon, unlisted = state.scheduler.reattach(session, hello.running)
    replaced = state.sessions.add(session)
    if replaced is not None:
        replaced.close(1000, "replaced by a new connection")
    state.scheduler.joined(session)
    if not conversation.legacy:
        acked = {job_id: await state.logs.last_seq(job_id) for job_id in kept}
        interval_s = state.settings.heartbeat_interval_s
        _send(session, conversation.welcome(session.contributor_id, interval_s, acked))
        for cancel in state.scheduler.cancels_for(kept):
            _send(session, cancel)  # asked for while it was away: it may not have heard
    for message in abandon:
        _send(session, conversation.abandon(message.job_id, message.lease_id, message.reason))
    await state.scheduler.give_back(unlisted, "its contributor restarted without it")
    log.info(
        "contributor %s (%s) connected%s",
        session.name,
        session.contributor_id,
        f", resuming {sorted(kept)}" if kept else "",
        extra={"contributor_id": session.contributor_id},
    )
    await state.scheduler.offer_idle()
    return session


async def _register(state: CoordinatorState, hello: Hello, principal: Principal) -> None:
    """A node id belongs to the token that first registered it: no takeover by another; and
    a contributor token registers at most ``max_nodes_per_token`` of them (admins: any)."""
    token_name = principal.name if principal.authenticated else None
    limit = None if principal.is_admin else state.settings.max_nodes_per_token
    refusal = await state.contributors.connected(hello, token_name, limit)
    if refusal is not None:
        raise ProtocolError(refusal, CLOSE_FORBIDDEN)


async def _handle(
    state: CoordinatorState,
    session: ContributorSession,
    conversation: ContributorConversation,
    report: Report,
) -> None:
    if conversation.legacy:
        report = await _from_seed(state, session, conversation, report)
    if isinstance(report, Heartbeat):
        dropped = state.scheduler.heartbeat(session, report)
        await state.scheduler.give_back(dropped, "its contributor stopped running it")
    elif isinstance(report, Availability):
        log.info("contributor %s: %s (%s)", session.name, report.lending, report.reason or "-")
        await state.scheduler.set_lending(session, report.lending, report.reason, report.slots)
    elif isinstance(report, Log):
        await _handle_log(state, session, conversation, report)
    else:
        await _handle_done(state, session, conversation, report)


async def _from_seed(
    state: CoordinatorState,
    session: ContributorSession,
    conversation: ContributorConversation,
    report: Report,
) -> Report:
    held = [
        (lease.job_id, lease.lease_id)
        for lease in state.scheduler.leases_of(session.contributor_id)
    ]
    next_seq = None
    if conversation.needs_next_seq(report) and len(held) == 1:
        next_seq = await state.logs.last_seq(held[0][0]) + 1
    return conversation.from_seed(report, held, next_seq)


def _refuse_report(
    session: ContributorSession,
    conversation: ContributorConversation,
    job_id: str | None,
    lease_id: str | None,
) -> None:
    """A report under a lease this session does not hold: tell the agent to drop that run
    (only that one: the job may be its again under a newer lease)."""
    log.warning("refused a report on job %s from %s: lease not held", job_id, session.name)
    _send(session, conversation.abandon(job_id, lease_id))


async def _handle_log(
    state: CoordinatorState,
    session: ContributorSession,
    conversation: ContributorConversation,
    message: Log,
) -> None:
    job_id, lease_id = message.job_id, message.lease_id
    if job_id is None or lease_id is None:
        _refuse_report(session, conversation, job_id, lease_id)
        return
    result = await state.scheduler.report_logs(
        session.contributor_id, job_id, lease_id, list(message.records)
    )
    if isinstance(result, Violation):
        raise ReportRefused(result.reason, job_id)
    if result is None:
        _refuse_report(session, conversation, job_id, lease_id)
        return
    _send(session, conversation.ack(job_id, result))


async def _handle_done(
    state: CoordinatorState,
    session: ContributorSession,
    conversation: ContributorConversation,
    message: Done,
) -> None:
    job_id, lease_id = message.job_id, message.lease_id
    if job_id is None or lease_id is None:
        _refuse_report(session, conversation, job_id, lease_id)
        return
    if message.handback is not None:
        handed = await state.scheduler.hand_back(
            session.contributor_id, job_id, lease_id, message.handback, message.last_seq
        )
        if isinstance(handed, Violation):
            raise ReportRefused(handed.reason, job_id)
        if handed is None:
            _refuse_report(session, conversation, job_id, lease_id)
            return
        _send(session, conversation.ack(job_id, handed.last_seq, done=True))
        return
    result = await state.scheduler.finish(
        session.contributor_id,
        job_id,
        lease_id,
        ending_status(message),
        exit_code=message.exit_code,
        error=message.error,
        last_seq=message.last_seq,
    )
    if isinstance(result, Violation):
        raise ReportRefused(result.reason, job_id)
    if result is None:
        _refuse_report(session, conversation, job_id, lease_id)
        return
    # The ended row carries its last sequence number: the agent can forget the job now.
    _send(session, conversation.ack(job_id, result.last_seq, done=True))
