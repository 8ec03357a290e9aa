"""The seccomp profile of a job's container: native ABI only, no io_uring, no AF_VSOCK.

Each probe is first run on this machine outside any sandbox, where the call goes through,
so a probe that could never see a call allowed cannot pass by accident.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest

from compound.agent.runners.base import RunResult
from compound.agent.runners.docker.runner import DockerRunner, DockerRunnerSettings
from compound.agent.runners.docker.seccomp import ALLOWED, NATIVE_ABI, profile, security_options
from compound.protocol import JobStatus
from docker_env import RUNTIMES, run_job

pytestmark = pytest.mark.timeout(60)

# Prints what each refused call does: the i386 getpid through `int 0x80` (in a child, which
# the filter kills), io_uring_setup, and a VM socket.
PROBE = r"""
import ctypes, errno, json, mmap, os, socket, subprocess, sys

COMPAT_GETPID = '''
import ctypes, mmap, os
code = bytes.fromhex("b814000000cd80c3")  # mov eax, 20 (i386 getpid); int 0x80; ret
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print("same" if call() == os.getpid() else "different")
'''
child = subprocess.run([sys.executable, "-c", COMPAT_GETPID], capture_output=True, text=True)
libc = ctypes.CDLL(None, use_errno=True)
uring = libc.syscall(425, 1, None)  # io_uring_setup(1, NULL): EFAULT where allowed
try:
    socket.socket(40, socket.SOCK_STREAM).close()
    vsock = "created"
except OSError as exc:
    vsock = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps({
    "compat": [child.returncode, child.stdout.strip()],
    "io_uring": errno.errorcode.get(ctypes.get_errno(), "none") if uring < 0 else "created",
    "vsock": vsock,
    "seccomp": [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")],
}))
"""

X86_64 = platform.machine() == "x86_64"


@pytest.fixture
async def runc_runner(docker_engine: str) -> AsyncIterator[DockerRunner]:
    settings = DockerRunnerSettings(
        image=docker_engine, runtime="runc", node_id=f"test-{uuid.uuid4().hex[:12]}", warm=0
    )
    runner = DockerRunner(settings)
    await runner.prepare()
    yield runner
    await runner.close()


def test_the_probe_sees_every_call_allowed_outside_a_sandbox() -> None:
    """The control: on this machine, unfiltered, each probed call goes through."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    seen = json.loads(done.stdout)
    assert seen["seccomp"] == ["0"]
    assert seen["io_uring"] == "EFAULT"
    # No vsock transport loaded: the socket is refused by the kernel, not by a filter.
    assert seen["vsock"] in ("created", "EAFNOSUPPORT")
    if X86_64:
        assert seen["compat"] == [0, "same"]


@pytest.mark.skipif(platform.machine() not in NATIVE_ABI, reason="engine's default profile")
async def test_a_job_may_not_use_compat_abis_io_uring_or_vm_sockets(
    runc_runner: DockerRunner,
) -> None:
    result, sink = await run_job(runc_runner, PROBE)
    assert result == RunResult(JobStatus.SUCCEEDED, 0), sink.stderr
    seen = json.loads(sink.stdout)
    assert seen["seccomp"] == ["2"]  # a filter is on
    assert seen["io_uring"] == "EPERM"
    assert seen["vsock"] == "EPERM"
    if X86_64:
        # The 32-bit ABI is another architecture to the filter: the caller is killed.
        assert seen["compat"] == [-31, ""]


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_everyday_jobs_still_run_under_the_profile(docker_engine: str, runtime: str) -> None:
    """Threads, processes, pipes, sockets between them, timers, shared memory, mmap."""
    script = (
        "import asyncio, concurrent.futures, mmap, multiprocessing, os, socket, subprocess\n"
        "import sys, tempfile, threading, time\n"
        "def square(x):\n"
        "    return x * x\n"
        "if __name__ == '__main__':\n"
        "    with multiprocessing.Pool(2) as pool:\n"
        "        print(sum(pool.map(square, range(10))))\n"
        "    with concurrent.futures.ThreadPoolExecutor(4) as threads:\n"
        "        print(sum(threads.map(square, range(10))))\n"
        "    print(subprocess.run([sys.executable, '-c', 'print(6 * 7)'],\n"
        "        capture_output=True, text=True).stdout.strip())\n"
        "    a, b = socket.socketpair(); a.send(b'ping'); print(b.recv(4).decode())\n"
        "    server = socket.socket(); server.bind(('127.0.0.1', 0)); server.listen()\n"
        "    client = socket.create_connection(server.getsockname()); peer, _ = server.accept()\n"
        "    client.sendall(b'tcp'); print(peer.recv(3).decode())\n"
        "    shared = mmap.mmap(-1, 4096); shared.write(b'mapped'); print(shared[:6].decode())\n"
        "    print(asyncio.run(asyncio.sleep(0.01, result='async')))\n"
        "    with tempfile.TemporaryFile() as f:\n"
        "        f.write(b'file'); f.seek(0); print(f.read().decode())\n"
        "    print(os.cpu_count() > 0, time.monotonic() > 0)\n"
    )
    settings = DockerRunnerSettings(
        image=docker_engine, runtime=runtime, node_id=f"test-{uuid.uuid4().hex[:12]}", warm=0
    )
    runner = DockerRunner(settings)
    await runner.prepare()
    try:
        result, sink = await run_job(runner, script)
    finally:
        await runner.close()
    assert result == RunResult(JobStatus.SUCCEEDED, 0), sink.stderr
    lines = ["285", "285", "42", "ping", "tcp", "mapped", "async", "file", "True", "True"]
    assert sink.stdout.decode().split() == lines


def test_profile_is_the_native_abi_only() -> None:
    chosen = profile("x86_64")
    assert chosen is not None
    assert chosen["architectures"] == ["SCMP_ARCH_X86_64"]
    assert chosen["defaultAction"] == "SCMP_ACT_ERRNO"
    assert not [name for name in ALLOWED if name.startswith("io_uring")]
    assert not [name for name in ALLOWED if name.endswith(("32", "_time64"))]
    aarch64 = profile("aarch64")
    assert aarch64 is not None and aarch64["architectures"] == ["SCMP_ARCH_AARCH64"]


def test_unknown_architecture_keeps_the_engine_default() -> None:
    assert profile("riscv64") is None
    assert security_options("riscv64") == ["no-new-privileges"]
    assert security_options(None) == ["no-new-privileges"]
    options = security_options("x86_64")
    assert options[0] == "no-new-privileges"
    assert json.loads(options[1].removeprefix("seccomp=")) == profile("x86_64")
