"""The package as a contributor installs it: a built wheel in a fresh virtual environment,
away from the repository, runs `compound coordinator` with its web pages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support import STARTUP_TIMEOUT_S, OutputLines

REPO = Path(__file__).resolve().parent.parent
UV = shutil.which("uv") or str(Path(sys.executable).parent / "uv")


@pytest.mark.timeout(300)
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path: Path) -> None:
    """The wheel installs in a clean venv (no system site packages, no repository on the
    path) and its `compound coordinator` serves / and /healthz; the unit files ship."""
    if not Path(UV).exists():
        pytest.skip("uv is not installed")
    # No PYTHONPATH: the repository's sources must not stand in for the installed package.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = dict(env=env, cwd=tmp_path, check=True, capture_output=True, text=True, timeout=240)
    subprocess.run([UV, "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(REPO)], **run)
    (wheel,) = (tmp_path / "dist").glob("compound-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "--python", sys.executable, str(venv)], **run)
    python = venv / "bin" / "python"
    # The lock as constraints: the versions the tests ran with, from uv's cache when it has
    # them. Only the package's own dependencies are installed (no test or desktop extras).
    subprocess.run(
        [UV, "pip", "install", "--python", str(python), str(wheel), "-c", "requirements.lock"],
        **{**run, "cwd": REPO},
    )
    where = subprocess.run(
        [str(python), "-c", "import compound, pathlib; print(pathlib.Path(compound.__file__))"],
        **run,
    ).stdout.strip()
    package = Path(where).parent
    assert package.is_relative_to(venv), where
    assert (package / "web" / "index.html").is_file()
    assert (package / "systemd" / "compound-agent.service").is_file()
    agent_help = subprocess.run([str(venv / "bin" / "compound"), "agent", "--help"], **run)
    assert "--coordinator" in agent_help.stdout
    proc = subprocess.Popen(
        [str(venv / "bin" / "compound"), "coordinator", "--port", "0", "--data-dir", "data"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output = OutputLines(proc.stdout)
        line = output.wait_for(
            lambda text: "listening on" in text or text == "", STARTUP_TIMEOUT_S, "listening"
        )
        assert "listening on" in line, output.text()
        url = line.rsplit(" ", 1)[1]
        page = httpx.get(url + "/", timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        health = httpx.get(url + "/healthz", timeout=10)
        assert health.json()["status"] == "ok"
        assert httpx.get(url + "/metrics", timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
