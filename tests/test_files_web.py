"""The submitter page lists a finished job's output files and downloads them (real Chromium,
real coordinator; the contributor is a scripted peer returning the files)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from fake_agent import FakeAgent
from files_support import return_outputs
from support import Coordinator

pytestmark = pytest.mark.timeout(90)


def test_submitter_page_downloads_an_output_file_byte_for_byte(
    coordinator: Coordinator, page: Page, tmp_path: Path
) -> None:
    """Once the job ends its files are listed; Download saves the exact bytes, through an
    object URL of the page (no token or API path in the download's URL)."""
    job_id = coordinator.submit("print(1)")
    agent = FakeAgent(coordinator)
    job = agent.recv_type("job")
    payload = bytes(range(256)) * 64 + "é\n".encode()
    return_outputs(
        coordinator, job, {"plots/figure.bin": payload, "page.html": b"<script>alert(1)</script>"}
    )
    agent.done(job, -1)
    agent.close()
    coordinator.wait_for_status(job_id, {"succeeded"})

    page.goto(f"{coordinator.url}/submitter.html?job={job_id}")
    section = page.get_by_test_id("artifacts")
    expect(section).to_be_visible()
    expect(page.get_by_test_id("artifacts-list")).to_contain_text("plots/figure.bin")
    expect(page.get_by_test_id("artifacts-note")).to_have_text("2 files")
    button = page.locator("[data-testid=artifact-download][data-path='plots/figure.bin']")
    with page.expect_download() as info:
        button.click()
    download = info.value
    assert download.suggested_filename == "figure.bin"
    assert download.url.startswith("blob:")
    saved = tmp_path / "saved.bin"
    download.save_as(saved)
    assert saved.read_bytes() == payload
