"""Jobs' files over HTTP: input tars up and down, output files (artifacts) up and down.

Bodies are streamed to disk while hashed and counted, never held in memory; a declared or
counted size past the limit is answered with 413 before anything is stored. Inputs are
fetched, and outputs returned, only by the contributor holding the job's lease (its token
and the lease id in ``X-Compound-Lease``). Output files are always served as attachments
of type application/octet-stream: a user's HTML never renders on the coordinator's origin.
Both count against the submitter's file quota (``storage.usage``): past it, 413 and a
sentence, checked before the body is read (against the declared size) and again in the
transaction that records the files.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse

from compound.coordinator.routes.access import may_see, require
from compound.coordinator.routes.artifact_tar import ArtifactLimits, BadArtifacts, extract
from compound.coordinator.state import CoordinatorState, get_state
from compound.coordinator.storage.blobs import SHA256, Received, TooBig
from compound.coordinator.storage.job_rows import JobRow
from compound.coordinator.storage.tokens import Principal
from compound.coordinator.storage.usage import QuotaExceeded
from compound.protocol import Artifact, InputsRef
from compound.protocol.auth import Role
from compound.protocol.responses import ArtifactList, ArtifactsStored

log = logging.getLogger("compound.coordinator")

router = APIRouter()
State = Annotated[CoordinatorState, Depends(get_state)]
LEASE_HEADER = "x-compound-lease"
SHA256_HEADER = "x-compound-sha256"
# Tar headers and padding on top of the files' bytes: at most 1.5 KiB a file, plus the end.
_TAR_OVERHEAD_PER_FILE = 1536
_TAR_OVERHEAD = 1024 * 1024
# The bodies are read by hand (streamed, bounded); this documents them.
_TAR_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_SERVED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cache-Control": "private, no-store",
}


def _declared_too_big(request: Request, limit: int) -> bool:
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


async def _receive(
    request: Request,
    state: CoordinatorState,
    principal: Principal,
    limit: int,
    what: str,
    too_big: HTTPException | None = None,
) -> Received:
    """The request body as a temporary blob, its hash checked against X-Compound-SHA256
    when given; 413 past ``limit`` (declared or counted; ``too_big`` says why, if not the
    limit itself), 422 on a mismatch, 401 (nothing kept) when ``principal``'s token is
    revoked while the body streams."""
    too_big = too_big or HTTPException(413, f"the {what} are larger than the {_mib(limit)} limit")
    if _declared_too_big(request, limit):
        raise too_big
    expected = request.headers.get(SHA256_HEADER)
    if expected is not None and not SHA256.fullmatch(expected):
        raise HTTPException(400, f"{SHA256_HEADER} must be 64 lowercase hex digits")
    try:
        received = await state.blobs.receive(_body(request, state, principal), limit)
    except TooBig:
        raise too_big from None
    try:
        _check_not_revoked(state, principal)
    except HTTPException:
        received.path.unlink(missing_ok=True)
        raise
    if expected is not None and not hmac.compare_digest(expected, received.sha256):
        received.path.unlink(missing_ok=True)
        raise HTTPException(422, f"the {what} do not match their SHA-256 (damaged in transit?)")
    return received


async def _body(
    request: Request, state: CoordinatorState, principal: Principal
) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        # An upload may outlast its token: a revocation ends it (the blob store then
        # removes what came), as it closes the token's sockets.
        _check_not_revoked(state, principal)
        if chunk:
            yield chunk


def _check_not_revoked(state: CoordinatorState, principal: Principal) -> None:
    if principal.authenticated and principal.name in state.tokens.revoked:
        log.warning("an upload by %s stopped: its token was revoked", principal.name)
        raise HTTPException(401, "the token was revoked during the upload")


def _mib(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KiB"
    return f"{size / (1024 * 1024):.4g} MiB"


# ------------------------------------------------------------------ inputs


@router.put("/api/v1/inputs", status_code=201, response_model=InputsRef, openapi_extra=_TAR_BODY)
async def upload_inputs(request: Request, state: State) -> InputsRef:
    """Store a job's input files (one tar) once by content; name it in a submission."""
    principal = require(request, Role.SUBMITTER)
    limit = state.settings.max_input_bytes
    over_quota = None
    room = await state.files.file_room(principal.name)
    if room.bytes < limit and not await _uploaded_before(request, state, principal):
        limit = max(0, room.bytes)
        over_quota = HTTPException(
            413,
            f"the input files are larger than the {_mib(limit)} you may still store: {room.reason}",
        )
    received = await _receive(request, state, principal, limit, "input files", over_quota)
    async with state.blobs.lock:
        try:
            await state.files.record_upload(received.sha256, principal.name, received.size)
        except QuotaExceeded as exc:
            received.path.unlink(missing_ok=True)
            raise HTTPException(413, str(exc)) from None
        state.blobs.keep(received)
    log.info("inputs %s (%d bytes) from %s", received.sha256[:12], received.size, principal.name)
    return InputsRef(sha256=received.sha256, size=received.size)


async def _uploaded_before(request: Request, state: CoordinatorState, principal: Principal) -> bool:
    """Whether the announced bytes (X-Compound-SHA256) are an upload of this submitter's
    already: sending them again costs no quota."""
    expected = request.headers.get(SHA256_HEADER)
    if expected is None or not SHA256.fullmatch(expected):
        return False
    return await state.files.uploaded_by(expected, principal.name) is not None


