"""Shipped into each job container with the launcher: the job's input and output files.

Inputs arrive as one tar on stdin and are extracted into the job's directory as copies the
job may change: only files and directories with relative paths inside it (no absolute
paths, no ``..``, no links, devices or fifos, no names the sandbox uses, a bounded count);
anything else refuses the whole lot before the job runs. What the extraction left is noted
(``snapshot``). Outputs are what the job left in ``outputs/`` (named relative to it) and
every file it created or changed elsewhere in its directory (named relative to the
directory; the script and unchanged inputs stay behind): regular files only (links and the
like are skipped, and files whose names cannot be kept, see ``name_problem``), up to a byte
cap and a count cap, written as a tar in frames after the trailer's marker (see
docker.trailer for the agent's side).

The agent never imports this module: ``docker.spec`` ships its source in front of the
launcher's (both run as one program, see docker.payload), so it uses the standard library
only and its names are the launcher's. Nothing here runs before the launcher calls it.
"""

from __future__ import annotations

import os
import select
import stat
import struct

# Not typing itself: importing it costs every job's start several ms (it imports re).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    # What tells a changed file from an unchanged one, by name (None: never an output).
    Snapshot = dict[str, tuple[int, int, int] | None]

READ_BYTES = 1024 * 1024
OUTPUTS_DIR_NAME = "outputs"
# Top-level names in the job's directory that are ours: an input may not take them (nor the
# script's name, see extract_inputs).
RESERVED_NAMES = frozenset({"site", OUTPUTS_DIR_NAME})
# What Python leaves beside imported modules: never an output of the job's own.
_CACHE_DIR_NAME = "__pycache__"
MAX_INPUT_PATH_BYTES = 1024
# Trailer frames: kind (1 byte), length (4 bytes, big-endian), data. Must match
# docker.trailer.
FRAME_HEADER_FORMAT = ">BI"
FRAME_TAR = 1
FRAME_END = 2
FRAME_DATA_BYTES = 256 * 1024
# The end frame's data: files, files left out for the byte cap, their bytes, entries
# skipped (not regular files), tar bytes, the job's exit code (as a shell reports it),
# whether a signal ended it, the lengths of the error and input_error texts (UTF-8), files
# left out for the count cap, files skipped for their names, the length of the text naming
# those, then the three texts. Must match docker.trailer. Not JSON: importing json costs
# every job's start ~15 ms.
FOOTER_FORMAT = ">QQQQQiBHHQQHB"
_FOOTER_COUNTS = ("files", "left_out", "left_out_bytes", "skipped", "tar_bytes")
_FOOTER_ENDING = ("exit_code", "signalled")
_FOOTER_NAMES = ("over_count", "unkept")
_FOOTER_TEXTS = ("error", "input_error", "unkept_names")
MAX_FOOTER_TEXT_BYTES = 1000
# Must match docker.trailer.MAX_OUTPUT_FILES.
MAX_OUTPUT_FILES = 10_000
# Must match compound.protocol.output_names.MAX_OUTPUT_PATH_CHARS.
MAX_OUTPUT_PATH_CHARS = 1024
# What a tar entry costs beyond its data at most: its header, a pax header and its data.
_TAR_ENTRY_OVERHEAD_BYTES = 3 * 512
# The end-of-archive blocks and the padding to a whole record.
_TAR_END_BYTES = 2 * 512 + 20 * 512


class InputRefused(Exception):
    """The input files cannot be put in place; the message is one sentence for the user."""


class StdinTar:
    """The next ``size`` bytes of stdin as a file for ``tarfile``'s stream mode."""

    def __init__(self, size: int) -> None:
        self._left = size

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        if size <= 0:
            return b""
        data = os.read(0, min(size, READ_BYTES))
        if not data:
            raise EOFError("the agent closed stdin before sending the whole input files")
        self._left -= len(data)
        return data


