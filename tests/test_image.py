"""The sandbox image helpers and the ``compound image`` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from compound.agent.runners.docker.engine import NOT_RUNNING, EngineError
from compound.agent.runners.docker.image import FALLBACK_MIRROR, find_mirror, image_exists
from compound.cli.image import image_app
from docker_env import image_tag

NO_ENGINE = "unix:///nonexistent/compound-docker.sock"


def _apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_mirror_from_deb822_sources_skips_security_and_disabled(tmp_path: Path) -> None:
    """The bookworm stanza's first URI wins; security suites and *.disabled files do not."""
    apt = _apt_dir(
        tmp_path,
        {
            "sources.list.d/aa.sources.disabled": (
                "Types: deb\nURIs: http://wrong\nSuites: bookworm\n"
            ),
            "sources.list.d/debian.sources": (
                "Types: deb\n# a comment\nURIs: http://sec.example/debian-security\n"
                "Suites: bookworm-security\nComponents: main\n\n"
                "Types: deb deb-src\nURIs: http://mirror.example/debian http://other\n"
                "Suites: bookworm bookworm-updates\nComponents: main\n"
            ),
        },
    )
    assert find_mirror(apt) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources_list(tmp_path: Path) -> None:
    """A classic ``deb [options] URI bookworm main`` line is understood."""
    apt = _apt_dir(
        tmp_path,
        {
            "sources.list": (
                "# deb http://commented bookworm main\n"
                "deb http://sec.example bookworm-security main\n"
                "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
            )
        },
    )
    assert find_mirror(apt) == "http://mirror.example/debian"


def test_mirror_falls_back_to_deb_debian_org(tmp_path: Path) -> None:
    """With no bookworm source configured, the public Debian mirror is used."""
    assert find_mirror(_apt_dir(tmp_path, {})) == FALLBACK_MIRROR


async def test_image_exists_asks_the_real_engine() -> None:
    """The test image is there (CI builds it) and a made-up tag is not."""
    assert await image_exists(image_tag()) is True
    assert await image_exists("compound-test-missing:none") is False


async def test_image_exists_without_engine_says_docker_is_not_running() -> None:
    """No engine: one sentence telling the user what to run."""
    with pytest.raises(EngineError, match=r"^Docker is not running"):
        await image_exists(docker_url=NO_ENGINE)


@pytest.mark.parametrize("command", ["build", "ensure"])
def test_cli_without_engine_prints_one_line_and_exits_1(command: str) -> None:
    """No traceback: a single error line on stderr and exit status 1."""
    result = CliRunner().invoke(image_app, [command, "--docker-url", NO_ENGINE])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: {NOT_RUNNING}"
    assert "Traceback" not in result.output


def test_cli_ensure_keeps_a_present_image() -> None:
    """``ensure`` on an existing image reports it present without building."""
    result = CliRunner().invoke(image_app, ["ensure", "--tag", image_tag()])
    assert result.exit_code == 0, result.output
    assert f"{image_tag()}: present" in result.stderr
