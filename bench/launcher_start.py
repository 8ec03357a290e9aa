"""Benchmark: the launcher's own cost, inside a container, against another tree's launcher.

Runs each tree's container program (the bootstrap and launcher with its zygote, or an older
tree's ``python3 -I -S -c <launcher>``) with a trivial job (``pass``) ``--repeat`` times per
tree, interleaved, inside one container started from the sandbox image (as root, the
launcher as uid 65534 so its ``kill(-1)`` reaches only itself), and prints the medians.
The container start and the engine are not in these figures: only what the launcher adds.

    .venv/bin/python bench/launcher_start.py OTHER_SRC [--repeat 40]

where OTHER_SRC is another tree's ``src`` (e.g. ``git archive REV src | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

_BUILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from compound.agent.runners.docker import spec
from compound.agent.runners.base import RunSpec
job, out = sys.argv[3], sys.argv[2]
key = spec.sandbox_key(spec.DockerRunnerSettings(), "runc", None)
payload = spec.job_payload(RunSpec(job_id="bench", script="pass\\n"), key)
if hasattr(spec, "files_control"):
    marker = spec.TRAILER_MARKER_PREFIX + b"0" * 32
    payload += spec.files_control(marker, 0, spec.DockerRunnerSettings())
if hasattr(spec, "launcher_boot"):  # the container's program reads the launcher from stdin
    from compound.agent.runners.docker.payload import BOOTSTRAP_SOURCE
    command = ["python3", "-u", "-c", BOOTSTRAP_SOURCE]
    payload = spec.launcher_boot(job + "/main.py") + payload
else:
    arguments = spec.launcher_args(job + "/main.py", job + "/site")
    command = ["python3", "-I", "-S", "-c", spec.LAUNCHER_SOURCE, *arguments]
json.dump(command, open(out + "/command.json", "w"))
open(out + "/payload.bin", "wb").write(payload)
"""

_HARNESS = """
import json, os, shutil, statistics, subprocess, sys, time
names, repeat = sys.argv[2:], int(sys.argv[1])
timings = {name: [] for name in names}
for index in range(repeat + 1):
    for name in names:
        job = f"/tmp/{name}"
        shutil.rmtree(job, ignore_errors=True)
        os.mkdir(job)
        os.chown(job, 65534, 65534)
        command = json.load(open(f"/bench/{name}/command.json"))
        started = time.perf_counter()
        done = subprocess.run(
            command, input=open(f"/bench/{name}/payload.bin", "rb").read(),
            capture_output=True, user=65534, group=65534, cwd=job)
        if done.returncode != 0:
            raise SystemExit(done.stderr.decode())
        if index:
            timings[name].append((time.perf_counter() - started) * 1000)
for name in names:
    print(f"{name}: median {statistics.median(timings[name]):.1f} ms, "
          f"min {min(timings[name]):.1f} ms ({len(timings[name])} runs)")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("other_src", type=Path)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--image", default="python:3.11-slim")
    args = parser.parse_args()
    this_src = Path(__file__).resolve().parent.parent / "src"
    with tempfile.TemporaryDirectory() as work:
        for name, src in (("other", args.other_src), ("this", this_src)):
            (Path(work) / name).mkdir()
            build = [sys.executable, "-c", _BUILD, str(src), f"{work}/{name}", f"/tmp/{name}"]
            subprocess.run(build, check=True)
        (Path(work) / "harness.py").write_text(_HARNESS)
        docker = ["docker", "run", "--rm", "--network", "none", "-v", f"{work}:/bench:ro"]
        harness = ["python3", "/bench/harness.py", str(args.repeat), "other", "this"]
        subprocess.run([*docker, args.image, *harness], check=True)


if __name__ == "__main__":
    main()
