"""The package's shape: layered packages, data flowing one way, no import circle anywhere.

Every module of ``src/aigi`` is parsed with :mod:`ast` (nothing is imported) and each import
it makes, at module level or inside a function, becomes an edge; only imports under ``if
TYPE_CHECKING:`` are left out (they never run). The test fails on

- a module that belongs to no layer (every module lives in one of :data:`LAYERS`' packages),
- an import that goes against the layer order (a lower layer importing a higher one, or one
  package importing another of the same rank: they stand side by side),
- a circle of modules, or a circle of packages.

The order, lowest first (README, "Development"): ``io`` reads files, archives and uploads
and turns them into model input; ``forensics`` (what a file's metadata says, dataset audits)
and ``encoders`` stand beside each other on top of it; then ``detector``, ``inference``,
``evaluation``, ``training``, ``serve`` and ``cli``.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

SRC = Path(os.environ.get("AIGI_LAYERS_SRC") or Path(__file__).resolve().parents[1] / "src") / "aigi"
ROOT = "aigi"

# package -> rank. A module may import its own package, the root (``__version__``) and packages of
# a lower rank; packages of equal rank stand beside each other and do not import each other.
LAYERS = {
    "aigi.io": 0,
    "aigi.forensics": 1,
    "aigi.encoders": 1,
    "aigi.detector": 2,
    "aigi.inference": 3,
    "aigi.evaluation": 4,
    "aigi.training": 5,
    "aigi.serve": 6,
    "aigi.cli": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """module -> the aigi modules it imports (``from .pkg import mod`` counts ``pkg.mod``)."""
    files = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                bases = [a.name for a in node.names]
                names: list[str] = []
            else:
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                bases, names = [base], [a.name for a in node.names]
            for base in bases:
                if base != ROOT and not base.startswith(ROOT + "."):
                    continue
                subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in files]
                if subs:
                    targets.update(subs)
                    if len(subs) < len(names):
                        targets.add(base)  # names defined in the package itself, besides submodules
                else:
                    while base not in files and "." in base:
                        base = base.rpartition(".")[0]
                    targets.add(base)
        targets.discard(name)
        graph[name] = targets
    return graph


def layer_of(module: str) -> str | None:
    if module == ROOT:
        return ROOT
    return next((p for p in LAYERS if module == p or module.startswith(p + ".")), None)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    assert SRC.is_dir(), SRC
    return import_graph()


def test_every_module_is_in_a_layer(graph):
    homeless = sorted(m for m in graph if layer_of(m) is None)
    assert not homeless, f"modules outside the layers {sorted(LAYERS)}: {homeless}"


def test_imports_follow_the_layer_order(graph):
    wrong = []
    for module, targets in sorted(graph.items()):
        here = layer_of(module)
        if here is None or here == ROOT:
            continue
        for target in sorted(targets):
            there = layer_of(target)
            if there in (here, ROOT):
                continue
            if there is None or LAYERS[there] >= LAYERS[here]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layer order (lowest first: " + ", ".join(LAYERS) + "):\n" + "\n".join(wrong)


def test_no_module_imports_itself_in_a_circle(graph):
    found = cycles(graph)
    assert not found, "import circles between modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_package_imports_itself_in_a_circle(graph):
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        package = layer_of(module) or module.rpartition(".")[0] or module
        packages.setdefault(package, set()).update(
            t for t in ((layer_of(t) or t.rpartition(".")[0] or t) for t in targets) if t != package)
    found = cycles(packages)
    assert not found, "import circles between packages:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checker_sees_a_circle_and_a_wrong_way_import(tmp_path, monkeypatch):
    """The checks above would catch what they are for: a function-level circle and an upward import."""
    pkg = tmp_path / "aigi"
    for rel, text in {"__init__.py": "", "io/__init__.py": "", "detector/__init__.py": "",
                      "io/a.py": "def f():\n    from .b import g\n",
                      "io/b.py": "from .a import f\n",
                      "io/c.py": "from ..detector import model\n",
                      "detector/model.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..io import c\n"}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    g = import_graph()
    assert g["aigi.io.a"] == {"aigi.io.b"} and g["aigi.io.b"] == {"aigi.io.a"}
    assert g["aigi.detector.model"] == set()  # TYPE_CHECKING imports never run
    assert cycles(g) == [["aigi.io.a", "aigi.io.b"]]
    assert g["aigi.io.c"] == {"aigi.detector.model"}
