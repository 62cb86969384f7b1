"""The import graph of toolrl: no cycles, and every import goes down the layers.

Read from the source (every `import` statement, also those inside functions), so a lazy import
that would close a cycle, or reach up a layer, fails here too.
"""

import ast
from pathlib import Path

import toolrl

ROOT = Path(toolrl.__file__).parent

LAYERS = [
    {"types", "chat", "config", "asgi"},
    {"algorithms", "sandbox", "models", "template_check"},
    {"tools"},
    {"rollout", "rewards"},
    {"data"},
    {"eval"},
    {"trainers"},
    {"distributed", "serving"},
    {"demo"},
    {"commands", "cli", "__main__"},
]
"""Lowest first: a module may import from its own layer's packages and from the layers below."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The toolrl modules `path` imports. `from pkg import mod` imports `pkg.mod` when that is
    a module, and `pkg` itself only for names that are not modules."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = {f"{base}.{alias.name}" for alias in node.names}
            found |= names & known
            if names - known:
                found.add(base)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    known = set(paths)
    return {name: imported_modules(path, name, known) for name, path in paths.items()}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for index, layer in enumerate(LAYERS):
        if top in layer:
            return index
    raise AssertionError(f"{module} is in no layer: add its package to LAYERS")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of modules, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], path[len(path) :] = 1, [node]
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 100  # the walk saw the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_every_import_goes_down_the_layers():
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in sorted(import_graph().items())
        if module != "toolrl"
        for target in sorted(targets)
        if target != "toolrl" and layer_of(target) > layer_of(module)
    ]
    assert upward == []
