"""Benchmark: the web UI's page loads and a 100k-line log, against baselines from the same run.

Page loads: each page, served by a real coordinator, is opened ``--repeat`` times in Debian's
Chromium (a fresh browser context each time: cold cache, like a first open) and its Navigation
Timing read back; the baseline is a blank HTML page from a plain ``http.server`` on loopback,
opened the same way. The 300 ms budget applies to the median domInteractive.

Log streaming: a job printing 100,000 lines runs on a real agent (Docker) and is followed by
``submitter.html?job=ID`` until the page shows the final status; the baseline is
``compound logs --follow ID``. Both are timed live (from submitting a fresh job to the end)
and as a replay of the finished job (same ID, everything already stored).

    .venv/bin/python bench/ui_page_load.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from playwright.sync_api import Browser, Page, sync_playwright

from support import CHROMIUM, CHROMIUM_ARGS, Agent, Coordinator, product_env

PAGES = ("index.html", "submitter.html", "jobs.html", "contributors.html")
BUDGET_MS = 300.0
LOG_LINES = 100_000
JOB_SCRIPT = f"for i in range({LOG_LINES}):\n    print(f'line {{i}}')\n"
BLANK_HTML = "<!doctype html><html><head><title>blank</title></head><body></body></html>\n"
STREAM_TIMEOUT_S = 300.0
# The badge texts of js/api.js statusLabel() for terminal statuses.
FINAL_BADGE = r"/^(Complete|Failed|Cancelled|Timed out)/"

NAVIGATION_TIMING_JS = """() => {
  const [entry] = performance.getEntriesByType("navigation");
  return entry && entry.loadEventEnd > 0
    ? { domInteractive: entry.domInteractive, loadEventEnd: entry.loadEventEnd } : null;
}"""
FINAL_STATUS_JS = f"""() => {{
  const badge = document.querySelector('[data-testid="status-badge"]');
  return Boolean(badge && {FINAL_BADGE}.test(badge.textContent));
}}"""
ALL_LINES_JS = """(expected) => {
  const count = document.querySelector('[data-testid="line-count"]');
  return Boolean(count && count.textContent.trim() === expected);
}"""
LOG_ELEMENTS_JS = """() => {
  const panel = document.querySelector('[data-testid="log-output"]');
  return panel ? panel.querySelectorAll("*").length : -1;
}"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """A plain http.server on 127.0.0.1:<free port> in a thread; yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="static", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def navigation_timing(browser: Browser, url: str) -> tuple[float, float]:
    """(domInteractive, loadEventEnd) in ms for one load of ``url`` in a fresh context."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(url, wait_until="load")
        timing = page.wait_for_function(NAVIGATION_TIMING_JS).json_value()
        return float(timing["domInteractive"]), float(timing["loadEventEnd"])
    finally:
        context.close()


def median_timing(browser: Browser, url: str, repeat: int) -> tuple[float, float]:
    samples = [navigation_timing(browser, url) for _ in range(repeat)]
    return (
        statistics.median(s[0] for s in samples),
        statistics.median(s[1] for s in samples),
    )


def page_loads(browser: Browser, coordinator_url: str, blank_url: str, repeat: int) -> bool:
    """Print the page-load table; True when every page meets the budget."""
    navigation_timing(browser, blank_url)  # warm the browser process, not measured
    base_interactive, base_load = median_timing(browser, blank_url, repeat)
    print(f"Page loads: median of {repeat} cold loads, Navigation Timing (ms)")
    print(f"baseline: blank page from http.server, domInteractive {base_interactive:.1f} ms,")
    print(f"          loadEventEnd {base_load:.1f} ms; budget {BUDGET_MS:.0f} ms domInteractive")
    header = f"{'page':<20}{'domInteractive':>15}{'loadEventEnd':>14}{'baseline':>10}{'ratio':>8}"
    print(f"{header}  budget")
    all_pass = True
    for name in PAGES:
        interactive, load = median_timing(browser, f"{coordinator_url}/{name}", repeat)
        verdict = "PASS" if interactive <= BUDGET_MS else "FAIL"
        all_pass = all_pass and verdict == "PASS"
        ratio = interactive / base_interactive if base_interactive > 0 else float("inf")
        print(
            f"{name:<20}{interactive:>15.1f}{load:>14.1f}{base_interactive:>10.1f}"
            f"{ratio:>8.2f}  {verdict}"
        )
    return all_pass


def follow_in_page(page: Page, url: str, started: float) -> dict[str, Any]:
    """Open the submitter page on a job; seconds from ``started`` until it shows the final
    status, and until its line count shows every line, plus the log panel's element count."""
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_function(FINAL_STATUS_JS, polling=50, timeout=STREAM_TIMEOUT_S * 1000)
    status_s = time.perf_counter() - started
    page.wait_for_function(
        ALL_LINES_JS, arg=f"{LOG_LINES:,} lines", polling=50, timeout=STREAM_TIMEOUT_S * 1000
    )
    lines_s = time.perf_counter() - started
    elements: int = page.evaluate(LOG_ELEMENTS_JS)
    return {"status_s": status_s, "lines_s": lines_s, "elements": elements}


