"""The import-graph check (scripts/import_graph.py) on the real tree and on small made-up ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "import_graph.py"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "compound" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _check(src: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(src)], capture_output=True, text=True, timeout=60
    )


def test_the_real_tree_passes() -> None:
    """Our own sources have no cycle and keep every package's rule."""
    result = _check(SCRIPT.parent.parent / "src")
    assert result.returncode == 0, result.stderr


def test_a_cycle_fails(tmp_path: Path) -> None:
    """Two modules importing each other are reported as a cycle."""
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "a/__init__.py": '"""A.\n\nImports: compound.b\n"""\n',
            "a/x.py": "from compound.b import y\n",
            "b/__init__.py": '"""B.\n\nImports: compound.a\n"""\n',
            "b/y.py": "import compound.a.x\n",
        },
    )
    result = _check(src)
    assert result.returncode == 1 and "import cycle" in result.stderr


@pytest.mark.parametrize(
    ("rule", "module", "complaint"),
    [
        ("Imports: compound.b", "from compound.c import z\n", "compound.c"),
        ("Imports: nothing", "from compound.b import y\n", "compound.b"),
        ("Imports: standard library only", "import httpx\n", "httpx"),
        # Type-only imports are part of the design too.
        (
            "Imports: nothing",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from compound.b import y\n",
            "compound.b",
        ),
    ],
)
def test_an_import_the_docstring_does_not_allow_fails(
    tmp_path: Path, rule: str, module: str, complaint: str
) -> None:
    """A module importing outside its package's ``Imports:`` line is reported by name."""
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "a/__init__.py": f'"""A.\n\n{rule}\n"""\n',
            "a/x.py": module,
            "b/__init__.py": '"""B.\n\nImports: nothing\n"""\n',
            "b/y.py": "",
            "c/__init__.py": '"""C.\n\nImports: nothing\n"""\n',
            "c/z.py": "",
        },
    )
    result = _check(src)
    assert result.returncode == 1 and complaint in result.stderr, result.stderr


def test_a_package_without_a_rule_fails(tmp_path: Path) -> None:
    """Every package states what it may import."""
    src = _tree(tmp_path, {"__init__.py": "", "a/__init__.py": '"""A."""\n', "a/x.py": ""})
    result = _check(src)
    assert result.returncode == 1 and "without an 'Imports:' line" in result.stderr
