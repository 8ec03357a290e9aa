"""The Python client library against a real coordinator: a scripted agent for the fast
paths, the real agent and Docker end to end."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import compound
from compound.client import (
    AsyncClient,
    AuthError,
    Client,
    RefusedError,
    Result,
    UnknownJobError,
    UnreachableError,
)
from fake_agent import FakeAgent
from support import Agent, Coordinator, product_env
from test_auth import make_token

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent


def _serve(agent: FakeAgent, jobs: int) -> threading.Thread:
    """Run ``jobs`` jobs on ``agent`` in a thread: each prints its arguments, then ends
    with exit code 3 when its first argument is 'fail'."""

    def serve() -> None:
        for _ in range(jobs):
            job = agent.recv_type("job")
            args = job.get("args", [])
            seq = agent.report(job, [("stdout", f"{' '.join(args)}\n")], job["first_seq"])
            agent.done(job, last_seq=seq - 1, exit_code=3 if args[:1] == ["fail"] else 0)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_submit_stream_and_wait(coordinator: Coordinator, tmp_path: Path) -> None:
    """A script file is submitted under its name, its records stream live by stream, and
    wait() gives the status, exit code and whole output."""
    agent = FakeAgent(coordinator)
    script = tmp_path / "job.py"
    script.write_text("print('ignored by the fake agent')\n")
    with Client(coordinator.url) as client:
        job = client.submit(script, args=["x"], env={"A": "1"}, timeout=60)
        sent = agent.recv_type("job")
        assert (sent["job_id"], sent["name"], sent["args"]) == (job.id, "job.py", ["x"])
        seq = agent.report(sent, [("stdout", "one\n"), ("stderr", "two\n")], sent["first_seq"])
        records = job.stream()
        first = next(records)
        assert (first.stream, first.text) == ("stdout", "one\n")
        agent.done(sent, last_seq=seq - 1)
        rest = list(records)
        assert next((r.stream, r.text) for r in rest) == ("stderr", "two\n")
        result = job.wait()
        assert (result.status, result.exit_code, result.ok) == ("succeeded", 0, True)
        assert (result.stdout, result.stderr) == ("one\n", "two\n")
        assert [j["id"] for j in client.jobs()] == [job.id]
    agent.close()


def test_map_keeps_order_and_fails_per_item(coordinator: Coordinator) -> None:
    """map() returns results in the order of its argument lists; a failing job is its
    Result and a refused submission its exception, neither stopping the others."""
    agent = FakeAgent(coordinator)  # one job at a time: report() skips all but its ack
    serving = _serve(agent, jobs=3)
    with Client(coordinator.url) as client:
        items = [["a"], ["fail"], ["bad\x00arg"], ["c"]]
        results = client.map(None, items, source="print(1)", concurrency=2, timeout=60)
    serving.join(timeout=30)
    agent.close()
    assert isinstance(results[2], RefusedError), results[2]
    done = [r for r in results if isinstance(r, Result)]
    assert [(r.stdout, r.status) for r in done] == [
        ("a\n", "succeeded"),
        ("fail\n", "failed"),
        ("c\n", "succeeded"),
    ]


def test_async_client_has_the_same_methods(coordinator: Coordinator) -> None:
    """AsyncClient submits, streams, waits and lists as coroutines."""
    agent = FakeAgent(coordinator)
    serving = _serve(agent, jobs=1)

    async def main() -> tuple[list[str], Result, int]:
        async with AsyncClient(coordinator.url) as client:
            job = await client.submit(source="print(1)", args=["hi", "there"], name="n")
            texts = [record.text async for record in job.stream()]
            return texts, await job.wait(), len(await client.jobs())

    texts, result, listed = asyncio.run(main())
    serving.join(timeout=30)
    agent.close()
    assert texts == ["hi there\n"]
    assert (result.status, result.stdout, listed) == ("succeeded", "hi there\n", 1)


def test_each_cause_has_its_exception(tmp_path: Path) -> None:
    """No token where one is needed is AuthError, an unknown job UnknownJobError, a
    coordinator that is not there UnreachableError; all are ClientError sentences."""
    data_dir = tmp_path / "secured"
    token = make_token(data_dir, "submitter", "alice")
    server = Coordinator(data_dir=data_dir).start()
    try:
        with pytest.raises(AuthError, match="needs a valid token"):
            Client(server.url, token="").jobs()
        with Client(server.url, token=token) as client, pytest.raises(UnknownJobError):
            client.job("no-such-job").wait()
        url = server.url
    finally:
        server.stop()
    with pytest.raises(UnreachableError, match="cannot reach the coordinator"):
        Client(url, token=token).jobs()


def test_the_package_exports_the_clients_lazily() -> None:
    """compound.Client and compound.AsyncClient are the client package's, loaded on use,
    and importing compound alone does not load them."""
    assert compound.Client is Client and compound.AsyncClient is AsyncClient
    probe = "import compound, sys; print('compound.client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, env=product_env())
    assert out.stdout == b"False\n", out.stderr


@pytest.mark.timeout(180)
def test_end_to_end_with_docker(coordinator: Coordinator, agent: Agent, tmp_path: Path) -> None:
    """A script writing a file in its working directory runs in the real sandbox under its
    own name; wait() and download_artifacts() bring back its output and the file, and the
    example in examples/ runs against the same coordinator."""
    script = tmp_path / "report.py"
    script.write_text("open('table.csv', 'w').write('a,b\\n')\nprint(__file__)\n")
    with Client(coordinator.url) as client:
        job = client.submit(script, timeout=120)
        result = job.wait()
        assert (result.status, result.stdout) == ("succeeded", "/job/report.py\n"), result
        paths = job.download_artifacts(tmp_path / "got")
    assert [p.name for p in paths] == ["table.csv"]
    assert paths[0].read_text() == "a,b\n"
    example = ROOT / "examples" / "client_squares.py"
    env = product_env(COMPOUND_COORDINATOR=coordinator.url)
    out = subprocess.run(
        [sys.executable, str(example), str(tmp_path / "squares")],
        capture_output=True,
        env=env,
        timeout=150,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().splitlines() == [
        "[stdout] 49",
        "status succeeded exit 0",
        "files ['square.txt']",
        "map 4",
        "map 9",
    ]
