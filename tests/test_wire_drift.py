"""Wire shapes written once: the web UI's generated constants (web/js/wire.js) and
docs/api.md checked against the Python protocol and the coordinator's routes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from compound.coordinator.app import create_app
from compound.coordinator.settings import CoordinatorSettings
from compound.protocol import errors, limits, responses
from compound.protocol.auth import BEARER_SUBPROTOCOL_PREFIX, SUBPROTOCOL
from compound.protocol.events import AgentEvent
from compound.protocol.messages import FollowMessage, JobView, LogRecord
from compound.protocol.status import TERMINAL_STATUSES, ContributorState, JobStatus, Stream
from compound.protocol.wire_js import UI_LIMITS, render

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "src" / "compound" / "web" / "js"
WIRE_JS = JS_DIR / "wire.js"
API_DOC = ROOT / "docs" / "api.md"
_EXPORT = re.compile(r"export const (\w+) = (?:Object\.freeze\((?P<frozen>.*)\)|(?P<plain>.*));")
# A route named in the docs: `GET /api/v1/jobs/{id}?limit=50` -> ("GET", "/api/v1/jobs/{}").
_DOC_ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE|WS) (/[^`\s?]*)")


def _python_close_codes() -> dict[str, int]:
    return {k: v for k, v in vars(errors).items() if k.startswith("CLOSE_") and isinstance(v, int)}


@pytest.fixture(scope="module")
def js() -> dict[str, Any]:
    """Every constant of the committed wire.js, its value read as JSON."""
    found: dict[str, Any] = {}
    for line in WIRE_JS.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("//"):
            continue
        match = _EXPORT.fullmatch(line)
        assert match, f"wire.js holds a line that is not one constant: {line!r}"
        found[match[1]] = json.loads(match["frozen"] or match["plain"])
    return found


def test_committed_wire_js_is_what_the_generator_writes() -> None:
    """wire.js is exactly what scripts/gen-wire-js writes from the Python today."""
    assert WIRE_JS.read_text(encoding="utf-8") == render(), "run scripts/gen-wire-js"


def test_every_job_status_is_in_the_ui(js: dict[str, Any]) -> None:
    """The UI knows every JobStatus by the same name and value, and the same ending ones."""
    assert js["JobStatus"] == {status.name: status.value for status in JobStatus}
    assert set(js["TERMINAL_STATUSES"]) == {status.value for status in TERMINAL_STATUSES}


def test_every_close_code_is_in_the_ui(js: dict[str, Any]) -> None:
    """Every close code the protocol names is in the UI, with the same value, and no other."""
    in_js = {name: value for name, value in js.items() if name.startswith("CLOSE_")}
    assert in_js == _python_close_codes()


def test_enums_message_types_and_subprotocols_match(js: dict[str, Any]) -> None:
    """Streams, contributor states, follow message types, agent event types and the token
    subprotocols are the Python ones."""
    assert js["Stream"] == {stream.name: stream.value for stream in Stream}
    assert js["ContributorState"] == {state.name: state.value for state in ContributorState}
    follow_types = {"records", "status", "end"}
    assert set(js["FollowMessageType"].values()) == follow_types
    assert follow_types == {
        member.model_fields["type"].default for member in FollowMessage.__args__[0].__args__
    }
    assert set(js["AgentEventType"].values()) == {
        member.model_fields["type"].default for member in AgentEvent.__args__[0].__args__
    }
    assert (js["SUBPROTOCOL"], js["BEARER_SUBPROTOCOL_PREFIX"]) == (
        SUBPROTOCOL,
        BEARER_SUBPROTOCOL_PREFIX,
    )


def test_ui_limits_match_the_protocol_and_the_routes(js: dict[str, Any], tmp_path: Path) -> None:
    """The list and log-page limits the UI uses are the protocol's, and the routes' bounds."""
    for name in UI_LIMITS:
        assert js[name] == getattr(limits, name), name
    spec = create_app(CoordinatorSettings(data_dir=tmp_path)).openapi()

    def limit_of(path: str) -> dict[str, Any]:
        params = spec["paths"][path]["get"]["parameters"]
        schema: dict[str, Any] = next(p for p in params if p["name"] == "limit")["schema"]
        return schema

    jobs = limit_of("/api/v1/jobs")
    assert (jobs["default"], jobs["maximum"]) == (js["JOB_LIST_DEFAULT"], js["JOB_LIST_MAX"])
    logs = limit_of("/api/v1/jobs/{job_id}/logs")
    assert (logs["default"], logs["maximum"]) == (
        js["LOG_PAGE_RECORDS_DEFAULT"],
        js["LOG_PAGE_RECORDS_MAX"],
    )


def test_no_page_keeps_a_hand_copy(js: dict[str, Any]) -> None:
    """No other JS module declares a wire constant or writes a private close code itself."""
    declared = re.compile(r"\b(?:const|let|var)\s+(" + "|".join(js) + r")\b")
    private_codes = [code for code in _python_close_codes().values() if code >= 4000]
    literal = re.compile(r"\b(" + "|".join(map(str, private_codes)) + r")\b")
    for path in sorted(JS_DIR.glob("*.js")):
        if path == WIRE_JS:
            continue
        text = path.read_text(encoding="utf-8")
        assert not declared.search(text), f"{path.name} declares its own wire constant"
        assert not literal.search(text), f"{path.name} writes a close code by hand"


# ------------------------------------------------------------------ docs/api.md


def _normalized(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def _app_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every HTTP route in /openapi.json and every WebSocket route."""
    app = create_app(CoordinatorSettings(data_dir=tmp_path))
    found = {
        (method.upper(), _normalized(path))
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    pending: list[Any] = list(app.routes)
    while pending:
        route = pending.pop()
        if hasattr(route, "original_router"):  # FastAPI's included router
            pending.extend(route.original_router.routes)
        elif type(route).__name__.endswith("WebSocketRoute"):
            found.add(("WS", _normalized(route.path)))
    return found


def _doc_routes() -> dict[tuple[str, str], str]:
    """(method, path) -> the docs' line naming it first."""
    found: dict[tuple[str, str], str] = {}
    for line in API_DOC.read_text(encoding="utf-8").splitlines():
        for method, path in _DOC_ROUTE.findall(line):
            found.setdefault((method, _normalized(path)), line)
    return found


# What FastAPI and the static files serve besides the API; the docs name some of them.
_NOT_API = {("GET", "/"), ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/openapi.json")}


def test_docs_name_every_route_and_no_other(tmp_path: Path) -> None:
    """docs/api.md names every route of the app (HTTP and WebSocket), and only those."""
    in_app = _app_routes(tmp_path)
    in_docs = set(_doc_routes())
    assert in_app - in_docs == set(), "routes missing from docs/api.md"
    assert in_docs - in_app - _NOT_API == set(), "docs/api.md names routes the app lacks"


def test_docs_rows_name_every_field_of_their_answers(tmp_path: Path) -> None:
    """Each route's row in docs/api.md names every field of its answer model."""
    spec = create_app(CoordinatorSettings(data_dir=tmp_path)).openapi()
    rows = _doc_routes()
    answers = {
        name: model
        for name, model in vars(responses).items()
        if isinstance(model, type)
        and issubclass(model, BaseModel)
        and model.__module__ == responses.__name__
    }
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for answer in operation.get("responses", {}).values():
                ref = answer.get("content", {}).get("application/json", {}).get("schema", {})
                model = answers.get(ref.get("$ref", "").rsplit("/", 1)[-1])
                if model is None:
                    continue
                row = rows[(method.upper(), _normalized(path))]
                missing = [f for f in model.model_fields if f'"{f}"' not in row]
                assert not missing, f"{method.upper()} {path}: docs lack {missing}"
                checked += 1
    assert checked >= 6  # every list, page and health answer was found


def test_docs_health_row_lists_exactly_the_health_fields() -> None:
    """The /healthz row lists every field of the health answer, and no other."""
    row = _doc_routes()[("GET", "/healthz")]
    assert set(re.findall(r'"(\w+)":', row)) == set(responses.Health.model_fields)


def _paragraph(name: str) -> str:
    text = API_DOC.read_text(encoding="utf-8")
    start = text.index(f"\n{name}: ")
    return text[start : text.find("\n\n", start)]


@pytest.mark.parametrize(
    ("name", "model", "field", "values"),
    [
        ("JobView", JobView, "status", {status.value for status in JobStatus}),
        ("LogRecord", LogRecord, "stream", {stream.value for stream in Stream}),
        (
            "ContributorView",
            responses.ContributorAdminView,
            "state",
            {state.value for state in ContributorState},
        ),
    ],
)
def test_docs_shapes_name_every_field_and_value(
    name: str, model: type[BaseModel], field: str, values: set[str]
) -> None:
    """The docs' JobView, LogRecord and ContributorView name every field of the model and
    list exactly the values of its enum field."""
    paragraph = _paragraph(name)
    missing = [f for f in model.model_fields if f'"{f}"' not in paragraph]
    assert not missing, f"docs/api.md {name} lacks {missing}"
    listed = re.search(rf'"{field}": "([a-z_|]+)"', paragraph)
    assert listed and set(listed[1].split("|")) == values


def test_docs_list_every_close_code() -> None:
    """docs/api.md's close-code table has every close code the protocol names, and no other."""
    text = API_DOC.read_text(encoding="utf-8")
    listed = dict(re.findall(r"^\| `(\d{4})` \| `(CLOSE_\w+)` \|", text, flags=re.MULTILINE))
    assert {name: int(code) for code, name in listed.items()} == _python_close_codes()
