"""TLS handshakes under the connection guard: counted from accept, bounded in time.

Handed an SSL context, the event loop would do the handshake before our protocol hears of the
connection, with a 60 s timeout of its own and outside the connection cap: a client that
connects and sends nothing (or a few bytes) would hold a descriptor for a minute, as many
times as it likes. So uvicorn serves plain TCP, and each connection starts as a
`TlsAcceptor`: counted by the guard at once (as waiting for its headers, so the oldest is
the first dropped at the cap), it runs the handshake with `loop.start_tls` bounded by
`header_timeout_s`, then hands the TLS transport to the HTTP protocol, which counts it as
any connection. A failed or slow handshake ends in an abort.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, ClassVar, cast

from compound.coordinator.serving.connections import ConnectionGuard

log = logging.getLogger("compound.coordinator")


class TlsAcceptor(asyncio.Protocol):
    """One connection from accept to the end of its TLS handshake. uvicorn makes it with the
    keyword arguments of its HTTP protocol, which is made with them once the handshake is
    done (see `tls_protocol_class`)."""

    guard: ClassVar[ConnectionGuard]
    context: ClassVar[ssl.SSLContext]
    http: ClassVar[Callable[..., asyncio.Protocol]]
    transport: asyncio.Transport  # from connection_made on

    def __init__(self, **http_kwargs: Any) -> None:
        self._http_kwargs = http_kwargs
        self._handshake: asyncio.Task[None] | None = None
        # What came before the TLS layer was in place (uvloop starts reading as soon as
        # connection_made returns): the start of the ClientHello, handed on, not lost.
        self._early = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they are ones.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        if not self.guard.admit(self):
            transport.abort()
            return
        self.guard.waiting(self)
        self._handshake = asyncio.get_running_loop().create_task(self._start_tls(transport))

    def data_received(self, data: bytes) -> None:
        self._early += data
        self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # gone before the handshake began: close

    def connection_lost(self, exc: Exception | None) -> None:
        # Only before start_tls took the transport over; afterwards it reports the loss.
        self._forget()

    def refuse(self, status: int, detail: str) -> None:
        """Dropped at the connection cap: no HTTP answer is possible before the handshake."""
        # Its place is free at once: the newcomer that pushed it out takes it.
        self._forget()
        self.transport.abort()
        if self._handshake is not None:
            self._handshake.cancel()

    async def _start_tls(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        protocol = self.http(**self._http_kwargs)
        # Runs after start_tls has put its TLS protocol in place (it does so before its
        # first await) and before that protocol starts the handshake or reads again.
        loop.call_soon(self._hand_on_early_bytes)
        try:
            tls = await loop.start_tls(
                transport,
                protocol,
                self.context,
                server_side=True,
                ssl_handshake_timeout=self.guard.header_timeout_s,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("TLS handshake failed: %r", exc)
            transport.abort()
            return
        finally:
            self._forget()
        if tls is None:  # the loop had no TLS to offer: cannot happen with a context
            transport.abort()
            return
        protocol.connection_made(tls)

    def _hand_on_early_bytes(self) -> None:
        tls: Any = self.transport.get_protocol()
        if not self._early or tls is self or self.transport.is_closing():
            return
        data, self._early = bytes(self._early), bytearray()
        if hasattr(tls, "get_buffer"):
            while data:  # a buffered protocol (both loops' TLS protocols are)
                buffer = memoryview(tls.get_buffer(len(data)))
                size = min(len(buffer), len(data))
                buffer[:size] = data[:size]
                tls.buffer_updated(size)
                data = data[size:]
        else:
            tls.data_received(data)

    def _forget(self) -> None:
        self.guard.done_waiting(self)
        self.guard.release(self.transport)


def tls_protocol_class(
    http: Callable[..., asyncio.Protocol], guard: ConnectionGuard, context: ssl.SSLContext
) -> type[TlsAcceptor]:
    """The protocol class for `uvicorn.Config(http=...)` when serving TLS: each connection
    is a `TlsAcceptor` until its handshake is done, then an ``http``."""
    attributes = {"guard": guard, "context": context, "http": staticmethod(http)}
    return type("TlsAccept", (TlsAcceptor,), attributes)
