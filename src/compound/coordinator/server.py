"""Running the coordinator: uvicorn on a socket we bind ourselves, the real port announced."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import replace

import uvicorn

from compound.coordinator.app import create_app
from compound.coordinator.routes.browser_guard import is_loopback_host
from compound.coordinator.serving import log_repeats
from compound.coordinator.serving.collector import CollectorPolicy
from compound.coordinator.serving.connections import ConnectionGuard, protocol_classes
from compound.coordinator.serving.fd_limit import connection_cap, raise_fd_limit
from compound.coordinator.serving.open_sockets import OpenSockets
from compound.coordinator.serving.shutdown import ShutdownBudget, ShutdownServer
from compound.coordinator.serving.tls_accept import tls_protocol_class
from compound.coordinator.settings import CoordinatorSettings
from compound.coordinator.storage.backend import DatabaseUrlError, check_url
from compound.coordinator.storage.data_dir import DataDirError, prepare_data_dir
from compound.coordinator.storage.tokens import tokens_exist
from compound.protocol import MAX_MESSAGE_BYTES
from compound.tls import TlsConfigError, server_ssl_context

log = logging.getLogger("compound.coordinator")

# Pending connections the kernel queues for us (it caps this at net.core.somaxconn): a burst
# of connects past it costs each extra client a 1 s SYN retry.
LISTEN_BACKLOG = 4096
# Seconds an idle kept-alive HTTP connection stays open (uvicorn's timer).
KEEP_ALIVE_S = 5
# WebSockets that get no keepalive pings: contributors heartbeat every few seconds and the
# scheduler closes one silent for lease_timeout_s, which covers a dead TCP peer too.
UNPINGED_PATHS = frozenset({"/ws/contributor"})
# Loggers whose handlers get the repeated-message filter; "" is the root.
FILTERED_LOGGERS = ("", "uvicorn", "uvicorn.access")


class StartupError(Exception):
    """A sentence for the operator: why the coordinator cannot start."""


def serve(settings: CoordinatorSettings, log_level: str = "info", json_logs: bool = False) -> int:
    """Serve until stopped; returns the process exit code. ``json_logs``: uvicorn's loggers
    keep the root's handler (the caller's JSON lines) instead of their own text ones."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    # Whatever this process creates (the database, its -wal and -shm) is for us alone.
    os.umask(0o077)
    settings = _fit_to_fd_limit(settings)
    try:
        if settings.database_url is not None:
            check_url(settings.database_url)
        prepare_data_dir(settings.data_dir, settings.database_path)
        _check_exposure(settings)
        tls = _tls_context(settings)
        listener = _bind(settings.host, settings.port)
    except (DataDirError, StartupError, TlsConfigError, DatabaseUrlError) as exc:
        print(f"compound coordinator: {exc}", file=sys.stderr)
        return 1
    # Port 0 means "any free port": the app knows the one it got (it names the coordinator).
    settings = replace(settings, port=listener.getsockname()[1])
    open_sockets = OpenSockets()
    budget = ShutdownBudget()
    guard = ConnectionGuard(
        settings.max_connections, settings.header_timeout_s, settings.body_timeout_s
    )
    http, ws = protocol_classes(guard, UNPINGED_PATHS)
    app = create_app(settings, open_sockets)
    app.state.connections = guard  # counted by /metrics
    config = uvicorn.Config(
        app,
        log_level=log_level,
        log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
        # TLS is ours, not the event loop's: the handshake is counted and bounded (see
        # tls_accept); the context was built (and checked) above, so a bad certificate or
        # key is one sentence before anything listens.
        http=http if tls is None else tls_protocol_class(http, guard, tls),
        ws=ws,
        ws_max_size=MAX_MESSAGE_BYTES,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        access_log=False,
        # No proxy we know of stands in front: X-Forwarded-For from any loopback client
        # would otherwise rename the client, whose address names open mode's jobs and
        # counts their quota (and the middleware ran on every request).
        proxy_headers=False,
        lifespan="on",
        backlog=LISTEN_BACKLOG,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=budget.graceful_s,
    )
    # uvicorn.Config has configured its loggers by now.
    log_repeats.install(log_repeats.RepeatFilter(), FILTERED_LOGGERS)
    scheme = "http" if tls is None else "https"
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        return runner.run(_serve(ShutdownServer(config, open_sockets, budget), listener, scheme))


def _tls_context(settings: CoordinatorSettings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None:
        if settings.tls_key_file is not None:
            raise StartupError("--tls-key needs --tls-cert (the certificate it belongs to)")
        return None
    return server_ssl_context(settings.tls_cert_file, settings.tls_key_file)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it): accepting a burst of thousands
    of connections costs a fraction of the pure-Python loop's time, so /healthz and the
    other clients are not kept waiting behind it."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _check_exposure(settings: CoordinatorSettings) -> None:
    """Without tokens, whoever reaches the coordinator may run code on every contributor:
    that is only allowed on loopback, or when the operator insists."""
    if is_loopback_host(settings.host) or tokens_exist(settings.data_dir, settings.database_url):
        return
    if not settings.insecure_open:
        raise StartupError(
            f"refusing to listen on {settings.host} without access tokens: create one with "
            f"`compound token create --data-dir {settings.data_dir} --role admin --name NAME` "
            "(or pass --insecure-open to run open anyway)"
        )
    log.warning(
        "INSECURE: listening on %s with no access tokens: anyone who reaches this address "
        "can run code on every contributor and read every job",
        settings.host,
    )


def _fit_to_fd_limit(settings: CoordinatorSettings) -> CoordinatorSettings:
    fd_limit = raise_fd_limit()
    allowed = connection_cap(settings.max_connections, fd_limit, LISTEN_BACKLOG)
    if settings.max_connections <= 0:
        log.info("up to %d connections at once (open-file limit %d)", allowed, fd_limit)
        return replace(settings, max_connections=allowed)
    if settings.max_connections <= allowed:
        return settings
    log.warning(
        "--max-connections %d lowered to %d to stay within the open-file limit (%d)",
        settings.max_connections,
        allowed,
        fd_limit,
    )
    return replace(settings, max_connections=allowed)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    listener.listen(LISTEN_BACKLOG)
    return listener


async def _serve(server: uvicorn.Server, listener: socket.socket, scheme: str) -> int:
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if task.done():
            return _exit_code(task)
        await asyncio.sleep(0.02)
    # Port 0 means "any free port": tell whoever started us which one we got.
    host, port = listener.getsockname()[:2]
    print(f"Compound coordinator listening on {scheme}://{host}:{port}", flush=True)
    # Full garbage collections stop the loop for seconds at 10,000 connections: see collector.
    collector = CollectorPolicy()
    collector.start()
    try:
        await asyncio.wait({task})
    finally:
        await collector.stop()
    return _exit_code(task)


def _exit_code(task: asyncio.Task[None]) -> int:
    # uvicorn reports a failed start-up (logged already) as SystemExit.
    error = task.exception()
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else 1
    if error is not None:
        raise error
    return 0
