"""Profiles of (a) and (c): py-spy flame graphs of the coordinator, the agent and the CLI.

py-spy samples the running coordinator and agent (``record --pid``) while the workload
runs ``--runs`` times through ``compound submit``, and records the last CLI run from its
start (``record -- python -m compound submit``). One SVG per process and workload is kept
in bench/ as ``profile_<a|c>_<process>.svg``; ``--format raw`` writes collapsed stacks
instead (for reading in a terminal).

    PYTHONPATH=src .venv/bin/python bench/profiles.py [--out bench] [--format flamegraph]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from end_to_end import SHORT_LINES_SCRIPT, TRIVIAL, Stack, compound_submit, run_timed, write_script

from support import Coordinator, product_env

SAMPLES_PER_S = 250
PY_SPY_STOP_TIMEOUT_S = 30.0


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/python -m pip install py-spy")
    return found


def attach(pid: int, out: Path, fmt: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [py_spy(), "record", "--pid", str(pid), "--rate", str(SAMPLES_PER_S),
         "--format", fmt, "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def detach(recorders: list[subprocess.Popen[bytes]]) -> None:
    """SIGINT makes py-spy write its file and exit."""
    for recorder in recorders:
        recorder.send_signal(signal.SIGINT)
    for recorder in recorders:
        try:
            recorder.wait(PY_SPY_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait(5)


def profile_cli(command: list[str], out: Path, fmt: str) -> None:
    subprocess.run(
        [py_spy(), "record", "--rate", str(SAMPLES_PER_S), "--format", fmt,
         "--output", str(out), "--", *command],
        capture_output=True, env=product_env(), check=True, timeout=300,
    )  # fmt: skip


def _pid(process: Coordinator | object) -> int:
    proc = getattr(process, "proc", None)
    assert proc is not None
    return int(proc.pid)


def profile(
    stack: Stack, root: Path, name: str, script_text: str, runs: int, out_dir: Path, fmt: str
) -> list[Path]:
    assert stack.coordinator is not None and stack.agent is not None
    suffix = "svg" if fmt == "flamegraph" else "txt"
    script = write_script(root, f"profile_{name}", script_text)
    command = compound_submit(script, stack.coordinator.url)
    run_timed(command)  # warm
    outputs = {
        process: out_dir / f"profile_{name}_{process}.{suffix}"
        for process in ("coordinator", "agent", "cli")
    }
    recorders = [
        attach(_pid(stack.coordinator), outputs["coordinator"], fmt),
        attach(_pid(stack.agent), outputs["agent"], fmt),
    ]
    try:
        for _ in range(runs - 1):
            run_timed(command)
        profile_cli(command, outputs["cli"], fmt)
    finally:
        detach(recorders)
    return list(outputs.values())


def main(out_dir: Path, fmt: str = "flamegraph", runs: int = 5) -> list[Path]:
    written: list[Path] = []
    with (
        tempfile.TemporaryDirectory(prefix="compound-bench-profile-") as workdir,
        Stack(Path(workdir)) as stack,
    ):
        root = Path(workdir)
        written += profile(stack, root, "a", TRIVIAL, runs, out_dir, fmt)
        written += profile(stack, root, "c", SHORT_LINES_SCRIPT, max(2, runs // 2), out_dir, fmt)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument(
        "--format", default="flamegraph", choices=["flamegraph", "raw", "speedscope"]
    )
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    for path in main(options.out, options.format, options.runs):
        print(path)
