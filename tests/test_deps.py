"""Per-job Python packages end to end: the real coordinator, agent, uv and Docker, with a
package index served by the test on loopback (wheels built here, numpy's from the cache)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from compound.agent.deps_budget import usage_bytes
from docker_env import RUNTIMES
from package_index import PackageIndex, build_bomb_wheel, build_sdist, build_wheel, numpy_wheel
from support import Agent, Coordinator, run_cli, stream_text, wait_until

pytestmark = pytest.mark.timeout(240)

GREETER = {
    "greeter/__init__.py": "def greet(name):\n    return f'hello, {name}, from greeter'\n",
}
# PEP 723 metadata: the coordinator reads it from the script itself.
GREETER_SCRIPT = """\
# /// script
# requires-python = ">=3.11"
# dependencies = ["greeter==1.0"]
# ///
import greeter
print(greeter.greet("compound"))
"""
# The job looks at its own network: only a loopback interface, no name resolution, and the
# index the agent used (on the host's loopback) out of reach.
NETWORK_CHECK = """
import socket
print("interfaces", sorted(name for _, name in socket.if_nameindex()))
try:
    socket.getaddrinfo("pypi.org", 443)
    print("dns works")
except OSError:
    print("no dns")
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
    print("index reachable")
except OSError:
    print("index unreachable")
try:
    open(greeter.__file__, "a").close()
    print("packages writable")
except OSError:
    print("packages read-only at", greeter.__file__)
"""
WEB_SCRIPT = b"import greeter\nprint(greeter.greet('web'))\n"
NUMPY_SCRIPT = """\
# /// script
# dependencies = ["numpy"]
# ///
import numpy as np
a = np.arange(6).reshape(2, 3)
b = np.arange(6).reshape(3, 2)
print((a @ b).tolist())
"""


@pytest.fixture
def wheels(tmp_path: Path) -> list[Path]:
    directory = tmp_path / "wheels"
    directory.mkdir()
    return [
        build_wheel(directory, "greeter", "1.0", GREETER),
        build_sdist(directory, "sourceonly", "1.0"),
        numpy_wheel(),
    ]


@pytest.fixture
def index(wheels: list[Path]) -> Iterator[PackageIndex]:
    with PackageIndex(wheels) as served:
        yield served


@pytest.fixture
def deps_agent(start_agent: Callable[..., Agent], index: PackageIndex) -> Callable[..., Agent]:
    def start(runtime: str = "runc", name: str = "deps-agent") -> Agent:
        return start_agent(name=name, runtime=runtime, extra_args=["--index-url", index.url])

    return start


def system_text(coordinator: Coordinator, job_id: str) -> str:
    return stream_text(coordinator.logs(job_id), "system")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pep723_script_imports_a_package_built_by_the_test(
    coordinator: Coordinator, deps_agent: Callable[..., Agent], index: PackageIndex, runtime: str
) -> None:
    """A script declaring a package in PEP 723 metadata imports it and prints its result,
    the job still has no network, the packages are read-only, and the submitter sees the
    preparation as system notes."""
    deps_agent(runtime)
    job_id = coordinator.submit(GREETER_SCRIPT + NETWORK_CHECK.format(port=index.port))
    job = coordinator.wait_for_status(job_id, {"succeeded", "failed"}, timeout_s=120)
    out = stream_text(coordinator.logs(job_id))
    assert job["status"] == "succeeded", (job, out, system_text(coordinator, job_id))
    assert job["requirements"] == ["greeter==1.0"]
    assert "hello, compound, from greeter" in out
    assert "interfaces ['lo']" in out
    assert "no dns" in out
    assert "index unreachable" in out
    assert "packages read-only at /opt/compound/deps/greeter/__init__.py" in out
    notes = system_text(coordinator, job_id)
    assert "resolving 1 requirement(s): greeter==1.0" in notes
    assert "1 package(s) installed in" in notes


def test_numpy_script_prints_a_matrix_product(
    coordinator: Coordinator, deps_agent: Callable[..., Agent]
) -> None:
    """numpy, a real compiled wheel, is installed for the sandbox and computes under gVisor."""
    deps_agent("runsc")
    job_id = coordinator.submit(NUMPY_SCRIPT)
    job = coordinator.wait_for_status(job_id, {"succeeded", "failed"}, timeout_s=180)
    out = stream_text(coordinator.logs(job_id))
    assert job["status"] == "succeeded", (job, out, system_text(coordinator, job_id))
    assert "[[10, 13], [28, 40]]" in out


def test_second_job_with_the_same_requirements_hits_the_cache_without_the_index(
    coordinator: Coordinator,
    deps_agent: Callable[..., Agent],
    index: PackageIndex,
) -> None:
    """The second job with the same requirements starts from the cache: the index is
    stopped before it is submitted, and the system note says so."""
    agent = deps_agent()
    first = coordinator.submit(GREETER_SCRIPT)
    assert coordinator.wait_for_status(first, {"succeeded", "failed"}, 120)["status"] == "succeeded"
    index.stop()
    second = coordinator.submit("print('again')", requirements=["greeter==1.0"])
    job = coordinator.wait_for_status(second, {"succeeded", "failed"}, 60)
    assert job["status"] == "succeeded", system_text(coordinator, second)
    assert "packages ready (cached, 1 packages)" in system_text(coordinator, second)
    sets = list((_deps_dir(agent) / "sets").iterdir())
    assert len(sets) == 1


def test_preparing_packages_counts_against_the_jobs_timeout(
    coordinator: Coordinator, start_agent: Callable[..., Agent], wheels: list[Path]
) -> None:
    """A job whose packages come from an index that answers after 60 s, with timeout_s=3,
    ends timed_out by its agent soon after 3 s, saying it was preparing its packages; its
    script never runs and the agent takes the next job."""
    with PackageIndex(wheels, stall_s=60) as slow:
        start_agent(extra_args=["--index-url", slow.url])
        job_id = coordinator.submit("print('never')", requirements=["greeter"], timeout_s=3)
        job = coordinator.wait_for_status(job_id, {"succeeded", "failed", "timed_out"}, 40)
        assert job["status"] == "timed_out", job
        assert job["finished_at"] - job["started_at"] < 3 + 10
        assert job["error"].startswith("timed out after 3 s while preparing its packages")
        assert "by the coordinator" not in job["error"]  # its agent ended it, not the deadline
        assert "while preparing its packages" in system_text(coordinator, job_id)
        assert "never" not in stream_text(coordinator.logs(job_id))
        after = coordinator.submit("print('next')")
        assert coordinator.wait_for_status(after, {"succeeded"}, 60)


def test_packages_over_the_download_cap_are_refused(
    coordinator: Coordinator, start_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    """A package of 3 MiB on an agent that lets a job download 1 MiB fails the job with a
    sentence naming the cap; nothing of it stays in the agent's package cache."""
    directory = tmp_path / "big-wheels"
    directory.mkdir()
    big = build_wheel(directory, "bigpkg", "1.0", {"bigpkg/__init__.py": "#" * (3 << 20)})
    with PackageIndex([big]) as index:
        agent = start_agent(extra_args=["--index-url", index.url, "--max-deps-download-mib", "1"])
        job_id = coordinator.submit("print('never')", requirements=["bigpkg"])
        job = coordinator.wait_for_status(job_id, {"succeeded", "failed"}, 60)
    assert job["status"] == "failed", job
    assert job["error"] == (
        "the packages take more than 1 MiB downloaded and unpacked, "
        "the most this contributor downloads for one job"
    )
    assert "never" not in stream_text(coordinator.logs(job_id))
    deps = _deps_dir(agent)
    assert list((deps / "sets").iterdir()) == []
    wait_until(lambda: not list((deps / "tmp").iterdir()), 10, "the workspace to go")


