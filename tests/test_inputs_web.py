"""The submitter page sends input files, arguments and a timeout and downloads what comes back
(real Chromium, real coordinator, a real agent running the job in Docker), in a browser on
the coordinator's pages and through the desktop app's local server alike."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import math
import re
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from compound.agent.runners.docker.in_container import files as in_container_files
from compound.agent.runners.docker.spec import DockerRunnerSettings
from compound.coordinator.settings import CoordinatorSettings
from compound.desktop.server import LocalAppState, LocalServer
from compound.desktop.settings import AppSettings, SettingsStore
from compound.desktop.sidecar import AgentSidecar
from support import Agent, Coordinator

SCRIPT = """
import os, sys, pathlib
print(pathlib.Path("notes.txt").read_text(), end="")
print(pathlib.Path("blob.bin").read_bytes().hex())
for path in sorted(pathlib.Path("data").rglob("*")):
    print(path, path.is_dir())
print(pathlib.Path("data/sub/deep.txt").read_text(), end="")
print("args", sys.argv[1:])
os.makedirs("outputs/report", exist_ok=True)
pathlib.Path("outputs/report/result.bin").write_bytes(bytes(range(256)) + b"done")
pathlib.Path("outputs/summary.txt").write_text("total " + str(len(sys.argv) - 1))
"""
RESULT = bytes(range(256)) + b"done"
ARGS = ["--name", "two words", "'quoted'"]


@contextlib.contextmanager
def desktop_server(config_dir: Path, coordinator: Coordinator) -> Iterator[LocalServer]:
    """The desktop app's local server (no window, no agent started) pointed at the coordinator."""
    store = SettingsStore(config_dir)
    store.save(AppSettings(coordinator_url=coordinator.url))
    sidecar = AgentSidecar(config_dir / "agent", config_dir / "agent.log")
    server = LocalServer(LocalAppState(store=store, sidecar=sidecar, window=None))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    notes = tmp_path / "notes.txt"
    notes.write_text("héllo from an input\n", encoding="utf-8")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes([0, 1, 2, 255]))
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "top.csv").write_text("a,b\n1,2\n")
    (folder / "sub" / "deep.txt").write_text("deep down\n")
    return notes, blob, folder


def open_options(page: Page) -> None:
    page.get_by_test_id("job-options").locator("summary").click()
    expect(page.get_by_test_id("args-input")).to_be_visible()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("served_by", ["coordinator", "desktop"])
def test_inputs_args_and_timeout_go_in_and_output_files_come_back(
    served_by: str, coordinator: Coordinator, agent: Agent, page: Page, tmp_path: Path
) -> None:
    """Two files and a folder attached, arguments and a timeout set: the script reads them all,
    and the file it writes downloads with its exact bytes, alone and in "Download all"."""
    notes, blob, folder = make_inputs(tmp_path)
    script = tmp_path / "reader.py"
    script.write_text(textwrap.dedent(SCRIPT).lstrip())
    with contextlib.ExitStack() as stack:
        if served_by == "desktop":
            server = stack.enter_context(desktop_server(tmp_path / "app", coordinator))
            page.goto(server.launch_url("/submitter.html"))
            expect(page.get_by_test_id("token-button")).to_be_visible()  # the app's pages
        else:
            page.goto(coordinator.url + "/submitter.html")
        open_options(page)
        page.get_by_test_id("inputs-files").set_input_files([notes, blob])
        page.get_by_test_id("inputs-folder").set_input_files(folder)
        expect(page.get_by_test_id("input-item")).to_have_count(3)
        expect(page.locator("[data-testid=input-item][data-name=data]")).to_contain_text("2 files")
        page.get_by_test_id("args-input").fill("\n".join(ARGS) + "\n")
        page.get_by_test_id("timeout-input").fill("120")
        page.get_by_test_id("script-input").set_input_files(script)
        page.get_by_test_id("submit-button").click()
        page.wait_for_url(re.compile(r"[?&]job="))
        expect(page.get_by_test_id("status-badge")).to_have_text("Complete ✓", timeout=120_000)

        job_id = page.get_by_test_id("job-id").text_content()
        assert job_id
        job = coordinator.job(job_id)
        assert job["args"] == ARGS and job["timeout_s"] == 120 and job["inputs"] is not None
        assert page.evaluate("window.compoundLog.text()") == (
            "héllo from an input\n"
            "000102ff\n"
            "data/sub True\n"
            "data/sub/deep.txt False\n"
            "data/top.csv False\n"
            "deep down\n"
            f"args {ARGS!r}\n"
        )

        expect(page.get_by_test_id("artifacts-note")).to_have_text("2 files")
        button = page.locator("[data-testid=artifact-download][data-path='report/result.bin']")
        with page.expect_download() as info:
            button.click()
        saved = tmp_path / "result.bin"
        info.value.save_as(saved)
        assert info.value.suggested_filename == "result.bin"
        assert saved.read_bytes() == RESULT

        with page.expect_download() as info:
            page.get_by_test_id("artifacts-all").click()
        assert info.value.suggested_filename == f"compound-{job_id}-outputs.tar"
        every = tmp_path / "all.tar"
        info.value.save_as(every)
        with tarfile.open(every) as archive:
            assert archive.getnames() == ["report", "report/result.bin", "summary.txt"]
            assert archive.getmember("report").isdir()
            extracted = archive.extractfile("report/result.bin")
            assert extracted is not None and extracted.read() == RESULT
            summary = archive.extractfile("summary.txt")
            assert summary is not None and summary.read() == b"total 3"