def _input_parts(name: str, reserved: frozenset[str]) -> list[str]:
    if name.startswith("/"):
        raise InputRefused(f"{name!r} is an absolute path")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_INPUT_PATH_BYTES:
        raise InputRefused(f"a path is longer than {MAX_INPUT_PATH_BYTES} bytes")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InputRefused(f"{name!r} points outside the job's directory")
    if not parts:
        raise InputRefused(f"{name!r} is not a file name")
    if parts[0] in reserved:
        raise InputRefused(f"{parts[0]!r} is reserved in the job's directory; rename it")
    return parts


def _kind(member: Any) -> str | None:
    """Why ``member`` cannot be an input (what it is), or None for a file or directory."""
    if member.isdir() or (member.isreg() and not member.issparse()):
        return None
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device"
    if member.isfifo():
        return "a fifo"
    return "not a regular file or directory"


def _ensure_dirs(job_dir: str, parts: list[str], made: list[str]) -> str:
    """Create the directories ``parts`` under ``job_dir`` as needed; the last one's path."""
    path = job_dir
    for part in parts:
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o755)
            made.append(path)
        except FileExistsError:
            # Nothing but this function has written here, and it makes no links.
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                where = path[len(job_dir) + 1 :]
                raise InputRefused(f"{where!r} is both a file and a folder") from None
    return path


def _write_input(tar: Any, member: Any, path: str) -> None:
    source = tar.extractfile(member)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise InputRefused(f"{member.name!r} appears twice") from None
    try:
        while chunk := source.read(READ_BYTES):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def extract_inputs(job_dir: str, size: int, max_files: int, script_name: str) -> None:
    """Extract the tar of ``size`` bytes on stdin into ``job_dir``: copies the job may
    change (files 0644, folders 0755, the job's own uid).

    Only files and directories with relative paths inside ``job_dir`` that take neither a
    reserved name nor ``script_name``; anything else refuses the whole lot (InputRefused).
    Sizes are bounded by the tmpfs (ENOSPC).
    """
    reserved = RESERVED_NAMES | {script_name}
    import tarfile  # only jobs with inputs pay for the import

    made: list[str] = []
    count = 0
    try:
        with tarfile.open(fileobj=StdinTar(size), mode="r|") as tar:  # type: ignore[call-overload]
            for member in tar:
                count += 1
                if count > max_files:
                    raise InputRefused(f"there are more than {max_files} input files")
                parts = _input_parts(member.name, reserved)
                kind = _kind(member)
                if kind is not None:
                    raise InputRefused(f"{member.name!r} is {kind}")
                if member.isdir():
                    _ensure_dirs(job_dir, parts, made)
                else:
                    parent = _ensure_dirs(job_dir, parts[:-1], made)
                    _write_input(tar, member, os.path.join(parent, parts[-1]))
    except tarfile.TarError as exc:
        raise InputRefused(f"the input files are not a valid tar archive ({exc})") from None
    except OSError as exc:
        raise InputRefused(f"the input files could not be written ({exc.strerror})") from None
    except EOFError:
        raise InputRefused("the input files ended early") from None


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def snapshot(job_dir: str) -> Snapshot:
    """The regular files in ``job_dir`` now (the script and the inputs), by name, with what
    tells a changed file from an unchanged one (None: never an output, whatever happens to
    it); outputs are the files not found unchanged."""
    found: list[tuple[str, str]] = []
    _output_files(job_dir, found, [], skip_top=OUTPUTS_DIR_NAME)
    return {name: _identity(os.lstat(path)) for path, name in found}


