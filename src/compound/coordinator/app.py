"""Builds the coordinator's ASGI app: state in the lifespan, routes, pages, error answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from compound import __version__
from compound.coordinator.follow.followers import FollowerLimits
from compound.coordinator.routes import api, audit_route, metrics_route, seed
from compound.coordinator.routes import files as files_api
from compound.coordinator.routes.access import AccessMiddleware
from compound.coordinator.routes.api import INTERNAL_ERROR
from compound.coordinator.routes.browser_guard import BrowserGuardMiddleware
from compound.coordinator.routes.follow_route import FollowRouteMiddleware
from compound.coordinator.routes.submission import describe_error
from compound.coordinator.routes.submit_route import SubmitRouteMiddleware
from compound.coordinator.scheduling.cluster import ClusterHub, ClusterLink
from compound.coordinator.scheduling.cluster_view import ClusterView, coordinator_name
from compound.coordinator.scheduling.hub import ChangeHub
from compound.coordinator.scheduling.quotas import Quotas, store_limits
from compound.coordinator.scheduling.scheduler import Scheduler
from compound.coordinator.scheduling.sessions import SessionRegistry
from compound.coordinator.serving.metrics import Metrics, MetricsMiddleware
from compound.coordinator.serving.open_sockets import OpenSockets, OpenSocketsMiddleware
from compound.coordinator.settings import CoordinatorSettings
from compound.coordinator.state import CoordinatorState
from compound.coordinator.storage.audit import AuditLog
from compound.coordinator.storage.blobs import BlobStore
from compound.coordinator.storage.cluster_rows import ClusterLeaseRows
from compound.coordinator.storage.contributors import ContributorStore
from compound.coordinator.storage.database import Database
from compound.coordinator.storage.files import FileStore
from compound.coordinator.storage.jobs import JobStore
from compound.coordinator.storage.log_tail import NoTails
from compound.coordinator.storage.logs import LogStore
from compound.coordinator.storage.notify_channel import NotifyChannel
from compound.coordinator.storage.peers import live_coordinators
from compound.coordinator.storage.retention import Retention
from compound.coordinator.storage.tokens import REFRESH_S, TokenBook
from compound.page_headers import PageHeaders
from compound.protocol import CLOSE_UNAUTHORIZED

log = logging.getLogger("compound.coordinator")


def web_directory() -> Path:
    return Path(str(resources.files("compound") / "web"))


def create_app(settings: CoordinatorSettings, open_sockets: OpenSockets | None = None) -> FastAPI:
    """The app; its WebSockets are registered in `open_sockets` so a shutdown can close them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = await Database.open(settings.database_path, settings.database_url)
        limits = store_limits(settings)
        # PostgreSQL: other coordinators may share the database (scheduling/cluster.py).
        shared = not database.is_sqlite
        tails = NoTails() if shared else None
        logs = LogStore(database.reader, database.writer, limits, observer=metrics, tails=tails)
        jobs = JobStore(
            database.engine,
            database.reader,
            database.writer,
            logs,
            settings.retention_s,
            limits,
            database.size_bytes(),
            observer=metrics,
        )
        name = coordinator_name(settings.host, settings.port)
        contributors = ContributorStore(
            database.engine, database.reader, coordinator=name if shared else None
        )
        blobs = BlobStore(settings.blobs_dir)
        files = FileStore(database.reader, database.writer, limits)
        retention = Retention(
            settings.retention_s,
            settings.retention_sweep_interval_s,
            logs,
            files,
            blobs,
            settings.database_path if database.is_sqlite else None,
        )
        sessions = SessionRegistry()
        hub = ClusterHub() if shared else ChangeHub()
        cluster_rows = ClusterLeaseRows(database.engine, database.reader) if shared else None
        scheduler = Scheduler(settings, jobs, logs, contributors, sessions, hub, cluster_rows)
        cluster = (
            ClusterView(name, partial(live_coordinators, database.reader), cluster_rows)
            if shared
            else ClusterView(name)
        )
        quotas = Quotas(settings, scheduler.count_queued)
        followers = FollowerLimits(settings.max_followers_per_job, settings.max_followers_total)
        tokens = TokenBook(database.token_reader())
        await tokens.refresh()
        app.state.compound = CoordinatorState(
            settings,
            jobs,
            logs,
            contributors,
            sessions,
            hub,
            scheduler,
            followers,
            tokens,
            blobs,
            files,
            retention,
            quotas,
            metrics,
            AuditLog(database.engine, database.reader),
            cluster,
        )
        await scheduler.start()
        link = None
        if isinstance(hub, ClusterHub) and database.url is not None:
            link = ClusterLink(NotifyChannel(database.url, name), hub, scheduler)
            link.start()
        cluster.start()
        retention.start()
        refresher = asyncio.create_task(_refresh_tokens(tokens, sockets), name="tokens")
        try:
            yield
        finally:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
            await retention.stop()
            await cluster.stop()
            if link is not None:
                await link.stop()
            await tokens.close()
            await scheduler.stop()
            await database.close()

    # Built before the lifespan: the outermost middleware counts every request with it.
    metrics = Metrics()
    app = FastAPI(
        title="Compound coordinator",
        version=__version__,
        description="Queue Python scripts, route them to contributors, stream their logs.",
        lifespan=lifespan,
    )
    # Innermost: the hot routes, answered ahead of FastAPI's router (see submit_route and
    # follow_route).
    app.add_middleware(SubmitRouteMiddleware)
    app.add_middleware(FollowRouteMiddleware)
    # Only origins named with --allow-origin may read answers from another origin. With none
    # named there is nothing to allow (the browser guard refuses other origins outright),
    # and the middleware would still wrap every answer to add "Vary: Origin".
    if settings.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=sorted(settings.allowed_origins),
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # Every WebSocket, whichever endpoint serves it, is known to the shutdown (and, by its
    # token, to a revocation).
    sockets = OpenSockets() if open_sockets is None else open_sockets
    app.state.open_sockets = sockets  # counted by /metrics
    app.add_middleware(OpenSocketsMiddleware, sockets=sockets)
    # Outermost last: the browser guard first, then who is asking.
    app.add_middleware(AccessMiddleware)
    app.add_middleware(
        BrowserGuardMiddleware,
        allowed_origins=settings.allowed_origins,
        check_host=not settings.insecure_open,
    )
    # Outermost of all: refusals by the guards below are counted too.
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(seed.router)
    app.include_router(api.router)
    app.include_router(files_api.router)
    app.include_router(metrics_route.router)
    app.include_router(audit_route.router)
    web = web_directory()
    if web.is_dir():
        # The pages and their files carry a strict CSP (compound.page_headers).
        app.mount("/", PageHeaders(StaticFiles(directory=web, html=True)), name="web")
    return app


async def _refresh_tokens(tokens: TokenBook, sockets: OpenSockets) -> None:
    """Pick up tokens created or revoked from the command line; close revoked sockets."""
    while True:
        await asyncio.sleep(REFRESH_S)
        try:
            revoked = await tokens.refresh()
        except Exception:
            log.exception("reading the tokens failed")
            continue
        if revoked:
            closed = await sockets.close_tokens(
                set(revoked), CLOSE_UNAUTHORIZED, "token revoked", timeout_s=5
            )
            log.warning("token(s) %s revoked; closed %d socket(s)", ", ".join(revoked), closed)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    error = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    return JSONResponse({"detail": describe_error(error, "request")}, status_code=422)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("error answering %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)
