"""The package's import graph: layers point downwards (DESIGN.md) and no module imports itself through others.

Every import counts, also one inside a function: a cycle hidden in a function is still a cycle a reader must
untangle. Edges are between modules (``pamtri.pipeline.index`` -> ``pamtri.reid.distance``); importing a
package's ``__init__`` for a submodule counts as importing the submodule.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "pamtri"
# a layer may import its own modules and those of the layers below it
LAYERS = {"common": 0, "data": 1, "pose": 2, "reid": 3, "pipeline": 4}
# the keypoint schema is defined once, in the pose stage, and is a leaf: label files (data/) carry its keypoints
SCHEMA = "pamtri.pose.keypoints"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = ["pamtri", *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    """Every module of the package, the symlinked stage folders included (os.walk follows them; rglob may not)."""
    import os
    found = {}
    for folder, dirs, files in os.walk(ROOT, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            if f.endswith(".py"):
                found[_module_name(Path(folder) / f)] = Path(folder) / f
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (anywhere in the file)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t != "pamtri":
                found.add(t)
    # a submodule imported as `from pkg import sub` also names pkg: keep the most specific
    return {t for t in found if not any(o.startswith(t + ".") for o in found)}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_through_others(graph):
    assert len(graph) > 100 and "pamtri.pipeline.index" in graph and "pamtri.pose.codec" in graph
    assert _cycles(graph) == []


def test_layers_import_downwards_only(graph):
    def layer(module: str) -> int | None:
        parts = module.split(".")
        return LAYERS.get(parts[1]) if len(parts) > 1 else None
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                    if layer(m) is not None and layer(t) is not None and layer(t) > layer(m) and t != SCHEMA)
    assert upward == []
    assert graph[SCHEMA] == set()  # the schema imports nothing of the package


def test_the_walker_sees_a_cycle_and_an_upward_import():
    g = {"pamtri.pipeline.a": {"pamtri.pipeline.b"}, "pamtri.pipeline.b": {"pamtri.pipeline.a"},
         "pamtri.reid.c": set()}
    assert _cycles(g) == [["pamtri.pipeline.a", "pamtri.pipeline.b"]]
    tree = ast.parse("def f():\n    from .index import x\n")
    assert any(isinstance(n, ast.ImportFrom) and n.module == "index" for n in ast.walk(tree))