class FrameWriter:
    """Writes the trailer to stdout: tar data in bounded frames, then the end frame."""

    def __init__(self, marker: bytes) -> None:
        self._marker = marker
        self._buffer = bytearray(marker)
        self.tar_bytes = 0

    def write(self, data: bytes) -> int:
        self.tar_bytes += len(data)
        view = memoryview(data)
        while view:
            piece = view[:FRAME_DATA_BYTES]
            self._buffer += struct.pack(FRAME_HEADER_FORMAT, FRAME_TAR, len(piece))
            self._buffer += piece
            view = view[len(piece) :]
            if len(self._buffer) >= FRAME_DATA_BYTES:
                self.flush()
        return len(data)

    def end(self, footer: dict[str, Any]) -> None:
        """Mark the end of stderr, then write the end frame: the job's output is all out.

        The engine copies stdout and stderr on their own, so the end frame on stdout may
        overtake the job's last stderr; the marker on stderr, written after every process
        of the job is dead, tells the agent that stderr has nothing more to come.
        """
        write_all(2, self._marker)
        data = footer_bytes(footer)
        self._buffer += struct.pack(FRAME_HEADER_FORMAT, FRAME_END, len(data)) + data
        self.flush()

    def flush(self) -> None:
        write_all(1, self._buffer)
        self._buffer.clear()


def footer_bytes(footer: dict[str, Any]) -> bytes:
    texts = [
        str(footer.get(name) or "").encode("utf-8", "replace")[:MAX_FOOTER_TEXT_BYTES]
        for name in _FOOTER_TEXTS
    ]
    counts = [footer.get(name, 0) for name in (*_FOOTER_COUNTS, *_FOOTER_ENDING)]
    names = [footer.get(name, 0) for name in _FOOTER_NAMES]
    stays = footer.get("stays", 0)
    fields = (*counts, len(texts[0]), len(texts[1]), *names, len(texts[2]), stays)
    return struct.pack(FOOTER_FORMAT, *fields) + b"".join(texts)


def name_problem(name: str) -> str | None:
    """Why the output ``name`` cannot be kept, or None. Must match
    compound.protocol.output_names.output_name_problem (a test checks that they agree)."""
    if "\\" in name:
        return "holds a backslash"
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in name):
        return "holds a control character"
    if any(0xD800 <= ord(char) <= 0xDFFF for char in name):
        return "is not valid UTF-8"
    if len(name) > MAX_OUTPUT_PATH_CHARS:
        return f"is longer than {MAX_OUTPUT_PATH_CHARS} characters"
    return None


def write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


def _output_files(
    root: str, found: list[tuple[str, str]], skipped: list[str], skip_top: str | None = None
) -> None:
    """Regular files under ``root`` as (path, name in the tar); links and others skipped;
    ``skip_top``: a top-level folder left out (with Python's caches everywhere)."""
    stack = [""]
    while stack:
        relative = stack.pop()
        with os.scandir(os.path.join(root, relative)) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = f"{relative}/{entry.name}" if relative else entry.name
                if name == skip_top:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != _CACHE_DIR_NAME:
                        stack.append(name)
                elif entry.is_file(follow_symlinks=False):
                    found.append((entry.path, name))
                else:
                    skipped.append(name)


def _add_output(tar: Any, path: str, name: str) -> int | None:
    """Add one file to ``tar``; its size, or None when it is not a regular file."""
    import tarfile

    # O_NONBLOCK: a fifo swapped in must not hang us (the job is dead, but be sure).
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        member = tarfile.TarInfo(name)
        member.size = info.st_size
        member.mtime = int(info.st_mtime)
        member.mode = 0o644
        tar.addfile(member, source)
        return info.st_size