async def check_inputs(state: CoordinatorState, principal: Principal, inputs: InputsRef) -> None:
    """A submission may name only inputs its submitter uploaded: a hash alone is no proof of
    having the bytes, and must not let one submitter run (and read back) another's files."""
    size = await state.files.uploaded_by(inputs.sha256, principal.name)
    if size != inputs.size or not state.blobs.has(inputs.sha256):
        raise HTTPException(
            422, "unknown input files: upload them with PUT /api/v1/inputs, then submit"
        )


@router.get("/api/v1/jobs/{job_id}/inputs")
async def download_inputs(job_id: str, request: Request, state: State) -> FileResponse:
    """The job's input tar, for the contributor that holds its lease."""
    _principal, job = await _leased_job(request, state, job_id)
    if job.inputs_sha256 is None or not state.blobs.has(job.inputs_sha256):
        raise HTTPException(404, f"job {job_id} has no input files")
    return FileResponse(
        state.blobs.path(job.inputs_sha256),
        media_type="application/x-tar",
        headers={**_SERVED_HEADERS, SHA256_HEADER: job.inputs_sha256},
    )


async def _leased_job(
    request: Request, state: CoordinatorState, job_id: str
) -> tuple[Principal, JobRow]:
    """The caller and the running job whose current lease it presents, with the token that
    registered the lease holder; else 403."""
    principal = require(request, Role.CONTRIBUTOR)
    refused = HTTPException(403, "only the contributor running this job may do this")
    lease = state.scheduler.lease_of(job_id)
    presented = request.headers.get(LEASE_HEADER, "")
    if lease is None or not hmac.compare_digest(presented.encode(), lease.lease_id.encode()):
        raise refused
    # Open mode has no tokens: the lease id alone, a secret only its holder was sent, decides.
    mine = not principal.authenticated or principal.is_admin
    if not mine and await state.contributors.token_of(lease.holder) != principal.name:
        raise refused
    job = await state.jobs.get(job_id)
    if job is None:
        raise refused
    return principal, job


# ------------------------------------------------------------------ artifacts


@router.put("/api/v1/jobs/{job_id}/artifacts", status_code=201, openapi_extra=_TAR_BODY)
async def upload_artifacts(job_id: str, request: Request, state: State) -> ArtifactsStored:
    """The job's output files as one tar, from the contributor holding its lease."""
    principal, _job = await _leased_job(request, state, job_id)
    settings = state.settings
    limits = ArtifactLimits(
        settings.max_artifact_files, settings.max_artifact_bytes, settings.max_artifact_path_chars
    )
    limit = limits.max_bytes + limits.max_files * _TAR_OVERHEAD_PER_FILE + _TAR_OVERHEAD
    received = await _receive(request, state, principal, limit, "output files")
    try:
        extraction = await asyncio.to_thread(extract, received.path, state.blobs, limits)
    except BadArtifacts as exc:
        log.warning("job %s: outputs refused: %s", job_id, exc, extra={"job_id": job_id})
        raise HTTPException(422, str(exc)) from None
    finally:
        received.path.unlink(missing_ok=True)
    files = extraction.files
    artifacts = [Artifact(path=f.path, size=f.blob.size, sha256=f.blob.sha256) for f in files]
    async with state.blobs.lock:
        try:
            await state.files.replace_artifacts(job_id, artifacts)
        except QuotaExceeded as exc:
            for item in files:
                item.blob.path.unlink(missing_ok=True)
            log.warning("job %s: outputs refused: %s", job_id, exc, extra={"job_id": job_id})
            raise HTTPException(413, f"the output files do not fit: {exc}") from None
        for item in files:
            state.blobs.keep(item.blob)
    if extraction.skipped_count:
        log.warning(
            "job %s: %d output file(s) skipped for their names: %s",
            job_id,
            extraction.skipped_count,
            "; ".join(extraction.skipped),
        )
    log.info("job %s: %d output file(s) stored", job_id, len(artifacts), extra={"job_id": job_id})
    return ArtifactsStored(
        artifacts=artifacts, skipped=extraction.skipped, skipped_count=extraction.skipped_count
    )


@router.get("/api/v1/jobs/{job_id}/artifacts")
async def list_artifacts(job_id: str, request: Request, state: State) -> ArtifactList:
    """The job's output files (path, size, sha256), path order."""
    job = await _visible(request, state, job_id)
    artifacts = await state.files.artifacts(job.id)
    return ArtifactList(artifacts=artifacts, files_removed_at=job.files_removed_at)


@router.get("/api/v1/jobs/{job_id}/artifacts/{path:path}")
async def download_artifact(job_id: str, path: str, request: Request, state: State) -> FileResponse:
    """One output file, always as an attachment."""
    job = await _visible(request, state, job_id)
    artifact = await state.files.artifact(job.id, path)
    if artifact is None or not state.blobs.has(artifact.sha256):
        raise HTTPException(404, f"job {job_id} has no output file {path[:200]!r}")
    return FileResponse(
        state.blobs.path(artifact.sha256),
        media_type="application/octet-stream",
        filename=path.rsplit("/", 1)[-1],
        headers={**_SERVED_HEADERS, SHA256_HEADER: artifact.sha256},
    )


async def _visible(request: Request, state: CoordinatorState, job_id: str) -> JobRow:
    principal = require(request, Role.SUBMITTER)
    job = await state.jobs.get(job_id)
    if job is None or not may_see(principal, job.owner):
        raise HTTPException(404, f"no job with id {job_id[:64]!r}")
    return job
