"""TLS end to end: a coordinator serving HTTPS and WSS, verified by the CLI and the agent.

The certificates are made here with the openssl command: a CA, a server certificate it signs
for 127.0.0.1 and localhost, and one it signs for another name. Every process is real and
every connection goes over loopback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from compound.desktop.settings import AppSettings
from compound.desktop.sidecar import agent_command
from support import Agent, Coordinator, product_env

pytestmark = pytest.mark.timeout(120)


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path  # for IP:127.0.0.1 and DNS:localhost
    server_key: Path
    other_cert: Path  # for DNS:elsewhere.invalid only
    other_key: Path
    expired_cert: Path  # for IP:127.0.0.1, expired yesterday
    expired_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


def _new_key_args(key: Path) -> list[str | Path]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key]


def _issue(
    directory: Path, name: str, san: str, ca: Path, ca_key: Path, days: int = 2
) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
    extensions = directory / f"{name}.ext"
    extensions.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
    _openssl("req", *_new_key_args(key), "-out", csr, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-days", str(days), "-out", cert, "-extfile", extensions,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl(
        "req", "-x509", *_new_key_args(ca_key), "-out", ca, "-days", "2",
        "-subj", "/CN=Compound test CA",
    )  # fmt: skip
    server = _issue(directory, "server", "IP:127.0.0.1,DNS:localhost", ca, ca_key)
    other = _issue(directory, "other", "DNS:elsewhere.invalid", ca, ca_key)
    # -days -1: valid until a day before it was made.
    expired = _issue(directory, "expired", "IP:127.0.0.1", ca, ca_key, days=-1)
    return Certs(ca, *server, *other, *expired)


@pytest.fixture(autouse=True)
def no_ca_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever trust a test gives, it gives explicitly."""
    monkeypatch.delenv("COMPOUND_CA_FILE", raising=False)


def _tls_coordinator(data_dir: Path, certs: Certs, cert: Path, key: Path) -> Coordinator:
    return Coordinator(
        data_dir=data_dir,
        extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
        ca_file=certs.ca,
    )


@pytest.fixture
def coordinator(tmp_path: Path, certs: Certs) -> Iterator[Coordinator]:
    """Overrides conftest's: this module's coordinator serves HTTPS (start_agent uses it)."""
    server = _tls_coordinator(
        tmp_path / "coordinator", certs, certs.server_cert, certs.server_key
    ).start()
    yield server
    server.stop()


def compound(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compound", *args],
        capture_output=True,
        text=True,
        env=product_env(**env),
        timeout=90,
    )


