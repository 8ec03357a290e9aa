"""Which output file names a job's outputs can keep: one rule for container, coordinator and CLI.

A name is kept only if every side can carry it: the coordinator's database and its URLs
(``/artifacts/{path}`` does not route a newline), the listing's JSON, and the folder
``compound artifacts`` writes into on any OS (a backslash is a separator on Windows). The
launcher applies the same rule inside the container (``runners/docker/in_container/files.py``,
standard library only, so it is written out again there; a test checks that they agree),
so a name that breaks it is skipped there with a note naming it, and the coordinator skips,
never stores, what an agent sends anyway: every listed output can be downloaded.
"""

from __future__ import annotations

# The coordinator's default; it may be configured lower (it then skips longer names).
MAX_OUTPUT_PATH_CHARS = 1024


def output_name_problem(name: str, max_chars: int = MAX_OUTPUT_PATH_CHARS) -> str | None:
    """Why the output file ``name`` (its path under outputs/, '/'-separated) cannot be kept,
    as a phrase ("holds a backslash"), or None when it can."""
    if "\\" in name:
        return "holds a backslash"
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in name):
        return "holds a control character"
    if any(0xD800 <= ord(char) <= 0xDFFF for char in name):
        return "is not valid UTF-8"
    if len(name) > max_chars:
        return f"is longer than {max_chars} characters"
    return None