def follow_in_cli(coordinator_url: str, job_id: str, started: float) -> tuple[float, int]:
    """`compound logs --follow ID`; seconds from ``started`` until it exits, lines it printed."""
    command = [sys.executable, "-m", "compound", "logs", "--follow", job_id, "-c", coordinator_url]
    result = subprocess.run(
        command, capture_output=True, env=product_env(), timeout=STREAM_TIMEOUT_S, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"compound logs failed ({result.returncode}): {result.stderr[-500:]!r}")
    return elapsed, result.stdout.count(b"\n")


def wait_idle(coordinator: Coordinator, node_id: str) -> None:
    """Until the agent has no job, so the next job is dispatched at once, not after a beat."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        mine = [c for c in coordinator.contributors() if c["id"] == node_id]
        if mine and mine[0]["state"] == "online" and not mine[0]["current_job_id"]:
            return
        time.sleep(0.05)
    raise SystemExit("the benchmark agent did not become idle")


def job_timing(coordinator: Coordinator, job_id: str) -> str:
    """ "queued X s, ran Y s" from the coordinator's own timestamps; the job must succeed."""
    job = coordinator.job(job_id)
    if job["status"] != "succeeded":
        raise SystemExit(f"benchmark job {job_id} ended {job['status']}")
    queued_s = job["started_at"] - job["created_at"]
    ran_s = job["finished_at"] - job["started_at"]
    return f"job queued {queued_s:.2f} s, ran {ran_s:.2f} s"


def stream_row(label: str, page: dict[str, Any], cli_s: float, lines: int) -> str:
    return (
        f"{label:<8}{page['status_s']:>9.2f}s{page['lines_s']:>9.2f}s{cli_s:>9.2f}s"
        f"{page['lines_s'] / cli_s:>7.2f}{page['elements']:>10}{lines:>11}"
    )


def log_streaming(browser: Browser, coordinator: Coordinator, agent: Agent) -> None:
    """Print live and replay timings of the 100k-line job: page vs `compound logs --follow`."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(f"{coordinator.url}/index.html")  # the page's origin is warm, not its job

        wait_idle(coordinator, agent.node_id)
        started = time.perf_counter()
        page_job = coordinator.submit(JOB_SCRIPT, name="bench-page")
        live_page = follow_in_page(
            page, f"{coordinator.url}/submitter.html?job={page_job}", started
        )
        wait_idle(coordinator, agent.node_id)
        started = time.perf_counter()
        cli_job = coordinator.submit(JOB_SCRIPT, name="bench-cli")
        live_cli_s, live_lines = follow_in_cli(coordinator.url, cli_job, started)
        notes = (
            f"page job: {job_timing(coordinator, page_job)}; "
            f"cli job: {job_timing(coordinator, cli_job)}"
        )

        page.goto("about:blank")
        replay_page = follow_in_page(
            page, f"{coordinator.url}/submitter.html?job={page_job}", time.perf_counter()
        )
        replay_cli_s, replay_lines = follow_in_cli(coordinator.url, page_job, time.perf_counter())
    finally:
        context.close()
    print()
    print(f"Log streaming: a job printing {LOG_LINES:,} lines through a real agent (Docker)")
    print("live = from submit to the end, a fresh job each; replay = the page's finished job again")
    print(
        f"{'':<8}{'page status':>12}{'page lines':>11}{'cli':>9}{'ratio':>7}"
        f"{'elements':>10}{'cli lines':>11}"
    )
    print(stream_row("live", live_page, live_cli_s, live_lines))
    print(stream_row("replay", replay_page, replay_cli_s, replay_lines))
    print(f"({notes})")
    print("page status = submitter.html?job=ID shows the final status; page lines = its line")
    print(f"count reads {LOG_LINES:,}; cli = `compound logs --follow ID` exits; ratio = page lines")
    print("/ cli; elements = descendant elements of the log panel (data-testid log-output)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="loads per page (median)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        (root / "static").mkdir()
        (root / "static" / "blank.html").write_text(BLANK_HTML)
        coordinator = Coordinator(
            data_dir=root / "data", heartbeat_interval_s=5, lease_timeout_s=15
        ).start()
        agent: Agent | None = None
        try:
            with static_server(root / "static") as static_url, sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
                )
                try:
                    page_loads(browser, coordinator.url, f"{static_url}/blank.html", options.repeat)
                    agent = Agent(coordinator.url, root / "agent", name="bench").start()
                    log_streaming(browser, coordinator, agent)
                finally:
                    browser.close()
        finally:
            if agent is not None:
                agent.stop()
            coordinator.stop()


if __name__ == "__main__":
    main()