def assert_one_sentence(result: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_coordinator_announces_https(coordinator: Coordinator) -> None:
    """With --tls-cert and --tls-key the coordinator says https and answers over TLS only."""
    assert coordinator.output is not None
    assert f"listening on https://127.0.0.1:{coordinator.port}" in coordinator.output.text()
    assert coordinator.api("GET", "/healthz").status_code == 200


def test_submit_over_tls_runs_a_job(
    coordinator: Coordinator, start_agent: Callable[..., Agent], certs: Certs, tmp_path: Path
) -> None:
    """An agent and `compound submit` trusting the CA (flag or variable) run a job end to end."""
    start_agent(extra_args=["--ca-file", str(certs.ca)])
    script = tmp_path / "hello.py"
    script.write_text("print('hello over tls')\n")

    by_flag = compound("submit", str(script), "-c", coordinator.url, "--ca-file", str(certs.ca))
    assert (by_flag.returncode, by_flag.stdout) == (0, "hello over tls\n"), by_flag.stderr

    by_env = compound("submit", str(script), "-c", coordinator.url, COMPOUND_CA_FILE=str(certs.ca))
    assert (by_env.returncode, by_env.stdout) == (0, "hello over tls\n"), by_env.stderr


def test_untrusted_certificate_is_one_sentence_and_exit_3(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    """Without the CA, HTTP and WebSocket commands alike name the problem and the fix, exit 3."""
    script = tmp_path / "never.py"
    script.write_text("print('never')\n")
    for args in (("submit", str(script)), ("jobs",), ("logs", "some-job", "--follow")):
        result = compound(*args, "-c", coordinator.url)
        assert result.returncode == 3, result.stderr
        assert_one_sentence(result, "certificate", "--ca-file", "COMPOUND_CA_FILE")
    assert coordinator.api("GET", "/api/v1/jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    ("which", "expected"),
    [("other name", ["mismatch", "127.0.0.1"]), ("expired", ["expired", "renewed"])],
)
def test_certificate_from_a_trusted_ca_can_still_be_refused(
    which: str, expected: list[str], tmp_path: Path, certs: Certs
) -> None:
    """A certificate for another name, or expired, is refused: exit 3 and one sentence."""
    cert, key = {
        "other name": (certs.other_cert, certs.other_key),
        "expired": (certs.expired_cert, certs.expired_key),
    }[which]
    server = _tls_coordinator(tmp_path / "other", certs, cert, key).start()
    try:
        for args in (("jobs",), ("logs", "some-job", "--follow")):
            result = compound(*args, "-c", server.url, "--ca-file", str(certs.ca))
            assert result.returncode == 3, result.stderr
            assert_one_sentence(result, "certificate", *expected)
    finally:
        server.stop()


def test_agent_without_ca_retries_and_says_why(
    coordinator: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """An agent that cannot verify the coordinator keeps retrying, each time saying why."""
    agent = start_agent(wait_connected=False)
    first = agent.wait_event("disconnected")
    assert "certificate" in first["reason"] and "--ca-file" in first["reason"]
    agent.wait_event("connecting", attempt=2)
    assert agent.proc is not None and agent.proc.poll() is None
    assert not any(event["type"] == "connected" for event in agent.events())


def test_unusable_ca_file_is_one_sentence(coordinator: Coordinator, tmp_path: Path) -> None:
    """A CA file that is missing or not PEM: the CLI exits 3, the agent 1, each with a sentence."""
    missing = tmp_path / "missing.pem"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    cli = compound("jobs", "-c", coordinator.url, "--ca-file", str(missing))
    assert cli.returncode == 3
    assert_one_sentence(cli, "cannot read the CA file", str(missing))
    cli = compound("jobs", "-c", coordinator.url, COMPOUND_CA_FILE=str(not_pem))
    assert cli.returncode == 3
    assert_one_sentence(cli, "holds no PEM certificate")
    agent = compound(
        "agent", "--coordinator", coordinator.url, "--ca-file", str(missing),
        "--state-dir", str(tmp_path / "agent"),
    )  # fmt: skip
    assert agent.returncode == 1
    assert f"cannot read the CA file {missing}" in agent.stderr
    assert "Traceback" not in agent.stderr


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("missing cert", "cannot read"),
        ("key of another cert", "does not belong to the certificate"),
        ("not PEM", "both must be PEM"),
        ("key without cert", "--tls-key needs --tls-cert"),
    ],
)
def test_bad_certificate_or_key_stops_the_coordinator(
    which: str, expected: str, certs: Certs, tmp_path: Path
) -> None:
    """An unreadable, foreign or malformed certificate or key: one sentence, exit 1."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    tls_args = {
        "missing cert": [
            "--tls-cert",
            str(tmp_path / "none.pem"),
            "--tls-key",
            str(certs.server_key),
        ],
        "key of another cert": [
            "--tls-cert",
            str(certs.server_cert),
            "--tls-key",
            str(certs.other_key),
        ],
        "not PEM": ["--tls-cert", str(junk), "--tls-key", str(certs.server_key)],
        "key without cert": ["--tls-key", str(certs.server_key)],
    }[which]
    result = compound("coordinator", "--port", "0", "--data-dir", str(tmp_path / "data"), *tls_args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    # Other lines may come before (a warning about the open-file limit), never after.
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("compound coordinator: ") and expected in last, result.stderr


def test_desktop_sidecar_passes_the_ca_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The desktop app starts its agent with --ca-file from COMPOUND_CA_FILE, if set."""
    assert "--ca-file" not in agent_command(AppSettings(), tmp_path)
    monkeypatch.setenv("COMPOUND_CA_FILE", "/etc/compound/ca.pem")
    argv = agent_command(AppSettings(), tmp_path)
    assert argv[argv.index("--ca-file") + 1] == "/etc/compound/ca.pem"


def _closed_within(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the coordinator closes ``sock`` (EOF or reset) within ``timeout_s``."""
    sock.settimeout(timeout_s)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_a_stalled_tls_handshake_is_bounded_and_counted(tmp_path: Path, certs: Certs) -> None:
    """A client that connects over TLS and sends nothing, or a few bytes of a handshake, is
    closed after --header-timeout-s; and while it waits it holds a place under the
    connection cap, so a newcomer at the cap pushes the oldest such client out."""
    server = Coordinator(
        data_dir=tmp_path / "coordinator",
        extra_args=[
            "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
            "--header-timeout-s", "3", "--max-connections", "16",
        ],
        ca_file=certs.ca,
    ).start()  # fmt: skip
    try:
        silent = socket.create_connection(("127.0.0.1", server.port))
        partial = socket.create_connection(("127.0.0.1", server.port))
        partial.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello
        started = time.monotonic()
        assert _closed_within(silent, 10) and _closed_within(partial, 10)
        assert time.monotonic() - started < 6
        silent.close()
        partial.close()

        stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(16)]
        try:
            assert server.api("GET", "/healthz").status_code == 200
            assert _closed_within(stalled[0], 1.5), "the oldest stalled handshake stayed open"
        finally:
            for sock in stalled:
                sock.close()
    finally:
        server.stop()
