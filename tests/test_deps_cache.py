"""The agent's cache of installed package sets, on a real directory: LRU under a cap, never
evicting a set in use, and the PEP 723 reader against the PEP's own reference regex."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from compound.agent.deps_cache import DepsCache, SetTooBig, digest
from compound.agent.deps_uv import one_line
from compound.protocol.requirements import RequirementsError, read_script_metadata

pytestmark = pytest.mark.timeout(30)


def install(cache: DepsCache, name: str, size_bytes: int) -> str:
    """A set of one file of ``size_bytes``, added as uv's install would leave it."""
    target = cache.new_workspace() / "target"
    (target / name).mkdir(parents=True)
    (target / name / "__init__.py").write_bytes(b"x" * size_bytes)
    key = digest([name])
    cache.add(target, key, 1)
    return key


def age(cache: DepsCache, key: str, seconds_ago: float) -> None:
    meta = cache.root / "meta" / f"{key}.json"
    then = meta.stat().st_mtime - seconds_ago
    os.utime(meta, (then, then))


def test_least_recently_used_sets_go_first_and_sets_in_use_stay(tmp_path: Path) -> None:
    """Over the cap, the set used longest ago goes first; a set in use is kept even when it
    is the oldest."""
    cache = DepsCache(tmp_path / "deps", cap_bytes=2500)
    old, middle, new = (install(cache, name, 1000) for name in ("old", "middle", "new"))
    age(cache, old, 30)
    age(cache, middle, 20)
    installed = cache.get(old)
    assert installed is not None
    with cache.using(installed):  # marks it used now, too
        age(cache, old, 60)  # still the oldest by time: only being in use protects it
        assert cache.evict() == [middle]
    assert cache.get(old) is not None and cache.get(new) is not None
    assert not (cache.root / "sets" / middle).exists()


def test_a_set_larger_than_the_whole_cache_is_refused(tmp_path: Path) -> None:
    """A set that alone exceeds the cap is refused with a sentence, not cached."""
    cache = DepsCache(tmp_path / "deps", cap_bytes=100)
    with pytest.raises(SetTooBig, match="more than this contributor's package cache"):
        install(cache, "huge", 1000)
    assert list((cache.root / "sets").iterdir()) == []


def test_request_hits_the_set_it_resolved_to(tmp_path: Path) -> None:
    """A request remembered once finds its set without resolving; a gone set is a miss."""
    cache = DepsCache(tmp_path / "deps", cap_bytes=10**9)
    key = install(cache, "pkg", 10)
    cache.remember("request", key)
    found = cache.for_request("request")
    assert found is not None and found.path == cache.root / "sets" / key
    assert os.stat(found.path / "pkg" / "__init__.py").st_mode & 0o777 == 0o644
    cache._remove(key)
    assert cache.for_request("request") is None


def test_unfinished_installations_are_removed_at_start(tmp_path: Path) -> None:
    """What an agent that died mid-installation left is gone when the next one starts."""
    cache = DepsCache(tmp_path / "deps", cap_bytes=10**9)
    leftover = cache.new_workspace()
    (leftover / "half").write_text("x")
    DepsCache(tmp_path / "deps", cap_bytes=10**9)
    assert not leftover.exists()


def test_uv_errors_become_one_bounded_line() -> None:
    """uv's box-drawn, multi-line error reaches the submitter as one plain line."""
    text = "  \u00d7 No solution found\n  ╰─▶ Because x was not found" + " very long" * 100 + "\n"
    line = one_line(text)
    assert "\n" not in line and line.startswith("No solution found Because x was not found")
    assert len(line) <= 500


# The reference implementation in PEP 723.
REFERENCE = r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$"


def reference(script: str) -> dict[str, Any] | None:
    matches = [m for m in re.finditer(REFERENCE, script) if m.group("type") == "script"]
    if len(matches) > 1:
        raise ValueError("Multiple script blocks found")
    if not matches:
        return None
    content = "".join(
        line[2:] if line.startswith("# ") else line[1:]
        for line in matches[0].group("content").splitlines(keepends=True)
    )
    return tomllib.loads(content)


SCRIPTS = [
    '# /// script\n# dependencies = ["a"]\n# ///\nprint()',
    "# /// script\n# ///\n",
    "x = 1\n# /// script\n# a = 1\n#\n# b = 2\n# ///\n",
    "# /// script\n# a = 1\n\n# ///\n",
    "# /// other\n# a = 1\n# ///\n# /// script\n# b = 2\n# ///\n",
    "# /// other\n# a = 1\n# ///\n\n# /// script\n# b = 2\n# ///\n",
    "# /// script\n# a = 1\n# ///\n# b = 2\n",
    "#/// script\n# a = 1\n# ///\n",
    "# /// script\n# a = 1\n#///\n",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_metadata_matches_the_pep_reference(script: str) -> None:
    """Our linear reader finds the same block as the PEP's regex."""
    try:
        expected = reference(script)
    except (ValueError, tomllib.TOMLDecodeError):
        with pytest.raises(RequirementsError):
            read_script_metadata(script)
        return
    assert read_script_metadata(script) == expected
