"""Reading a job submission from an HTTP request: bounded, validated, one clear error.

The body is parsed and validated in one pass by pydantic-core, which refuses what would
break the store later: lone surrogates (not encodable as UTF-8), nesting deeper than its
recursion limit, and strings given for numbers (strict mode).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compound.coordinator.settings import CoordinatorSettings
from compound.coordinator.storage.job_rows import NewJob
from compound.protocol import InputsRef
from compound.protocol.requirements import (
    MAX_REQUIREMENTS,
    RequirementsError,
    check_requirements,
    script_requirements,
)

# Room for args, env and JSON escaping on top of the script itself.
_BODY_OVERHEAD_BYTES = 256 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_ARG_CHARS = 32 * 1024
_MAX_ENV_VALUE_CHARS = 32 * 1024


class JobSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    script: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    name: str | None = Field(default=None, max_length=256)
    # Besides the script's own PEP 723 block, which the coordinator reads itself.
    # Bounded here too so a huge list is refused before anything looks at its items.
    requirements: list[str] = Field(default_factory=list, max_length=MAX_REQUIREMENTS)
    # Input files uploaded before with PUT /api/v1/inputs.
    inputs: InputsRef | None = None


async def read_submission(request: Request, settings: CoordinatorSettings) -> NewJob:
    body = await _read_bounded(request, settings.max_script_bytes + _BODY_OVERHEAD_BYTES)
    submission = parse_submission(body)
    _check_script(submission.script, settings)
    _check_args_env(submission, settings)
    requirements = job_requirements(submission.script, submission.requirements)
    return NewJob(
        requirements=requirements,
        script=submission.script,
        args=submission.args,
        env=submission.env,
        timeout_s=submission.timeout_s,
        name=submission.name,
        inputs=submission.inputs,
    )


def parse_submission(body: bytes) -> JobSubmission:
    """The submission in ``body``, or an HTTPException with a one-sentence detail."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the request body is not valid UTF-8") from None
    try:
        return JobSubmission.model_validate_json(text)
    except ValidationError as exc:
        raise _submission_error(exc) from None


def _submission_error(exc: ValidationError) -> HTTPException:
    error = exc.errors()[0]
    kind = error["type"]
    if kind == "json_invalid":
        problem = str(error.get("ctx", {}).get("error", "")) or "invalid JSON"
        return HTTPException(
            400, f'the request body is not JSON ({problem}): send {{"script": "..."}}'
        )
    if kind == "model_type" or (kind == "model_attributes_type"):
        return HTTPException(400, 'the request body must be a JSON object: {"script": "..."}')
    return HTTPException(422, describe_error(error))


def _too_big(limit: int) -> HTTPException:
    return HTTPException(413, f"the script is larger than the {limit // 1024} KiB limit")


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_big(limit - _BODY_OVERHEAD_BYTES)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_big(limit - _BODY_OVERHEAD_BYTES)
        chunks.append(chunk)
    return b"".join(chunks)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def describe_error(error: Any, default_where: str = "body") -> str:
    """One line naming where a validation error is: a user's key is quoted and escaped, so
    the sentence never carries their newlines or control characters."""
    parts = [
        str(part) if isinstance(part, int) or _PLAIN_NAME.fullmatch(str(part)) else ascii(part)[:40]
        for part in error["loc"]
    ]
    return f"{'.'.join(parts) or default_where}: {error['msg']}"


def job_requirements(script: str, listed: list[str]) -> list[str]:
    """The job's packages: the script's PEP 723 ``dependencies``, then ``listed``. A script
    whose block cannot be used is a 400, a bad listed requirement a 422, each with one
    sentence. Never trusts a client to have read the script."""
    try:
        from_script = script_requirements(script)
    except RequirementsError as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        return check_requirements(from_script + check_requirements(listed))
    except RequirementsError as exc:
        raise HTTPException(422, str(exc)) from None


def _check_script(script: str, settings: CoordinatorSettings) -> None:
    if not script.strip():
        raise HTTPException(400, "the script is empty")
    if "\x00" in script:
        raise HTTPException(400, "the script contains a NUL character")
    if len(script.encode("utf-8")) > settings.max_script_bytes:
        raise _too_big(settings.max_script_bytes)


def _check_args_env(submission: JobSubmission, settings: CoordinatorSettings) -> None:
    if len(submission.args) > settings.max_args:
        raise HTTPException(422, f"at most {settings.max_args} arguments are allowed")
    if any("\x00" in arg or len(arg) > _MAX_ARG_CHARS for arg in submission.args):
        raise HTTPException(
            422, f"arguments cannot contain NUL characters or exceed {_MAX_ARG_CHARS} characters"
        )
    if len(submission.env) > settings.max_env_vars:
        raise HTTPException(422, f"at most {settings.max_env_vars} environment variables")
    for name, value in submission.env.items():
        # fullmatch: "$" would also match before a trailing newline ("FOO\n").
        if not _ENV_NAME.fullmatch(name) or "\x00" in value or len(value) > _MAX_ENV_VALUE_CHARS:
            raise HTTPException(422, f"invalid environment variable {name!r}")
    if submission.name is not None and "\x00" in submission.name:
        raise HTTPException(422, "the job name cannot contain NUL characters")
