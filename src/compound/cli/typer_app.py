"""The `compound` command as a Typer app: every command, its options and its --help.

Building it costs ~0.2 s of imports, so ``main.run`` builds it only for what its quick front
door leaves over (``--help``, errors in the arguments, the less frequent commands).
"""

from __future__ import annotations

from typing import Annotated

import typer

from compound import __version__
from compound.cli import agent_controls, servers
from compound.cli import jobs as job_commands
from compound.cli.admin import admin_app
from compound.cli.exit_codes import HELP as EXIT_CODES_HELP
from compound.cli.tokens import token_app

app = typer.Typer(
    name="compound",
    help="Compound Compute: run Python scripts on other people's spare machines, "
    "sandboxed in Docker, with their output streamed back live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

app.command("coordinator")(servers.coordinator)
# `compound agent` runs an agent; `compound agent pause|resume|drain|status|set` control one.
agent_app = typer.Typer(
    invoke_without_command=True, no_args_is_help=False, add_completion=False, rich_markup_mode=None
)
agent_app.callback()(servers.agent)
agent_controls.register(agent_app)
app.add_typer(agent_app, name="agent")
app.command("submit", epilog=EXIT_CODES_HELP)(job_commands.submit)
app.command("logs", epilog=EXIT_CODES_HELP)(job_commands.logs)
app.command("status")(job_commands.status)
app.command("cancel")(job_commands.cancel)
app.command("artifacts")(job_commands.artifacts)
app.command("jobs")(job_commands.jobs)
app.command("contributors")(job_commands.contributors)
app.add_typer(token_app, name="token")
app.add_typer(admin_app, name="admin")


def _register_optional() -> None:
    # Built by separate modules; each brings its own dependencies.
    try:
        from compound.cli.image import image_app
    except ImportError:
        pass
    else:
        app.add_typer(image_app, name="image")
    try:
        from compound.cli.app import app_command
    except ImportError:
        pass
    else:
        app.command("app")(app_command)


_register_optional()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"compound {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Compound Compute."""
