"""ANSI colours and carriage returns in the web log panel, in a real browser.

The stored log stays byte-identical (the CLI reads back what the script wrote); only the
panel renders it: colours as styled spans, `\\r` progress bars as one line updated in place,
other escape sequences dropped, never shown raw.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from fake_agent import job_with_output
from support import Agent, Coordinator, run_cli

ESC = "\x1b"

# What the tqdm-style script writes, piece by piece (each piece flushed on its own).
BAR_UPDATES = 200
STDOUT_PIECES = [
    f"{ESC}]0;window title\a{ESC}[?25lstarting\n",
    *(
        f"\r{ESC}[32m{i * 100 // BAR_UPDATES:3d}%{ESC}[0m|{'#' * (i // 10):<20}| {i}/{BAR_UPDATES}"
        for i in range(1, BAR_UPDATES + 1)
    ),
    "\n",
    f"{ESC}[1;32mdone{ESC}[0m {ESC}[38;5;208morange{ESC}[39m {ESC}[38;2;10;200;250mtrue{ESC}[0m"
    f" {ESC}[3;4mit{ESC}[0m\r\n",
]
STDERR_PIECES = [f"{ESC}[33mwarning:{ESC}[0m careful\n"]
FINAL_BAR = f"100%|{'#' * 20}| {BAR_UPDATES}/{BAR_UPDATES}"
RENDERED_STDOUT = f"starting\n{FINAL_BAR}\ndone orange true it\n"


def tqdm_like_script(tmp_path: Path) -> Path:
    path = tmp_path / "progress.py"
    source = f"""
        import sys, time
        for piece in {STDOUT_PIECES!r}:
            sys.stdout.write(piece)
            sys.stdout.flush()
            time.sleep(0.004)
        for piece in {STDERR_PIECES!r}:
            sys.stderr.write(piece)
            sys.stderr.flush()
        """
    path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return path


# Every span in the panel with its text and the computed style that matters.
SPANS = """
[...document.querySelectorAll("[data-testid=log-output] .log-block span")].map((span) => {
  const css = getComputedStyle(span);
  return { text: span.textContent, color: css.color, weight: css.fontWeight,
           italic: css.fontStyle, decoration: css.textDecorationLine };
})
"""

# The panel's text as a user's copy would take it (a selection over the whole panel).
COPIED = """
(() => {
  const log = document.querySelector("[data-testid=log-output]");
  const range = document.createRange();
  range.selectNodeContents(log);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
  const text = selection.toString();
  selection.removeAllRanges();
  return text;
})()
"""


@pytest.mark.timeout(150)
def test_progress_bar_updates_one_line_and_colours_render(
    coordinator: Coordinator, agent: Agent, page: Page, tmp_path: Path
) -> None:
    """A tqdm-style bar is one line with its final text, colours are styled spans, no raw
    escapes show or copy, and `compound logs` returns the bytes the script wrote."""
    page.goto(coordinator.url + "/submitter.html")
    page.get_by_test_id("script-input").set_input_files(tqdm_like_script(tmp_path))
    page.get_by_test_id("submit-button").click()
    page.wait_for_url("**job=*")
    job_id = page.url.split("job=")[1].split("&")[0]
    expect(page.get_by_test_id("status-badge")).to_have_text("Complete ✓", timeout=120_000)
    page.evaluate("window.compoundLog.flushNow()")

    assert page.evaluate("window.compoundLog.text('stdout')") == RENDERED_STDOUT
    assert page.evaluate("window.compoundLog.text('stderr')") == "warning: careful\n"
    drawn: list[str] = page.evaluate(
        """[...document.querySelectorAll("[data-testid=log-output] .log-block")]
             .flatMap((el) => el.textContent.split("\\n").slice(0, Number(el.dataset.lines)))"""
    )
    assert drawn == ["starting", FINAL_BAR, "done orange true it", "warning: careful"]
    assert [line for line in drawn if "%|" in line] == [FINAL_BAR]

    spans = {span["text"]: span for span in page.evaluate(SPANS)}
    green = "rgb(61, 190, 122)"  # --green, ANSI 32
    assert spans["100%"]["color"] == green
    assert spans["done"]["color"] == green and spans["done"]["weight"] == "600"
    assert spans["orange"]["color"] == "rgb(255, 135, 0)"  # xterm 208
    assert spans["true"]["color"] == "rgb(10, 200, 250)"
    assert spans["it"]["italic"] == "italic" and spans["it"]["decoration"] == "underline"
    assert spans["warning:"]["color"] == "rgb(201, 169, 110)"  # --gold, ANSI 33
    stderr_block = page.locator("[data-testid=log-output] .log-block--stderr")
    expect(stderr_block).to_have_text("warning: careful")

    shown = page.get_by_test_id("log-output").inner_text()
    copied = page.evaluate(COPIED)
    for text in (shown, copied):
        assert ESC not in text and "[32m" not in text and "window title" not in text, text
        assert FINAL_BAR in text and "done orange true it" in text

    logs = run_cli("logs", job_id, coordinator=coordinator)
    assert logs.returncode == 0
    assert logs.stdout == "".join(STDOUT_PIECES).encode("utf-8")
    assert logs.stderr == "".join(STDERR_PIECES).encode("utf-8")


PARSER_CASES = r"""
async () => {
  const { LogPanel } = await import("./js/logpanel.js");
  const { applySgr } = await import("./js/ansi.js");
  const E = "\x1b";
  const render = (chunks, stream = "stdout") => {
    const el = document.createElement("div");
    el.className = "log";
    document.body.append(el);
    const panel = new LogPanel(el, {});
    panel.append(chunks.map((data, seq) => ({ seq, stream, data })));
    panel.finish();
    panel.flushNow();
    const drawn = [...el.querySelectorAll(".log-block")]
      .flatMap((block) => block.textContent.split("\n").slice(0, Number(block.dataset.lines)));
    const spans = [...el.querySelectorAll(".log-block span")]
      .map((span) => [span.textContent, span.className, span.style.color]);
    const elements = [...el.querySelectorAll(".log-block *")].map((node) => node.tagName);
    el.remove();
    return { text: panel.text(), drawn, spans, elements, lines: panel.lineCount };
  };

  const updates = [];
  for (let i = 1; i <= 10000; i += 1) updates.push(`\r${E}[36m${i}${E}[0m/10000`);
  const started = performance.now();
  const bar = render([...updates, "\n"]);
  const barMs = performance.now() - started;

  return {
    split: render([`${E}`, "[3", "1", `mred${E}[`, "0m plain\n", `${E}[38;`, "5;", "208mX\n"]),
    unknown: render([
      `a${E}[?25lb${E}]0;title\x07c${E}]8;;http://x${E}\\d${E}7e${E}[5Sf\x07g${E}(Bh${E}[2Ji\n`,
    ]),
    crlf: render(["one\r\ntwo\r\n", "three\r", "\nfour\n"]),
    loneCr: render(["abc\r", "\ndef\n"]),
    overwrite: render(["hello\rJ\n", "hello\r\x1b[Kbye\n", "long line\x1b[2K\rX\n", "ab\bC\n"]),
    nested: render([`outer 0\ninner 0${E}[A\router 1\n\rinner 1\n`]),
    tooLong: render([`${E}[${"1;".repeat(100)}mZ\n`, `${E}[38;5mY\n`, `${E}[38;2;1;2mW\n`]),
    hostile: render([`<img src=x onerror=alert(1)>${E}[31m<b>bold?</b>${E}[0m\n`]),
    unterminatedOsc: render([`${E}]0;no end`, " still title\nvisible\n"]),
    stderr: render([`${E}[32mok${E}[0m\n`], "stderr"),
    bar, barMs,
    sgr: {
      truecolor: applySgr(null, "38;2;1;2;3"),
      colon: applySgr(null, "38:2::4:5:6"),
      bright: applySgr(null, "1;91;104"),
      reset: applySgr(applySgr(null, "1;31"), "0"),
      defaults: applySgr(applySgr(null, "31;42"), "39;49"),
    },
  };
}
"""


@pytest.mark.timeout(60)
def test_ansi_parser_edge_cases(coordinator: Coordinator, page: Page) -> None:
    """Sequences split across records, unknown and malformed sequences, CR/LF combinations,
    cursor movement and hostile text render as a terminal would, never raw or as HTML."""
    page.goto(coordinator.url + "/submitter.html")
    result = page.evaluate(PARSER_CASES)

    split = result["split"]
    assert split["drawn"] == ["red plain", "X"]
    assert split["spans"] == [
        ["red", "ansi-fg-1", ""],
        ["X", "", "rgb(255, 135, 0)"],
    ]
    assert result["unknown"]["drawn"] == ["abcdefghi"]
    assert result["crlf"]["drawn"] == ["one", "two", "three", "four"]
    assert result["crlf"]["text"] == "one\ntwo\nthree\nfour\n"
    assert result["loneCr"]["drawn"] == ["abc", "def"]
    assert result["overwrite"]["drawn"] == ["Jello", "bye", "X", "aC"]
    assert result["nested"]["drawn"] == ["outer 1", "inner 1"]
    assert result["tooLong"]["drawn"] == ["Z", "Y", "W"]
    hostile = result["hostile"]
    assert hostile["drawn"] == ["<img src=x onerror=alert(1)><b>bold?</b>"]
    assert hostile["elements"] == ["SPAN"]
    assert hostile["spans"] == [["<b>bold?</b>", "ansi-fg-1", ""]]
    assert result["unterminatedOsc"]["drawn"] == ["", "visible"]
    assert result["stderr"]["spans"] == [["ok", "ansi-fg-2", ""]]

    bar = result["bar"]
    assert bar["lines"] == 1 and bar["drawn"] == ["10000/10000"]
    assert bar["spans"] == [["10000", "ansi-fg-6", ""]]
    assert result["barMs"] < 1000, result["barMs"]

    sgr = result["sgr"]
    assert sgr["truecolor"]["fg"] == "1,2,3"
    assert sgr["colon"]["fg"] == "4,5,6"
    assert sgr["bright"]["bold"] and sgr["bright"]["fg"] == 9 and sgr["bright"]["bg"] == 12
    assert sgr["reset"] is None and sgr["defaults"] is None


MULTI_LINE_CASES = r"""
async () => {
  const { LogPanel } = await import("./js/logpanel.js");
  const E = "\x1b";
  const render = (records) => {
    const el = document.createElement("div");
    el.className = "log";
    document.body.append(el);
    const panel = new LogPanel(el, {});
    panel.append(records.map(([stream, data], seq) => ({ seq, stream, data })));
    panel.finish();
    panel.flushNow();
    const blocks = [...el.querySelectorAll(".log-block")].map((block) => block.innerHTML);
    el.remove();
    return { text: panel.text(), out: panel.text("stdout"), err: panel.text("stderr"),
             lines: panel.lineCount, blocks };
  };
  const lines = [`${E}[1;31mred${E}[0m one\n`, "plain\r\n", `50%\r${E}[32m100%${E}[0m\n`,
                 `${E}[38;5;208mX`, `Y${E}[0m\n`, "<b>not html</b>\n", "\n", "tail"];
  const perLine = lines.map((data) => ["stdout", data]);
  const oneRecord = [["stdout", lines.join("")]];
  const mixed = [["stdout", lines.slice(0, 3).join("")], ["stderr", "err 1\nerr 2\n"],
                 ["stdout", lines.slice(3).join("")]];
  const mixedPerLine = [...lines.slice(0, 3).map((data) => ["stdout", data]),
                        ["stderr", "err 1\n"], ["stderr", "err 2\n"],
                        ...lines.slice(3).map((data) => ["stdout", data])];
  return { perLine: render(perLine), oneRecord: render(oneRecord),
           mixed: render(mixed), mixedPerLine: render(mixedPerLine) };
}
"""


@pytest.mark.timeout(60)
def test_a_multi_line_record_renders_like_one_record_per_line(
    coordinator: Coordinator, page: Page
) -> None:
    """A record holding many lines (with colours, CR, CRLF and a line cut across records)
    draws exactly the DOM, text and line count that one record per line draws."""
    page.goto(coordinator.url + "/submitter.html")
    result = page.evaluate(MULTI_LINE_CASES)
    assert result["oneRecord"] == result["perLine"]
    assert result["mixed"] == result["mixedPerLine"]
    assert result["perLine"]["text"] == "red one\nplain\n100%\nXY\n<b>not html</b>\n\ntail\n"
    assert result["perLine"]["lines"] == 7 and len(result["perLine"]["blocks"]) >= 1
    assert result["mixed"]["err"] == "err 1\nerr 2\n"


# ~260 KB of progress-bar output that froze a page for 13 s (security review, finding 10): a
# long line of many colours (one run per character), then thousands of carriage-return
# updates of a coloured counter over its start. Each update used to re-slice every run of the
# line; a write must cost its own length.
HEADER_CELLS = 12_000
HEADER = "".join(chr(ord("a") + i % 26) for i in range(HEADER_CELLS))
UPDATES = 9_000
UPDATES_PER_RECORD = 16


def carriage_return_heavy_records() -> list[tuple[str, str]]:
    """(stream, data) records as an agent would report the bar's flushes."""
    header = "".join(f"{ESC}[3{1 + i % 2}m{char}" for i, char in enumerate(HEADER)) + f"{ESC}[0m"
    updates = [f"\r{ESC}[36m{i:5d}{ESC}[0m/{UPDATES}" for i in range(1, UPDATES + 1)]
    pieces = [header[: len(header) // 2], header[len(header) // 2 :]]
    for start in range(0, UPDATES, UPDATES_PER_RECORD):
        pieces.append("".join(updates[start : start + UPDATES_PER_RECORD]))
    pieces.append("\ndone\n")
    return [("stdout", piece) for piece in pieces]


FINAL_LINE = f"{UPDATES:5d}/{UPDATES}" + HEADER[len(f"{UPDATES:5d}/{UPDATES}") :]
RENDERED_HEAVY = f"{FINAL_LINE}\ndone\n"

RENDER_TIMED = r"""
async (records) => {
  const { LogPanel } = await import("./js/logpanel.js");
  const el = document.createElement("div");
  el.className = "log";
  document.body.append(el);
  const panel = new LogPanel(el, {});
  const started = performance.now();
  panel.append(records.map(([stream, data], seq) => ({ seq, stream, data })));
  panel.finish();
  panel.flushNow();
  const ms = performance.now() - started;
  const drawn = [...el.querySelectorAll(".log-block")]
    .flatMap((block) => block.textContent.split("\n").slice(0, Number(block.dataset.lines)));
  const spans = [...el.querySelectorAll(".log-block span")]
    .map((span) => [span.textContent, span.className]);
  el.remove();
  return { ms, text: panel.text(), drawn, spans };
}
"""


@pytest.mark.timeout(120)
def test_carriage_return_heavy_output_renders_in_linear_time(
    coordinator: Coordinator, page: Page
) -> None:
    """~260 KB of carriage-return updates over a long many-coloured line render in well under
    a second (they took 13 s), with the text and colours a terminal would show."""
    records = carriage_return_heavy_records()
    assert 250_000 <= sum(len(data) for _, data in records) <= 270_000
    page.goto(coordinator.url + "/submitter.html")
    result = page.evaluate(RENDER_TIMED, records)
    assert result["text"] == RENDERED_HEAVY
    assert result["drawn"] == [FINAL_LINE, "done"]
    # The counter, then a span per header character it left, up to the panel's bound on
    # elements per block (the rest of the line is drawn unstyled).
    spans = result["spans"]
    assert spans[:3] == [[f"{UPDATES:5d}", "ansi-fg-6"], ["k", "ansi-fg-1"], ["l", "ansi-fg-2"]]
    assert len(spans) == 2000
    assert result["ms"] < 1000, result["ms"]


# Time the page's main thread spent in tasks over 50 ms (what a user feels as a frozen page).
LONG_TASKS = """
window.__longTaskMs = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longTaskMs += entry.duration;
}).observe({ type: "longtask", buffered: true });
"""


@pytest.mark.timeout(120)
def test_carriage_return_heavy_job_does_not_freeze_the_page(
    coordinator: Coordinator, page: Page
) -> None:
    """A job whose stored output is that ~260 KB shows its final text on the submitter page
    while the page's main thread is blocked for under three seconds in all (it froze)."""
    job_id = job_with_output(coordinator, carriage_return_heavy_records())
    page.add_init_script(LONG_TASKS)
    page.goto(f"{coordinator.url}/submitter.html?job={job_id}")
    expect(page.get_by_test_id("status-badge")).to_have_text("Complete ✓", timeout=60_000)
    page.evaluate("window.compoundLog.flushNow()")
    assert page.evaluate("window.compoundLog.text('stdout')") == RENDERED_HEAVY
    blocked_ms = page.evaluate("window.__longTaskMs")
    assert blocked_ms < 3000, blocked_ms


LINE_EDITS = {
    # name: (records, rendered text)
    "erase to the start, again and again": (
        ["y" * 100_000, f"{ESC}[1K" * 40_000, "\n"],
        " " * 100_000 + "\n",
    ),
    "erase the line, write past its end": (
        ["y" * 100_000, f"{ESC}[2KZ" * 40_000, "\n"],
        " " * 139_999 + "Z\n",
    ),
    "backspace, erase to the end": (
        [f"{ESC}[31m" + "ab" * 50_000, f"\b{ESC}[K" * 40_000, "\n"],
        "ab" * 30_000 + "\n",
    ),
    "up to a long line, write, down": (
        ["z" * 100_000 + "\n", f"{ESC}[AQ\n" * 40_000],
        "Q" + "z" * 99_999 + "\n",
    ),
}


@pytest.mark.timeout(120)
def test_line_edits_on_long_lines_cost_their_own_length(
    coordinator: Coordinator, page: Page
) -> None:
    """Erase-line, backspace, padding and cursor-up, repeated tens of thousands of times on
    a 100,000-character line, each render in well under a second with a terminal's text."""
    page.goto(coordinator.url + "/submitter.html")
    for name, (pieces, rendered) in LINE_EDITS.items():
        result = page.evaluate(RENDER_TIMED, [("stdout", piece) for piece in pieces])
        assert result["text"] == rendered, name
        assert result["ms"] < 1000, (name, result["ms"])
