"""The system calls a job may make: a seccomp profile for the engine's own architecture.

Docker's default profile allows, on x86-64, the system calls of three ABIs: the 64-bit one,
the 32-bit (i386) one and x32. A job is a program for the image's own interpreter, which
uses only the native ABI; the compatibility ABIs are kernel code no job needs, with a long
history of kernel bugs. This profile allows the calls of Docker's default for a container
without capabilities (our containers drop them all), for the native ABI only, and further
refuses io_uring (its own kernel attack surface, off in Docker 25's default and in most
hardened kernels) and AF_VSOCK sockets (the host's VM sockets, reachable without a network).

A third of the filter is also a third of the work: the engine, the runtime and the kernel
compile, copy and load the filter for every container, and a trivial job's container spent
~9 ms of CPU (about a tenth of its start) on the compatibility ABIs' part of it.

On an architecture not listed here the engine's default profile applies.
"""

from __future__ import annotations

import errno
import functools
import json

# The engine's "Architecture" (`docker info`) -> libseccomp's name of its native ABI.
NATIVE_ABI = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}

# Allowed with any arguments. Docker's default list without the calls of 32-bit ABIs
# (`*32`, `*64` twins, `*_time64`, multiplexers) and without io_uring. A name the native
# ABI lacks (`open` on aarch64) is skipped by the runtime.
_ALLOWED_NAMES = """
    accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown
    clock_adjtime clock_getres clock_gettime clock_nanosleep close close_range connect
    copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_pwait
    epoll_pwait2 epoll_wait eventfd eventfd2 execve execveat exit exit_group faccessat
    faccessat2 fadvise64 fallocate fanotify_mark fchdir fchmod fchmodat fchown fchownat
    fcntl fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstatfs
    fsync ftruncate futex futex_waitv futimesat get_robust_list get_thread_area getcpu
    getcwd getdents getdents64 getegid geteuid getgid getgroups getitimer getpeername
    getpgid getpgrp getpid getppid getpriority getrandom getresgid getresuid getrlimit
    getrusage getsid getsockname getsockopt gettid gettimeofday getuid getxattr
    inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel io_destroy
    io_getevents io_pgetevents io_setup io_submit ioctl ioprio_get ioprio_set kill
    landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lgetxattr link
    linkat listen listxattr llistxattr lremovexattr lseek lsetxattr lstat madvise membarrier
    memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap
    mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedsend mq_unlink mremap
    msgctl msgget msgrcv msgsnd msync munlock munlockall munmap nanosleep newfstatat open
    openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2 poll ppoll prctl pread64
    preadv preadv2 prlimit64 process_mrelease pselect6 pwrite64 pwritev pwritev2 read
    readahead readlink readlinkat readv recvfrom recvmmsg recvmsg remap_file_pages
    removexattr rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction
    rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
    rt_tgsigqueueinfo sched_get_priority_max sched_get_priority_min sched_getaffinity
    sched_getattr sched_getparam sched_getscheduler sched_rr_get_interval sched_setaffinity
    sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget
    semop semtimedop sendfile sendmmsg sendmsg sendto set_robust_list set_thread_area
    set_tid_address setfsgid setfsuid setgid setgroups setitimer setpgid setpriority
    setregid setresgid setresuid setreuid setrlimit setsid setsockopt setuid setxattr shmat
    shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 socketpair splice stat
    statfs statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
    timer_create timer_delete timer_getoverrun timer_gettime timer_settime timerfd_create
    timerfd_gettime timerfd_settime times tkill truncate umask uname unlink unlinkat utime
    utimensat utimes vfork vmsplice wait4 waitid write writev
"""
ALLOWED = tuple(_ALLOWED_NAMES.split())

AF_VSOCK = 40
# personality(2) personas Docker's default lets a program ask for: PER_LINUX, PER_LINUX32,
# UNAME26 and both, and 0xffffffff, which only reads the current one.
PERSONAS = (0, 8, 0x20000, 0x20008, 0xFFFFFFFF)
# clone(2) flags that make new namespaces (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC |
# NEWUSER | NEWPID | NEWNET): refused, as without CAP_SYS_ADMIN in Docker's default.
NAMESPACE_FLAGS = 0x7E020000


def _argument_rule(name: str, index: int, value: int, op: str) -> dict[str, object]:
    condition = {"index": index, "value": value, "valueTwo": 0, "op": op}
    return {"names": [name], "action": "SCMP_ACT_ALLOW", "args": [condition]}


def profile(architecture: str) -> dict[str, object] | None:
    """The profile for an engine on ``architecture``; None where the engine's default stays."""
    abi = NATIVE_ABI.get(architecture)
    if abi is None:
        return None
    rules: list[dict[str, object]] = [{"names": list(ALLOWED), "action": "SCMP_ACT_ALLOW"}]
    rules.append(_argument_rule("socket", 0, AF_VSOCK, "SCMP_CMP_NE"))
    rules += [_argument_rule("personality", 0, value, "SCMP_CMP_EQ") for value in PERSONAS]
    rules.append(_argument_rule("clone", 0, NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ"))
    # glibc falls back to clone(2) when clone3 says it does not exist; clone3's flags sit in
    # memory a filter cannot read, so it cannot be let through with the namespace check.
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS})
    # Allowed by Docker's default on kernels >= 4.8, where it can no longer skip the filter.
    rules.append({"names": ["ptrace"], "action": "SCMP_ACT_ALLOW"})
    if abi == "SCMP_ARCH_X86_64":
        rules.append({"names": ["arch_prctl", "modify_ldt"], "action": "SCMP_ACT_ALLOW"})
    return {"defaultAction": "SCMP_ACT_ERRNO", "architectures": [abi], "syscalls": rules}


def security_options(architecture: str | None) -> list[str]:
    """The create body's ``SecurityOpt`` for containers on an engine of ``architecture``."""
    seccomp = _seccomp_option(architecture) if architecture is not None else None
    return ["no-new-privileges"] if seccomp is None else ["no-new-privileges", seccomp]


@functools.cache
def _seccomp_option(architecture: str) -> str | None:
    # Encoded once per architecture, not for every container the agent creates.
    chosen = profile(architecture)
    return None if chosen is None else "seccomp=" + json.dumps(chosen, separators=(",", ":"))
