"""Sentences for the user on stderr, in red on a terminal."""

from __future__ import annotations


def print_error(text: str) -> None:
    """Print ``text`` on stderr as a failed command does: red where Rich sees a colour
    terminal, plain otherwise (Rich reads NO_COLOR, TERM and the rest, so it is asked).

    Rich is imported here, on the error path only: it costs more than a quick command's
    whole start-up.
    """
    from rich.console import Console

    # soft_wrap: a sentence stays on one line, whatever the width of the terminal.
    Console(stderr=True, highlight=False, soft_wrap=True).print(text, style="red")
