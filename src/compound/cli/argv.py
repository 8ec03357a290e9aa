"""A small parser for the quick commands' arguments, in step with Click on what it accepts.

It reads the plain forms only (``--name VALUE``, ``--name=VALUE``, ``-c VALUE``, flags,
``--`` and positionals between options) and gives up, returning None, on anything else:
``--help``, an unknown option, a missing value, a value that does not convert. The Typer app
then parses the same arguments and answers as it always has, usage message and exit code 2
included, so what this parser accepts it must read exactly as Click does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Plain classes, not dataclasses: `dataclasses` imports `inspect`, a tenth of the budget.


class Option:
    """An option of a quick command: ``dest`` in the result, a flag or one value each time."""

    __slots__ = ("convert", "dest", "flag", "multiple", "names")

    def __init__(
        self,
        dest: str,
        names: tuple[str, ...],
        flag: bool = False,
        multiple: bool = False,
        convert: Callable[[str], Any] = str,
    ) -> None:
        self.dest = dest
        self.names = names
        self.flag = flag
        self.multiple = multiple
        self.convert = convert


class Parsed:
    __slots__ = ("positionals", "values")

    def __init__(self) -> None:
        self.positionals: list[str] = []
        self.values: dict[str, Any] = {}


CONNECTION = (
    Option("coordinator", ("--coordinator", "-c")),
    Option("token", ("--token",)),
    Option("ca_file", ("--ca-file",)),
)
SUBMIT = (
    *CONNECTION,
    Option("timeout", ("--timeout",), convert=float),
    Option("env", ("--env", "-e"), multiple=True),
    Option("name", ("--name",)),
    Option("detach", ("--detach", "-d"), flag=True),
)
LOGS = (
    *CONNECTION,
    Option("follow", ("--follow", "-f"), flag=True),
    Option("attempt", ("--attempt",), convert=int),
    Option("all_attempts", ("--all",), flag=True),
)
STATUS = (*CONNECTION, Option("as_json", ("--json",), flag=True))


def parse(arguments: list[str], options: tuple[Option, ...]) -> Parsed | None:
    """The positionals and option values in ``arguments``; None for what Click must answer."""
    by_name = {name: option for option in options for name in option.names}
    parsed = Parsed()
    rest = list(arguments)
    while rest:
        argument = rest.pop(0)
        if argument == "--":
            parsed.positionals.extend(rest)
            break
        if not argument.startswith("-") or argument == "-":
            parsed.positionals.append(argument)
            continue
        name, equals, attached = argument.partition("=")
        option = by_name.get(name)
        if option is None or (equals and (option.flag or not name.startswith("--"))):
            return None  # unknown, --help, -cVALUE, --flag=VALUE: Click's to answer
        if option.flag:
            parsed.values[option.dest] = True
            continue
        if equals:
            raw = attached
        elif rest and not rest[0].startswith("-"):
            raw = rest.pop(0)
        else:
            return None  # no value, or one that looks like an option
        try:
            value = option.convert(raw)
        except ValueError:
            return None
        if option.multiple:
            parsed.values.setdefault(option.dest, []).append(value)
        else:
            parsed.values[option.dest] = value  # Click keeps the last one too
    return parsed
