"""The pre-started job interpreter (zygote) behaves as ``python3 -u script`` would.

Each script runs twice in a real container of the sandbox image, under runc and gVisor:
once as ``python3 -u script args`` and once handed to the zygote with the same argv and
environment, and the two must agree byte for byte (stdout, stderr, exit status). Then
through the runner: a plain job is served by the zygote, and a job whose environment
changes how an interpreter starts falls back to its own ``python3 -u`` with that effect.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import pytest

from compound.agent.runners.docker.in_container.prestart import starts_alike
from compound.agent.runners.docker.payload import BOOTSTRAP_SOURCE, boot
from compound.agent.runners.docker.runner import DockerRunner, DockerRunnerSettings
from compound.agent.runners.docker.spec import SITE_DIR, ZYGOTE_SOURCE
from compound.protocol import JobStatus
from docker_env import RUNTIMES, run_job

pytestmark = pytest.mark.timeout(120)

# Runs in the container as nobody: each case as python3 -u, then through the zygote as the
# container runs it (the bootstrap forks it; a stand-in launcher hands it the case's job).
_HARNESS = r"""
import json, os, subprocess, sys
bootstrap = open("/harness/bootstrap.py").read()
boot = open("/harness/boot.bin", "rb").read()
cases = json.load(open("/harness/cases.json"))
results = []
for index, case in enumerate(cases):
    where = f"/tmp/case{index}"
    os.mkdir(where)
    script = f"{where}/main.py"
    open(script, "w").write(case["script"])
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "LANG": "C.UTF-8", **case["env"]}
    argv = [sys.executable, "-u", script, *case["args"]]
    plain = subprocess.run(argv, env=env, cwd=where, capture_output=True, timeout=30)
    json.dump([argv, env], open("/tmp/job.json", "w"))
    zygote = subprocess.run([sys.executable, "-u", "-c", bootstrap], input=boot, env=env,
                            cwd=where, capture_output=True, timeout=30)
    results.append({
        "plain": [plain.returncode, plain.stdout.decode(), plain.stderr.decode()],
        "zygote": [zygote.returncode, zygote.stdout.decode(), zygote.stderr.decode()],
    })
print(json.dumps(results))
"""

# The stand-in launcher: hands the zygote the job in /tmp/job.json, ends as the job ended.
_HANDOVER = r"""
import json, marshal, os, signal, sys
with open(sys.argv[1]) as job_file:
    argv, env = json.load(job_file)