@pytest.mark.timeout(60)
def test_too_big_or_reserved_inputs_are_refused_with_a_sentence(tmp_path: Path, page: Page) -> None:
    """Inputs over the coordinator's cap are refused before any upload (no job made), and an
    input named like the job's own files is refused when picked; each with one sentence."""
    server = Coordinator(data_dir=tmp_path / "coordinator", extra_args=["--max-input-mib", "1"])
    server.start()
    try:
        big = tmp_path / "big.bin"
        big.write_bytes(b"x" * (2 * 1024 * 1024))
        reserved = tmp_path / "outputs"
        reserved.write_text("not a folder\n")
        script = tmp_path / "job.py"
        script.write_text("print(1)\n")
        page.goto(server.url + "/submitter.html")
        open_options(page)
        error = page.get_by_test_id("error-message")

        page.get_by_test_id("inputs-files").set_input_files(reserved)
        expect(error).to_have_text(re.compile(r"^“outputs” is a name the job's folder keeps"))
        expect(page.get_by_test_id("input-item")).to_have_count(0)

        page.get_by_test_id("inputs-files").set_input_files(big)
        expect(error).to_be_hidden()
        page.get_by_test_id("script-input").set_input_files(script)
        page.get_by_test_id("submit-button").click()
        expect(error).to_have_text(
            "The input files come to 2.0 MB as one tar, over this coordinator's 1.0 MB limit: "
            "leave some out."
        )
        assert server.api("GET", "/api/v1/jobs").json()["jobs"] == []
    finally:
        server.stop()


TAR_ROUND_TRIP = """async (names) => {
  const { tarBlob } = await import("/js/tar.js");
  const entries = [{ name: "folder", dir: true }];
  names.forEach((name, i) => entries.push({ name, file: new Blob([name.repeat(i + 1)]) }));
  const bytes = new Uint8Array(await tarBlob(entries).arrayBuffer());
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}"""


@pytest.mark.timeout(60)
def test_tar_writer_output_reads_back_in_python(coordinator: Coordinator, page: Page) -> None:
    """tar.js writes a tar Python's tarfile reads back exactly: long and non-ASCII names
    (pax headers), a folder, empty and odd-sized files."""
    names = ["folder/a.txt", "folder/ünï cödé.bin", "folder/" + "long-name-" * 40, "e"]
    page.goto(coordinator.url + "/submitter.html")
    data = base64.b64decode(page.evaluate(TAR_ROUND_TRIP, names))
    assert len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == ["folder", *names]
        assert members[0].isdir() and members[0].mode == 0o755
        for i, name in enumerate(names):
            member = archive.getmember(name)
            assert member.isreg() and member.mode == 0o644 and member.uid == 0
            extracted = archive.extractfile(member)
            assert extracted is not None
            assert extracted.read() == (name * (i + 1)).encode()


def _js_constant(text: str, name: str) -> str:
    match = re.search(rf"^const {name} = (.+);$", text, re.MULTILINE)
    assert match, f"inputs.js has no {name}"
    return match.group(1)


def test_the_pages_input_limits_are_the_sandboxes() -> None:
    """inputs.js refuses what the sandbox refuses: its reserved names, path bound, entry count
    and default cap are the in-container module's, the agent's and the coordinator's."""
    text = (Path(__file__).parent.parent / "src/compound/web/js/inputs.js").read_text()
    reserved = _js_constant(text, "RESERVED_NAMES")
    assert set(re.findall(r'"([^"]+)"', reserved)) == set(in_container_files.RESERVED_NAMES)
    assert int(_js_constant(text, "MAX_INPUT_PATH_BYTES")) == (
        in_container_files.MAX_INPUT_PATH_BYTES
    )
    assert int(_js_constant(text, "MAX_INPUT_ENTRIES").replace("_", "")) == (
        _default(DockerRunnerSettings, "max_input_files")
    )
    factors = _js_constant(text, "DEFAULT_MAX_INPUT_BYTES").split("*")
    assert math.prod(int(factor) for factor in factors) == (
        _default(CoordinatorSettings, "max_input_bytes")
    )


def _default(settings: Any, name: str) -> Any:
    return next(field.default for field in dataclasses.fields(settings) if field.name == name)