def _deps_dir(agent: Agent) -> Path:
    """The agent's package cache: under the directory its containers mount from, which its
    state dir records (see agent/mount_dir.py), not under the state dir itself."""
    return Path((agent.state_dir / "mount-dir").read_text().strip()) / "deps"


MOUNTINFO_SCRIPT = """\
# /// script
# dependencies = ["greeter==1.0"]
# ///
import greeter
print(open("/proc/self/mountinfo").read())
"""


def test_mount_sources_name_neither_the_state_dir_nor_the_home(
    coordinator: Coordinator, start_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    """Under runc a job reads its bind mounts' source paths in /proc/self/mountinfo: our
    sitecustomize and its packages are mounted from a directory that names neither the
    agent's state directory nor the contributor's home."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with PackageIndex([build_wheel(wheels, "greeter", "1.0", GREETER)]) as index:
        agent = start_agent(runtime="runc", extra_args=["--index-url", index.url])
        job_id = coordinator.submit(MOUNTINFO_SCRIPT)
        job = coordinator.wait_for_status(job_id, {"succeeded", "failed"}, timeout_s=120)
    mountinfo = stream_text(coordinator.logs(job_id))
    assert job["status"] == "succeeded", (job, mountinfo, system_text(coordinator, job_id))
    assert " /opt/compound/site " in mountinfo and " /opt/compound/deps " in mountinfo
    assert str(agent.state_dir) not in mountinfo
    home = str(Path.home())
    assert f"{home}/" not in mountinfo and f" {home} " not in mountinfo


def test_unknown_requirement_fails_the_job_with_the_resolvers_reason(
    coordinator: Coordinator, deps_agent: Callable[..., Agent]
) -> None:
    """A package the index does not have fails the job, with uv's reason in one line."""
    deps_agent()
    job_id = coordinator.submit("print('never')", requirements=["no-such-package-here"])
    job = coordinator.wait_for_status(job_id, {"succeeded", "failed"}, 60)
    assert job["status"] == "failed"
    assert job["error"].startswith("the requirements could not be installed:")
    assert "no-such-package-here" in job["error"]
    assert "\n" not in job["error"]
    assert "never" not in stream_text(coordinator.logs(job_id))


def test_source_only_package_is_refused(
    coordinator: Coordinator, deps_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    """A package with only a source distribution is refused (binary wheels only): its
    setup code never runs on the contributor's machine."""
    deps_agent()
    job_id = coordinator.submit("print('never')", requirements=["sourceonly"])
    job = coordinator.wait_for_status(job_id, {"succeeded", "failed"}, 60)
    assert job["status"] == "failed"
    assert "sourceonly" in job["error"]
    assert "binary" in job["error"].lower() or "wheel" in job["error"].lower(), job["error"]


def test_agent_without_deps_gets_no_job_with_requirements(
    coordinator: Coordinator, start_agent: Callable[..., Agent]
) -> None:
    """A --no-deps contributor runs the job behind a job with requirements, which waits for
    a contributor that installs packages."""
    start_agent(extra_args=["--no-deps"])
    waiting = coordinator.submit("print('x')", requirements=["greeter"])
    plain = coordinator.submit("print('plain')")
    assert coordinator.wait_for_status(plain, {"succeeded"}, 60)
    assert coordinator.job(waiting)["status"] == "queued"


MiB = 1024 * 1024


@pytest.mark.parametrize(("files", "file_mib"), [(1, 768), (24, 32)], ids=["one", "many"])
def test_zip_bomb_wheel_is_stopped_at_the_cache_cap(
    coordinator: Coordinator,
    start_agent: Callable[..., Agent],
    tmp_path: Path,
    files: int,
    file_mib: int,
) -> None:
    """A wheel of a few MB that unpacks to 768 MiB (one file, or many) is stopped while uv
    unpacks it: the package cache never grows past its 128 MiB cap plus a small margin,
    nothing of the installation is left, and the job fails saying why."""
    cap_bytes, margin_bytes = 128 * MiB, 64 * MiB
    bomb = build_bomb_wheel(tmp_path, "bomb", files, file_mib * MiB)
    assert bomb.stat().st_size < 4 * MiB
    with PackageIndex([bomb]) as index:
        agent = start_agent(
            extra_args=["--index-url", index.url, "--deps-cache-gib", str(cap_bytes / 1024**3)]
        )
        deps = _deps_dir(agent)
        peak_bytes = 0
        done = threading.Event()

        def watch() -> None:
            nonlocal peak_bytes
            while not done.is_set():
                peak_bytes = max(peak_bytes, usage_bytes(deps))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            job_id = coordinator.submit("print('never')", requirements=["bomb==1.0"])
            job = coordinator.wait_for_status(job_id, {"succeeded", "failed"}, 120)
        finally:
            done.set()
            watcher.join()
    assert peak_bytes <= cap_bytes + margin_bytes, f"peaked at {peak_bytes / MiB:.0f} MiB"
    assert job["status"] == "failed"
    assert "more than this contributor's package cache of 0.12 GiB" in job["error"], job
    assert "stopped" in job["error"]
    assert usage_bytes(deps) < MiB
    assert list((deps / "sets").iterdir()) == []
    assert list((deps / "tmp").iterdir()) == []


BAD_REQUIREMENTS = [
    (["greeter @ https://example.com/greeter-1.0-py3-none-any.whl"], 422, "URL"),
    (["-e ."], 422, "option"),
    (["--index-url=http://evil"], 422, "option"),
    (["/etc/passwd"], 422, "not a valid PEP 508"),
    (["greeter; os_name == 'nt'"], 422, "environment marker"),
    (["x" * 201], 422, "longer than 200"),
    ([f"p{n}" for n in range(65)], 422, "64"),
    (["greeter\nnumpy"], 422, "printable ASCII"),
    ([7], 422, "requirements.0"),
]


@pytest.mark.parametrize(("requirements", "code", "says"), BAD_REQUIREMENTS)
def test_bad_requirements_are_refused_at_the_api(
    coordinator: Coordinator, requirements: list[object], code: int, says: str
) -> None:
    """Each bad requirement is a 4xx with one sentence naming the problem, no job made."""
    response = coordinator.api(
        "POST", "/api/v1/jobs", json={"script": "print(1)", "requirements": requirements}
    )
    assert response.status_code == code, response.text
    detail = response.json()["detail"]
    assert says in detail and "\n" not in detail and "Traceback" not in detail
    assert coordinator.api("GET", "/api/v1/jobs").json()["jobs"] == []


BAD_SCRIPTS = [
    ("# /// script\n# dependencies = [\n# ///\n", "not valid TOML"),
    ("# /// script\n# dependencies = 'numpy'\n# ///\n", "list of strings"),
    ('# /// script\n# requires-python = ">=3.12"\n# ///\n', "jobs run on Python 3.11"),
    ("# /// script\n# a = 1\n# ///\n\n# /// script\n# b = 1\n# ///\n", "more than one"),
    ('# /// script\n# dependencies = ["x @ file:///etc"]\n# ///\n', "URL or path"),
    ("# /// script\n# x = " + "[" * 5000 + "\n# ///\n", "not valid TOML"),
]


@pytest.mark.parametrize(("script", "says"), BAD_SCRIPTS)
def test_bad_pep723_blocks_are_a_400(coordinator: Coordinator, script: str, says: str) -> None:
    """The coordinator reads the script's metadata itself; a block it cannot use is a 400."""
    response = coordinator.api("POST", "/api/v1/jobs", json={"script": script + "print(1)"})
    assert response.status_code == 400, response.text
    assert says in response.json()["detail"]


def test_many_unclosed_blocks_are_read_in_linear_time(coordinator: Coordinator) -> None:
    """A script of many unclosed '# ///' lines (quadratic for the PEP's regex) is accepted
    at once."""
    script = "# /// script\n" * 75_000 + "print(1)\n"
    response = coordinator.api("POST", "/api/v1/jobs", json={"script": script})
    assert response.status_code == 201, response.text
    assert response.elapsed.total_seconds() < 5


def test_cli_requirements_file(coordinator: Coordinator, tmp_path: Path) -> None:
    """`compound submit -r requirements.txt` sends its packages (comments and blank lines
    skipped) after the script's own; a bad PEP 723 block is refused before sending; an
    option in the file is refused with its line."""
    script = tmp_path / "job.py"
    script.write_text(GREETER_SCRIPT)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# the job's packages\n\nnumpy>=2  # arrays\nGreeter==1.0\n")
    result = run_cli("submit", str(script), "-r", str(requirements), "-d", coordinator=coordinator)
    assert result.returncode == 0, result.stderr
    job = coordinator.job(result.stdout.decode().strip())
    assert job["requirements"] == ["greeter==1.0", "numpy>=2"]

    script.write_text('# /// script\n# requires-python = ">=3.12"\n# ///\nprint(1)\n')
    early = run_cli("submit", str(script), "-d", coordinator=coordinator)
    assert early.returncode == 3
    assert b"the script requires Python >=3.12, but jobs run on Python 3.11" in early.stderr
    assert len(coordinator.api("GET", "/api/v1/jobs").json()["jobs"]) == 1

    requirements.write_text("numpy\n-r other.txt\n")
    refused = run_cli("submit", str(script), "-r", str(requirements), coordinator=coordinator)
    assert refused.returncode == 2
    assert b"line 2: the option '-r' is not supported" in refused.stderr


def test_job_view_lists_requirements_in_json(coordinator: Coordinator) -> None:
    """The job's requirements are part of what clients see of it, in canonical form."""
    job_id = coordinator.submit(
        "print(1)", requirements=["NumPy >= 2.0", "numpy>=2.0", "Foo_Bar[b,a]"]
    )
    assert json.loads(coordinator.api("GET", f"/api/v1/jobs/{job_id}").text)["requirements"] == [
        "numpy>=2.0",
        "foo-bar[a,b]",
    ]


def test_web_submitter_sends_the_requirements_box(
    coordinator: Coordinator, deps_agent: Callable[..., Agent], page: Page
) -> None:
    """The submitter page's package box (the desktop app shows the same page) reaches the
    job; a bad line is refused with the coordinator's sentence."""
    deps_agent()
    page.goto(coordinator.url + "/submitter.html")
    page.get_by_test_id("requirements-box").locator("summary").click()
    box = page.get_by_test_id("requirements-input")
    box.fill("-e .\n")
    page.get_by_test_id("script-input").set_input_files(
        {"name": "web.py", "mimeType": "text/x-python", "buffer": WEB_SCRIPT}
    )
    page.get_by_test_id("submit-button").click()
    expect(page.get_by_test_id("error-message")).to_contain_text("is an option")

    box.fill("# the greeting\ngreeter==1.0  # pinned\n\n")
    page.get_by_test_id("submit-button").click()
    expect(page.get_by_test_id("status-badge")).to_have_text("Complete ✓", timeout=120_000)
    text: str = page.evaluate("() => window.compoundLog.text()")
    assert "hello, web, from greeter" in text
    assert "[compound] resolving 1 requirement(s): greeter==1.0" in text