pid, job_write, ready_read = (int(part) for part in sys.argv[2].split(":"))
assert os.read(ready_read, 1) == b"R"
job = ([os.fsencode(a) for a in argv], {os.fsencode(k): os.fsencode(v) for k, v in env.items()})
os.write(job_write, marshal.dumps(job))
os.close(job_write)
_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
os._exit(os.waitstatus_to_exitcode(status))
"""

CASES: dict[str, dict[str, object]] = {
    "identity": {
        "script": (
            "import os, sys\n"
            "print(__name__, __file__, sys.argv, sys.orig_argv, sys.path, os.getcwd())\n"
            "print(sorted(globals()), __loader__.name, __loader__.path, __spec__, __cached__)\n"
            "print(__builtins__, __doc__, __package__, __annotations__)\n"
            "print(dict(os.environ), sys.flags, sys.stdout.encoding, sys.stdout.errors)\n"
            "print(sorted(sys.modules))\n"
        ),
        "args": ["a b", "-c", "é"],
        "env": {"JOB_VAR": "1"},
    },
    "uncaught": {
        "script": (
            "import atexit\natexit.register(print, 'at exit')\n"
            "def inner():\n    raise ValueError('boom')\n"
            "try:\n    {}['k']\nexcept KeyError:\n    inner()\n"
        ),
        "args": [],
        "env": {},
    },
    "exit-code": {"script": "import sys\nprint('x')\nsys.exit(3)\n", "args": [], "env": {}},
    "exit-text": {"script": "raise SystemExit('bye')\n", "args": [], "env": {}},
    "syntax-error": {"script": "print('never')\ndef (:\n", "args": [], "env": {}},
    "keyboard-interrupt": {"script": "raise KeyboardInterrupt\n", "args": [], "env": {}},
    "signal": {
        "script": "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n",
        "args": [],
        "env": {},
    },
    # Without PYTHONUNBUFFERED: -u alone keeps print ahead of the raw write.
    "unbuffered": {
        "script": "import os, sys\nprint('first')\nsys.stderr.write('e')\nos.write(1, b'second')\n",
        "args": [],
        "env": {},
    },
    "warning": {
        "script": "import sys, warnings\nwarnings.warn('careful')\nprint(sys.warnoptions)\n",
        "args": [],
        "env": {"PYTHONWARNINGS": "always"},
    },
    "coding-cookie": {
        "script": "# -*- coding: latin-1 -*-\nprint(len('\u00e9'))\n",
        "args": [],
        "env": {},
    },
}


def _differential(runtime: str, image: str) -> list[dict[str, list[object]]]:
    with tempfile.TemporaryDirectory() as where:
        root = Path(where)
        programs = {"zygote": ZYGOTE_SOURCE, "launcher": _HANDOVER}
        (root / "boot.bin").write_bytes(boot(programs, ["/tmp/job.json"]))
        (root / "bootstrap.py").write_text(BOOTSTRAP_SOURCE)
        (root / "cases.json").write_text(json.dumps(list(CASES.values())))
        (root / "harness.py").write_text(_HARNESS)
        root.chmod(0o755)
        for name in ("boot.bin", "bootstrap.py", "cases.json", "harness.py"):
            (root / name).chmod(0o644)
        command = [
            "docker", "run", "--rm", "--network", "none", "--runtime", runtime,
            "--user", "65534:65534", "-v", f"{root}:/harness:ro", image,
            "python3", "/harness/harness.py",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, timeout=100)
    assert done.returncode == 0, done.stderr.decode()
    results: list[dict[str, list[object]]] = json.loads(done.stdout)
    return results


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_zygote_agrees_with_python_u(runtime: str, docker_engine: str) -> None:
    """Name, file, argv, path, cwd, environment, modules, exit codes, tracebacks, signals,
    unbuffered output: a script handed to the zygote gives exactly what python3 -u gives."""
    results = dict(zip(CASES, _differential(runtime, docker_engine), strict=True))
    for name, result in results.items():
        assert result["zygote"] == result["plain"], name
    # Not vacuous: the cases show what they are about.
    code, out, err = results["uncaught"]["plain"]
    assert code == 1 and out == "at exit\n"
    assert isinstance(err, str) and err.startswith("Traceback (most recent call last):\n")
    assert 'File "/tmp/case1/main.py", line 4, in inner' in err and "<string>" not in err
    assert results["exit-code"]["plain"][0] == 3
    assert results["exit-text"]["plain"][:3:2] == [1, "bye\n"]
    assert results["syntax-error"]["plain"][0] == 1
    assert results["keyboard-interrupt"]["plain"][0] == -2
    assert results["signal"]["plain"][0] == -15
    assert results["unbuffered"]["plain"][1] == "first\nsecond"
    assert "/job" not in str(results["identity"]["plain"][1])
    assert "'a b', '-c', 'é'" in str(results["identity"]["plain"][1])


@pytest.mark.parametrize(
    ("env", "alike"),
    [
        ({"A": "1"}, True),
        ({"HOME": "/tmp", "PYTHONPATH": "/opt/compound/site"}, True),
        ({"PYTHONPATH": "/opt/compound/site:/elsewhere"}, False),
        ({"PYTHONHASHSEED": "0"}, False),
        ({"LC_ALL": "C"}, False),
        ({"TZ": "UTC"}, False),
        ({"HOME": "/root"}, False),
    ],
)
def test_starts_alike_only_when_nothing_read_at_start_differs(
    env: dict[str, str], alike: bool
) -> None:
    """Only variables an interpreter reads while it starts decide the fallback."""
    started_with = {"HOME": "/tmp", "PYTHONPATH": "/opt/compound/site", "PATH": "/bin"}
    assert starts_alike({**started_with, **env}, started_with) is alike


_REPORT = """
import json, os, sys
print(json.dumps({
    "cmdline": open("/proc/self/cmdline", "rb").read().split(b"\\0")[:3][-1][:40].decode(),
    "argv": sys.argv, "path0": sys.path[0], "path": sys.path,
    "hash_randomization": sys.flags.hash_randomization, "warnoptions": sys.warnoptions,
    "env": os.environ.get("JOB_VAR"),
}))
"""


@pytest.fixture(params=RUNTIMES)
async def runner(request: pytest.FixtureRequest, docker_engine: str) -> object:
    runner = DockerRunner(
        DockerRunnerSettings(
            image=docker_engine, runtime=request.param, node_id=f"zygote-{request.param}"
        )
    )
    await runner.prepare()
    yield runner
    await runner.close()


async def _report(runner: DockerRunner, env: dict[str, str]) -> dict[str, object]:
    result, sink = await run_job(runner, _REPORT, args=["x"], env=env)
    assert result.status is JobStatus.SUCCEEDED, sink.stderr
    report: dict[str, object] = json.loads(sink.stdout)
    return report


async def test_plain_job_is_served_by_the_zygote(runner: DockerRunner) -> None:
    """A job whose environment starts an interpreter as the container's does runs in the
    zygote (its command line is the zygote's), as python3 -u would have run it."""
    report = await _report(runner, {"JOB_VAR": "v"})
    assert report["cmdline"] == "-c"
    assert report["argv"] == ["/job/main.py", "x"] and report["path0"] == "/job"
    assert report["env"] == "v"


@pytest.mark.parametrize(
    "env",
    [
        {"PYTHONHASHSEED": "0"},
        {"PYTHONWARNINGS": "error"},
        {"PYTHONPATH": "/opt/extra"},
    ],
    ids=["hashseed", "warnings", "pythonpath"],
)
async def test_environment_read_at_start_falls_back_to_python_u(
    runner: DockerRunner, env: dict[str, str]
) -> None:
    """A job setting a variable the interpreter reads at start runs as python3 -u, and
    the variable has its effect."""
    report = await _report(runner, env)
    assert report["cmdline"] == "/job/main.py"
    assert report["argv"] == ["/job/main.py", "x"] and report["path0"] == "/job"
    if "PYTHONHASHSEED" in env:
        assert report["hash_randomization"] == 0
    if "PYTHONWARNINGS" in env:
        assert report["warnoptions"] == ["error"]
    if "PYTHONPATH" in env:
        assert report["path"][1:4] == [SITE_DIR, "/opt/extra", "/usr/lib/python311.zip"]
