"""The package's shape: a short top level, no import cycle, no import hidden in a function, thin scripts."""

from __future__ import annotations

import ast
from pathlib import Path

from clustvit.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "clustvit"
# Data, not modules: the packaged config files (leaf configs and _base_ presets) and the official-env script.
NOT_MODULES = ("configs/_base_", "configs/clustvit", "configs/cts", "configs/vit", "configs/demo")
# Where importing a clustvit module inside a function is the point: the command dispatcher imports only
# the command that runs, and the package's lazy top-level names keep `import clustvit` light.
LAZY_ALLOWED = {"clustvit", "clustvit.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
            if not any(str(p.relative_to(PACKAGE)).startswith(d) for d in NOT_MODULES)}


def imports(path: Path, name: str) -> list[tuple[str, bool]]:
    """(imported clustvit module, whether the import sits inside a function) for every import in a file."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    modules = package_modules()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # relative: resolve against this module's package
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + [node.module])
            # `from a.b import c`: c may be a module of its own
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        parent, in_function = parents.get(node), False
        while parent is not None:
            if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef):
                in_function = True
            parent = parents.get(parent)
        out += [(t, in_function) for t in targets if t.split(".")[0] == "clustvit"]
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the clustvit modules it imports at module level."""
    return {name: {t for t, lazy in imports(path, name) if not lazy} for name, path in package_modules().items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a path whose last node imports its first), or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_clustvit_import_hidden_in_a_function() -> None:
    hidden = [f"{name}: {target}" for name, path in package_modules().items() if name not in LAZY_ALLOWED
              for target, lazy in imports(path, name) if lazy]
    assert hidden == []


def test_top_level_has_at_most_eight_modules() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top


def test_scripts_are_thin_and_tests_import_the_package() -> None:
    scripts = [*REPO.glob("tools/*.py"), REPO / "train.py", REPO / "test.py"]
    long = [f"{p.name}: {n}" for p in scripts if (n := len(p.read_text().splitlines())) >= 100]
    assert long == []
    sys_path = [p.name for p in REPO.glob("tests/*.py") if "sys.path.insert" in p.read_text() and p.name != Path(__file__).name]
    assert sys_path == []


def test_every_command_module_exists_and_configures_a_parser() -> None:
    for name, (module, _) in COMMANDS.items():
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), name
