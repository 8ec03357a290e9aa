"""``compound image``: make sure the sandbox image exists, or build it offline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from compound.agent.settings import DEFAULT_IMAGE as DEFAULT_TAG

# The Docker client is imported only when an image command runs: every other `compound`
# command starts faster without it.
if TYPE_CHECKING:
    from compound.agent.runners.docker.image import ProgressCallback

image_app = typer.Typer(
    help="Build or check the sandbox image jobs run in (works offline).",
    no_args_is_help=True,
)

TagOption = typer.Option(DEFAULT_TAG, "--tag", help="Image tag jobs run in.")
DockerUrlOption = typer.Option(
    None, "--docker-url", help="Docker engine address (default: $DOCKER_HOST or local socket)."
)


def _run_with_progress(
    title: str, work: Callable[[ProgressCallback], Coroutine[Any, Any, str]]
) -> str:
    """Run ``work`` showing its current step and the elapsed time on stderr."""
    from compound.agent.runners.docker.engine import EngineError

    console = Console(stderr=True)
    started = time.monotonic()
    live = console.is_terminal
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.fields[step]}"),
    )
    try:
        with Progress(*columns, console=console, transient=True, disable=not live) as progress:
            task = progress.add_task(title, total=None, step="")

            def report(step: str) -> None:
                # debootstrap's lines can be long; the line shows the newest step only.
                progress.update(task, step=escape(step[:80]))
                if not live:
                    # No live display in CI logs: one line per step, with the time so far.
                    console.print(f"[{time.monotonic() - started:5.1f} s] {step}", markup=False)

            return asyncio.run(work(report))
    except EngineError as exc:
        console.print(Text("error: ", style="red") + Text(str(exc)))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        raise typer.Exit(130) from None


@image_app.command("build")
def build(tag: str = TagOption, docker_url: str | None = DockerUrlOption) -> None:
    """Build the image offline with debootstrap (needs root; about 40 s)."""
    from compound.agent.runners.docker.image import build_image

    started = time.monotonic()

    async def work(report: ProgressCallback) -> str:
        await build_image(tag, report, docker_url)
        return "built"

    _run_with_progress(f"building {tag}", work)
    Console(stderr=True).print(f"built {tag} in {time.monotonic() - started:.0f} s")


@image_app.command("ensure")
def ensure(tag: str = TagOption, docker_url: str | None = DockerUrlOption) -> None:
    """Keep the image if present, else pull it, else build it offline."""
    from compound.agent.runners.docker.image import ensure_image

    started = time.monotonic()

    async def work(report: ProgressCallback) -> str:
        return await ensure_image(tag, report, docker_url)

    outcome = _run_with_progress(f"ensuring {tag}", work)
    elapsed = time.monotonic() - started
    Console(stderr=True).print(f"{tag}: {outcome} ({elapsed:.0f} s)")


if __name__ == "__main__":
    image_app()
