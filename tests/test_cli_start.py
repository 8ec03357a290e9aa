"""The quick front door: what `compound --version`, `submit`, `logs` and `status` import, and
that the quick paths still do the real thing against a real coordinator.

Timings belong in bench/cli_start.py; these tests check the facts the timings rest on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compound.cli import argv
from compound.cli.quick import STDOUT
from compound.protocol import Stream
from support import Agent, Coordinator, product_env, run_cli

# Not ssl: http.client imports the module (cheap); building a context is what costs.
HEAVY = ("pydantic", "rich", "typer", "click", "httpx", "websockets", "asyncio", "compound.tls")

# Runs the CLI's entry point like the installed script, then names the heavy packages loaded.
_WRAPPER = """
import sys
watched = set(sys.argv.pop(1).split(","))
from compound.cli.main import run
try:
    run()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted({name for name in sys.modules if name.split(".")[0] in watched or name in watched})
heavy = sorted({name.split(".")[0] if name.split(".")[0] in watched else name for name in heavy})
sys.stderr.write("loaded:" + ",".join(heavy) + "\\n")
sys.exit(code)
"""


def loaded_heavy(*args: str, coordinator: Coordinator | None = None) -> tuple[int, bytes, set[str]]:
    """Exit code, stdout and the heavy packages imported by `compound ARGS`."""
    env = product_env(**({"COMPOUND_COORDINATOR": coordinator.url} if coordinator else {}))
    result = subprocess.run(
        [sys.executable, "-c", _WRAPPER, ",".join(HEAVY), *args],
        capture_output=True,
        env=env,
        timeout=60,
    )
    line = result.stderr.decode().strip().splitlines()[-1]
    assert line.startswith("loaded:"), result.stderr.decode()
    return result.returncode, result.stdout, set(filter(None, line[len("loaded:") :].split(",")))


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "hello.py"
    path.write_text("print('hello')\n")
    return path


def test_version_imports_nothing_heavy() -> None:
    """`compound --version` prints the version and loads none of Typer, Rich, pydantic, httpx."""
    code, out, heavy = loaded_heavy("--version")
    assert (code, out, heavy) == (0, b"compound 0.1.0\n", set())


def test_submit_detach_over_http_imports_nothing_heavy(
    coordinator: Coordinator, script: Path
) -> None:
    """`submit --detach` to an http coordinator queues the job with the standard library only
    (and no TLS set-up: an http URL needs no context)."""
    code, out, heavy = loaded_heavy(
        "submit", str(script), "--detach", "--name", "quick", "-e", "A=1", coordinator=coordinator
    )
    assert code == 0 and heavy == set()
    job = coordinator.job(out.decode().strip())
    assert job["name"] == "quick" and job["status"] == "queued"


def test_submit_and_follow_import_nothing_heavy(
    coordinator: Coordinator, agent: Agent, script: Path
) -> None:
    """`compound submit` following its job to the end, and `logs -f` of it, run on the
    standard library: no pydantic, websockets or asyncio (and no TLS for an http URL)."""
    code, out, heavy = loaded_heavy("submit", str(script), coordinator=coordinator)
    assert (code, out, heavy) == (0, b"hello\n", set())
    job_id = coordinator.api("GET", "/api/v1/jobs").json()["jobs"][0]["id"]
    code, out, heavy = loaded_heavy("logs", "-f", job_id, coordinator=coordinator)
    assert (code, out, heavy) == (0, b"hello\n", set())


def test_logs_imports_nothing_heavy(coordinator: Coordinator) -> None:
    """`compound logs ID` reads the stored records without the protocol models or Rich."""
    job_id = coordinator.submit("print('x')\n")
    code, out, heavy = loaded_heavy("logs", job_id, coordinator=coordinator)
    assert (code, out, heavy) == (0, b"", set())


def test_status_skips_typer(coordinator: Coordinator) -> None:
    """`compound status ID` needs the JobView model and Rich's table, never Typer or httpx."""
    job_id = coordinator.submit("print('x')\n")
    code, out, heavy = loaded_heavy("status", job_id, coordinator=coordinator)
    assert code == 0 and b"queued" in out
    assert not heavy & {"typer", "click", "httpx", "compound.tls"}


def test_help_and_errors_still_come_from_typer(tmp_path: Path) -> None:
    """--help, an unknown option and a missing file get Typer's usage answers (exit 2)."""
    code, out, heavy = loaded_heavy("submit", "--help")
    assert code == 0 and b"Ctrl-C" in out and "typer" in heavy
    unknown = run_cli("submit", "x.py", "--bogus")
    assert unknown.returncode == 2 and b"No such option" in unknown.stderr
    missing = run_cli("submit", str(tmp_path / "absent.py"))
    assert missing.returncode == 2 and b"no such file" in missing.stderr


def test_unreachable_is_one_sentence_and_exit_3(script: Path) -> None:
    """A coordinator that cannot be reached: exit 3, a sentence, no traceback."""
    result = run_cli("submit", str(script), "-c", "http://127.0.0.1:1")
    assert result.returncode == 3
    assert b"cannot reach the coordinator" in result.stderr
    assert b"Traceback" not in result.stderr


def test_stream_constant_matches_protocol() -> None:
    """The quick logs path's spelled-out stream name is the protocol's."""
    assert Stream.STDOUT.value == STDOUT


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["a.py", "x", "--", "--y"], (["a.py", "x", "--y"], {})),
        (["a.py", "-c", "http://h", "x"], (["a.py", "x"], {"coordinator": "http://h"})),
        (["--timeout=2.5", "a.py", "-d"], (["a.py"], {"timeout": 2.5, "detach": True})),
        (["-e", "A=1", "--env", "B=2", "a.py"], (["a.py"], {"env": ["A=1", "B=2"]})),
        (["--name", "n1", "--name", "n2", "a.py"], (["a.py"], {"name": "n2"})),
        (["-", "a"], (["-", "a"], {})),
    ],
)
def test_argv_reads_plain_forms_as_click_does(
    arguments: list[str], expected: tuple[list[str], dict[str, object]]
) -> None:
    """Interspersed options, `--`, `=` values, repeats (last wins, --env collects)."""
    parsed = argv.parse(arguments, argv.SUBMIT)
    assert parsed is not None
    assert (parsed.positionals, parsed.values) == expected


@pytest.mark.parametrize(
    "arguments",
    [
        ["--help"],
        ["a.py", "--bogus"],
        ["a.py", "-cURL"],
        ["a.py", "--detach=yes"],
        ["a.py", "--timeout", "soon"],
        ["a.py", "--name"],
        ["a.py", "--name", "--detach"],
        ["a.py", "-dc", "URL"],
    ],
)
def test_argv_leaves_the_rest_to_click(arguments: list[str]) -> None:
    """Anything but the plain forms returns None, so Typer parses and answers it."""
    assert argv.parse(arguments, argv.SUBMIT) is None
