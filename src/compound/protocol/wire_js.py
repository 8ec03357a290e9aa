"""The web UI's wire constants as one JavaScript module (``web/js/wire.js``), from this package.

Pure: :func:`render` returns the module's text; ``scripts/gen-wire-js`` writes it, and
``scripts/check`` fails while the committed file differs from what :func:`render` returns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import Enum
from typing import get_args

from pydantic import BaseModel

from compound.protocol import auth, errors, limits
from compound.protocol.events import AgentEvent
from compound.protocol.messages import FollowMessage
from compound.protocol.status import (
    TERMINAL_STATUSES,
    ContributorState,
    JobStatus,
    Lending,
    Stream,
    WaitingReason,
)

TARGET = "src/compound/web/js/wire.js"
COMMAND = "scripts/gen-wire-js"

# The limits the pages use, by name in protocol/limits.py.
UI_LIMITS = (
    "JOB_LIST_DEFAULT",
    "JOB_LIST_MAX",
    "LOG_PAGE_RECORDS_DEFAULT",
    "LOG_PAGE_RECORDS_MAX",
)

_HEADER = f"""\
// GENERATED FILE, do not edit: written by {COMMAND} (compound.protocol.wire_js) from
// the Python protocol in src/compound/protocol/. Change the Python, run {COMMAND}
// and commit both; scripts/check fails while this file and the Python differ.
//
// The web UI's wire constants: job statuses, streams, lending states, message and event
// types, close codes, the token subprotocols and the API's limits. Each line is one JSON
// value.

"""


def close_codes() -> dict[str, int]:
    """Every WebSocket close code the protocol names (``errors.py``), in definition order."""
    return {
        name: value
        for name, value in vars(errors).items()
        if name.startswith("CLOSE_") and isinstance(value, int)
    }


def ui_limits() -> dict[str, int]:
    """The limits the pages use, from ``limits.py``."""
    return {name: int(getattr(limits, name)) for name in UI_LIMITS}


def message_types(union: object) -> dict[str, str]:
    """NAME -> type for the members of a ``type``-discriminated union of models."""
    members: Iterable[type[BaseModel]] = get_args(get_args(union)[0])
    kinds = [str(member.model_fields["type"].default) for member in members]
    return {kind.upper(): kind for kind in kinds}


def _enum(enum: type[Enum]) -> dict[str, str]:
    return {member.name: str(member.value) for member in enum}


def constants() -> dict[str, object]:
    """Every constant of the module, by its JavaScript name, as JSON-ready values."""
    terminal = [status.value for status in JobStatus if status in TERMINAL_STATUSES]
    return {
        "JobStatus": _enum(JobStatus),
        "TERMINAL_STATUSES": terminal,
        "Stream": _enum(Stream),
        "ContributorState": _enum(ContributorState),
        "WaitingReason": _enum(WaitingReason),
        "Lending": _enum(Lending),
        "FollowMessageType": message_types(FollowMessage),
        "AgentEventType": message_types(AgentEvent),
        **close_codes(),
        "SUBPROTOCOL": auth.SUBPROTOCOL,
        "BEARER_SUBPROTOCOL_PREFIX": auth.BEARER_SUBPROTOCOL_PREFIX,
        **ui_limits(),
    }


def render() -> str:
    """The text of ``web/js/wire.js``: one ``export const`` line a constant; objects and
    arrays frozen."""
    lines = [_HEADER]
    for name, value in constants().items():
        text = json.dumps(value, ensure_ascii=False)
        if isinstance(value, (dict, list)):
            text = f"Object.freeze({text})"
        lines.append(f"export const {name} = {text};\n")
    return "".join(lines)