def _changed_files(
    job_dir: str, before: Snapshot, taken: set[str], skipped: list[str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """The files in ``job_dir`` outside outputs/ created or changed since ``before``; the
    names also in outputs/ (``taken``, which wins) as unkept entries."""
    found: list[tuple[str, str]] = []
    _output_files(job_dir, found, skipped, skip_top=OUTPUTS_DIR_NAME)
    changed, clashes = [], []
    for path, name in found:
        if name in before and before[name] in (None, _identity(os.lstat(path))):
            continue
        if name in taken:
            clashes.append(f"{name[:100]!r} is also in outputs/, which was kept")
        else:
            changed.append((path, name))
    return changed, clashes


def output_files(
    job_dir: str, before: Snapshot
) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """What comes back: (path, name) of outputs/'s files then of the job's directory's new
    or changed ones; the names skipped (not regular files); the unkept entries."""
    found: list[tuple[str, str]] = []
    skipped: list[str] = []
    outputs_dir = os.path.join(job_dir, OUTPUTS_DIR_NAME)
    if _has_entries(outputs_dir):
        _output_files(outputs_dir, found, skipped)
    changed, clashes = _changed_files(job_dir, before, {name for _, name in found}, skipped)
    return found + changed, skipped, clashes


def collect_outputs(
    writer: FrameWriter, job_dir: str, before: Snapshot, max_bytes: int
) -> dict[str, Any]:
    """Write what fits of the job's outputs into ``writer`` as a tar; the footer's fields."""
    found, skipped, unkept = output_files(job_dir, before)
    files, left_out, left_out_bytes, over_count = 0, 0, 0, 0
    if not found:  # no tar (nor tarfile's import) for a job that left nothing
        return _footer(0, (0, 0, 0), skipped, unkept)
    import tarfile

    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for path, name in found:
            problem = name_problem(name)
            if problem is not None:
                unkept.append(f"{name[:100]!r} {problem}")
                continue
            if files >= MAX_OUTPUT_FILES:
                over_count += 1
                continue
            size = os.lstat(path).st_size
            cost = size + _TAR_ENTRY_OVERHEAD_BYTES + len(name.encode("utf-8", "surrogateescape"))
            if writer.tar_bytes + cost + _TAR_END_BYTES > max_bytes:
                left_out, left_out_bytes = left_out + 1, left_out_bytes + size
                continue
            try:
                added = _add_output(tar, path, name)
            except (OSError, ValueError):  # ValueError: a name tar cannot encode
                added = None
            if added is None:
                skipped.append(name)
            else:
                files += 1
    return _footer(files, (left_out, left_out_bytes, over_count), skipped, unkept)


def _footer(
    files: int, left_out: tuple[int, int, int], skipped: list[str], unkept: list[str]
) -> dict[str, Any]:
    """The footer's counts: ``left_out`` is (files, their bytes, files over the count)."""
    return {
        "files": files,
        "left_out": left_out[0],
        "left_out_bytes": left_out[1],
        "over_count": left_out[2],
        "skipped": len(skipped),
        "unkept": len(unkept),
        "unkept_names": "; ".join(unkept),
    }


def _has_entries(outputs_dir: str) -> bool:
    """The job may have removed outputs/ or put a link there (it owns /job): nothing then."""
    try:
        if not stat.S_ISDIR(os.lstat(outputs_dir).st_mode):
            return False
    except FileNotFoundError:
        return False
    with os.scandir(outputs_dir) as entries:
        return any(True for _ in entries)


def send_outputs(
    marker: bytes,
    job_dir: str,
    before: Snapshot,
    max_bytes: int,
    ending: tuple[int, bool],
    stays: Callable[[], bool] | None = None,
) -> bool:
    """Write the trailer of the job that ended with ``ending`` (exit code, signalled);
    any failure becomes the footer's ``error`` (the job's code stands). ``stays``, called
    once the outputs are out and before the end frame: whether this container takes
    another job (the footer's ``stays``, returned)."""
    exit_code, signalled = ending
    writer = FrameWriter(marker)
    footer: dict[str, Any] = {"files": 0}
    try:
        footer = collect_outputs(writer, job_dir, before, max_bytes)
    except Exception as exc:  # whatever the job left, the trailer must end properly
        footer = {"files": 0, "error": f"the outputs could not be collected ({exc})"}
    footer.update(tar_bytes=writer.tar_bytes, exit_code=exit_code, signalled=int(signalled))
    writer.flush()
    try:
        footer["stays"] = int(stays is not None and stays())
    except Exception:  # nothing of it may stop the trailer's end
        footer["stays"] = 0
    writer.end(footer)
    return bool(footer["stays"])


def refuse_inputs(marker: bytes, reason: str, exit_code: int) -> None:
    footer = {"files": 0, "tar_bytes": 0, "input_error": reason, "exit_code": exit_code}
    FrameWriter(marker).end(footer)
