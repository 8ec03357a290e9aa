"""The import-graph check: no cycles between modules, and each package imports only what its
docstring allows.

A package's ``__init__.py`` docstring has one line saying what its modules may import from
``compound`` besides the package's own subtree:

    Imports: compound.protocol, compound.coordinator.storage
    Imports: nothing                  (no ``compound`` import; third-party is fine)
    Imports: compound.protocol,       (a long rule goes on in indented lines)
        compound.tls
    Imports: standard library only    (code that runs in the sandbox: not even third-party)

A package without such a line is held to its nearest parent's rule. Imports under
``if TYPE_CHECKING:`` count for the allowed lists (they are the design too) but not for
cycles (they do not run). Run as ``python scripts/import_graph.py [SRC]``; exits 1 with one
line per problem.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# The rule, with its continuation lines (indented) if it is long.
RULE = re.compile(r"^Imports:\s*(.+(?:\n[ \t]+.+)*)", re.MULTILINE)
ROOT_PACKAGE = "compound"
MAX_COORDINATOR_ENTRIES = 10


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    runtime: set[str] = field(default_factory=set)  # compound modules imported when run
    typing_only: set[str] = field(default_factory=set)
    third_party: set[str] = field(default_factory=set)


def module_name(src: Path, path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(src).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, typing_only: bool = False) -> Iterator[tuple[str, bool, ast.AST]]:
    """(imported name, under TYPE_CHECKING, node) for every import in ``tree``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.body:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), True)
            for child in node.orelse:
                yield from _imports(ast.Module(body=[child], type_ignores=[]), typing_only)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, typing_only, node
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise SystemExit(f"relative import at line {node.lineno}: use absolute imports")
            base = node.module or ""
            for alias in node.names:
                yield f"{base}.{alias.name}", typing_only, node
        else:
            yield from _imports(node, typing_only)


def load(src: Path) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for path in sorted((src / ROOT_PACKAGE).rglob("*.py")):
        name, is_package = module_name(src, path)
        modules[name] = Module(name, path, is_package)
    for module in modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
        for imported, typing_only, _ in _imports(tree):
            top = imported.split(".")[0]
            if top != ROOT_PACKAGE:
                module.third_party.add(top)
                continue
            # ``from compound.x import y``: y may be a module or a name in compound.x.
            target = imported if imported in modules else imported.rsplit(".", 1)[0]
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            (module.typing_only if typing_only else module.runtime).add(target)
    return modules


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Every import cycle between modules (runtime imports), each found once."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(modules[name].runtime):
            # A module's import of its own package's __init__ runs first anyway.
            if target == name or name.startswith(target + "."):
                continue
            if state.get(target) == 1:
                found.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(modules):
        if name not in state:
            visit(name)
    return found


def rules(modules: dict[str, Module]) -> dict[str, list[str] | str]:
    found: dict[str, list[str] | str] = {}
    for module in modules.values():
        if not module.is_package:
            continue
        docstring = ast.get_docstring(ast.parse(module.path.read_text(encoding="utf-8"))) or ""
        match = RULE.search(docstring)
        if match is None:
            continue
        text = " ".join(match.group(1).split()).rstrip(".")
        if text in ("nothing", "standard library only"):
            found[module.name] = text
        else:
            found[module.name] = [part.strip() for part in text.split(",") if part.strip()]
    return found


def rule_of(name: str, is_package: bool, all_rules: dict[str, list[str] | str]) -> str | None:
    """The package whose rule applies to module ``name``."""
    package = name if is_package else name.rsplit(".", 1)[0]
    while package:
        if package in all_rules:
            return package
        if "." not in package:
            return None
        package = package.rsplit(".", 1)[0]
    return None


def _stdlib_only_violations(module: Module) -> list[str]:
    # _typeshed exists for type checkers only (imported under TYPE_CHECKING).
    known = sys.stdlib_module_names | {"_typeshed"}
    outside = sorted(name for name in module.third_party if name not in known)
    return [f"{module.name}: imports {name} (standard library only)" for name in outside]


def violations(modules: dict[str, Module]) -> list[str]:
    all_rules = rules(modules)
    problems: list[str] = []
    for module in sorted(modules.values(), key=lambda m: m.name):
        owner = rule_of(module.name, module.is_package, all_rules)
        if owner is None:
            continue
        rule = all_rules[owner]
        for imported in sorted(module.runtime | module.typing_only):
            # The root package's own module (``__version__``) is named, not the whole tree.
            target = f"{ROOT_PACKAGE}.__init__" if imported == ROOT_PACKAGE else imported
            if target == owner or target.startswith(owner + "."):
                continue
            if isinstance(rule, str) or not any(
                target == allowed or target.startswith(allowed + ".") for allowed in rule
            ):
                problems.append(f"{module.name}: imports {target}, which {owner} does not allow")
        if rule == "standard library only":
            problems.extend(_stdlib_only_violations(module))
    return problems


def unruled_packages(modules: dict[str, Module]) -> list[str]:
    all_rules = rules(modules)
    return [
        f"{module.name}: package without an 'Imports:' line"
        for module in modules.values()
        if module.is_package and module.name != ROOT_PACKAGE and module.name not in all_rules
    ]


def coordinator_entries(src: Path) -> list[str]:
    top = src / ROOT_PACKAGE / "coordinator"
    if not top.is_dir():
        return []
    entries = [p for p in top.iterdir() if p.name != "__pycache__"]
    if len(entries) <= MAX_COORDINATOR_ENTRIES:
        return []
    return [f"coordinator/ has {len(entries)} entries (at most {MAX_COORDINATOR_ENTRIES})"]


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "src"
    modules = load(src)
    problems = [" -> ".join(cycle) for cycle in cycles(modules)]
    problems = [f"import cycle: {cycle}" for cycle in problems]
    problems += violations(modules) + unruled_packages(modules) + coordinator_entries(src)
    for problem in problems:
        print(f"import-graph: {problem}", file=sys.stderr)
    if not problems:
        print(f"import-graph: {len(modules)} modules, no cycles, every package within its rule")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
