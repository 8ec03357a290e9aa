"""A uvicorn server whose SIGTERM/SIGINT finishes within a fixed budget, whatever clients do.

uvicorn's own shutdown closes WebSockets with 1012 and then waits, with no limit by
default, for every connection and handler to end: one client that never reads, or one
handler waiting on a queued job, holds the process for ever. Here a stop signal first
closes every WebSocket with 1001 (`OpenSockets.close_all`), then lets uvicorn stop with a
bounded graceful period; a watchdog thread ends the process if anything still holds it
when the budget is spent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from dataclasses import dataclass
from types import FrameType

import uvicorn

from compound.coordinator.serving.open_sockets import CLOSE_GOING_AWAY, OpenSockets

log = logging.getLogger("compound.coordinator")

SHUTDOWN_REASON = "coordinator shutting down"


@dataclass(frozen=True)
class ShutdownBudget:
    """How the time between the stop signal and the exit is spent, in seconds."""

    # Closing WebSockets, then cancelling their handlers (plus a short unwinding grace).
    sockets_s: float = 2.0
    # uvicorn's wait for open requests before it cancels them (`timeout_graceful_shutdown`).
    graceful_s: int = 4
    # After this, the process exits whatever is still running.
    total_s: float = 9.5


class ShutdownServer(uvicorn.Server):
    """uvicorn.Server that closes WebSockets with 1001 before stopping, within a budget."""

    def __init__(
        self, config: uvicorn.Config, sockets: OpenSockets, budget: ShutdownBudget
    ) -> None:
        super().__init__(config)
        self.open_sockets = sockets
        self.budget = budget
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._closer: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler: only note the signal and schedule the work.
        if self._stopping or self._loop is None:
            super().handle_exit(sig, frame)  # a second signal: uvicorn's force-quit rules
            return
        self._stopping = True
        self._captured_signals.append(sig)  # re-raised by uvicorn once it has stopped
        _start_watchdog(self.budget.total_s)
        self._loop.call_soon_threadsafe(self._begin_stop)

    def _begin_stop(self) -> None:
        self._closer = asyncio.create_task(self._close_sockets_then_exit())

    async def _close_sockets_then_exit(self) -> None:
        try:
            await self.open_sockets.close_all(
                CLOSE_GOING_AWAY, SHUTDOWN_REASON, self.budget.sockets_s
            )
        except Exception:
            log.exception("closing WebSockets for the shutdown failed")
        finally:
            self.should_exit = True


def _start_watchdog(after_s: float) -> None:
    timer = threading.Timer(after_s, _exit_now, args=(after_s,))
    timer.daemon = True
    timer.start()


def _exit_now(after_s: float) -> None:
    log.error("shutdown still not finished after %.1f s; exiting now", after_s)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(1)
