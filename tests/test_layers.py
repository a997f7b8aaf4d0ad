"""The layers of the tree: no import cycle between top-level packages, and the order
embedded -> engine -> verifiers -> strategies -> tasks -> align -> apps holds (a package imports
only from layers below it). The graph is read from the source (every import, including the ones
inside functions), so a lazy import cannot hide a cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["embedded", "engine", "verifiers", "strategies", "tasks", "align", "apps"]


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in LAYERS}
    for name in LAYERS:
        for path in (ROOT / name).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    module = node.module or ""
                    modules = [module] + [f"{module}.{a.name}" for a in node.names]
                else:
                    continue
                for module in modules:
                    parts = module.split(".")
                    if parts[0] == "ponder" and len(parts) > 1 and parts[1] in graph:
                        graph[name].add(parts[1])
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path + [node, nxt]
            if nxt not in state and (found := visit(nxt, path + [node])):
                return found
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node, [])):
            return found
    return None


def test_every_top_level_package_is_a_known_layer():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS)


def test_no_import_cycle_between_top_level_packages():
    assert find_cycle(import_graph()) is None


def test_packages_import_only_from_lower_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{a} -> {b}" for a, deps in import_graph().items() for b in deps if rank[b] > rank[a]
    ]
    assert upward == []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_importing_strategies_does_not_import_torch():
    code = "import sys, ponder.strategies, ponder.verifiers; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
