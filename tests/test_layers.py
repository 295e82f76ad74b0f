"""The house rules of the layout: each layer imports only from the layers below it, no cycles, and no
import of project code tucked inside a function (the usual way to hide a cycle).

Layers, bottom to top: features → models → evaluation → serving → reporting → pipelines →
experiments, benchmarks. A module may import its own layer and those below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["features", "models", "evaluation", "serving", "reporting", "pipelines"]
TOP = ["experiments", "benchmarks"]  # may import every layer, never each other
RANK = {name: i for i, name in enumerate(LAYERS)} | {name: len(LAYERS) for name in TOP}


def modules() -> list[Path]:
    return sorted(p for layer in RANK for p in (ROOT / layer).rglob("*.py"))


def project_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module level?) of every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` blocks are module level too
        if isinstance(node, ast.If):
            top_level |= {id(n) for n in node.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from package import submodule` imports the submodule
            names = [
                f"{node.module}.{alias.name}"
                if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists()
                else node.module
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name.split(".")[0] in RANK:
                found.append((name, node.lineno, id(node) in top_level))
    return found


def layer_of(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_only_its_own_layer_and_those_below(path):
    own = layer_of(path)
    for name, line, _ in project_imports(path):
        target = name.split(".")[0]
        assert RANK[target] <= RANK[own], f"{path.name}:{line} imports {name} from a layer above"
        if own in TOP and target in TOP:
            assert target == own, f"{path.name}:{line}: {own} must not import {target}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_project_imports_sit_at_module_level(path):
    lazy = [f"{name} (line {line})" for name, line, top in project_imports(path) if not top]
    assert not lazy, f"{path.relative_to(ROOT)} imports project code inside a function: {lazy}"


def test_the_import_graph_has_no_cycle():
    graph: dict[str, set[str]] = {}
    for path in modules():
        rel = path.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        graph[name] = {n for n, _, _ in project_imports(path)}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail(f"import cycle: {' → '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_layer_rule_catches_a_back_reference(tmp_path):
    """The check itself can fail: a features module importing serving is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from serving.bundle import load_bundle\n\ndef f():\n    import models.data\n")
    found = project_imports(bad)
    assert found == [("serving.bundle", 1, True), ("models.data", 4, False)]
    assert RANK["serving"] > RANK["features"]
