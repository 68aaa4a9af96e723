"""Every module imports on its own in a fresh interpreter, and the import graph of recall/ has no cycle."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import recall

RECALL = Path(recall.__file__).resolve().parent
HAS_PYSPARK = importlib.util.find_spec("pyspark") is not None
MODULES = sorted(m.name for m in pkgutil.walk_packages(recall.__path__, "recall.")
                 if HAS_PYSPARK or not m.name.startswith("recall.spark"))


def test_every_module_imports_alone():
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    failures = []
    for name in MODULES:  # one interpreter per module: each must import first, on its own
        run = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True)
        if run.returncode:
            failures.append(f"{name}: {run.stderr.strip().splitlines()[-1]}")
    assert not failures, "\n".join(failures)


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__.py)."""
    out = {}
    for path in RECALL.rglob("*.py"):
        parts = ["recall", *path.relative_to(RECALL).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the recall modules it imports, *anywhere* in its file.

    Counted: top-level imports, imports inside functions and methods (lazy imports
    still make a cycle at run time) and ``if TYPE_CHECKING:`` imports (a cycle
    there is a layering error too). ``from pkg import name`` points at the
    submodule ``pkg.name`` when that is a module, else at ``pkg`` itself.
    """
    files = module_files()

    def owner(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {owner(a.name) for a in node.names if a.name.split(".")[0] == "recall"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                if base.split(".")[0] != "recall":
                    continue
                deps |= {owner(f"{base}.{a.name}") if f"{base}.{a.name}" in files else owner(base)
                         for a in node.names}
        graph[module] = deps - {None, module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "recall.channels" in graph["recall.config"]  # the walker sees real edges
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_sections_are_the_bottom_of_the_configuration():
    """Nothing the channels import reaches recall.config (it imports the channel registry)."""
    graph = import_graph()
    below: set[str] = set()
    todo = ["recall.channels"]
    while todo:
        module = todo.pop()
        for dep in graph.get(module, ()):
            if dep not in below:
                below.add(dep)
                todo.append(dep)
    assert "recall.config" not in below
    assert graph["recall.sections"] <= {"recall", "recall.errors", "recall.schema"}


@pytest.mark.parametrize("heavy", ["torch", "gensim", "faiss", "pyspark", "matplotlib"])
def test_cli_does_not_import_heavy_libraries(heavy):
    run = subprocess.run([sys.executable, "-c", f"import recall.cli, sys; print('{heavy}' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


def test_the_public_api_is_small_lazy_and_real():
    import recall

    assert set(recall.__all__) == {"CHANNELS", "Config", "RecallError", "evaluate", "load_config",
                                   "load_config_files", "load_data", "run", "tune"}
    from recall.evaluation import evaluate
    from recall.pipeline import run

    assert recall.run is run and recall.evaluate is evaluate and "itemcf" in recall.CHANNELS
    # Importing the package loads no heavy module.
    probe = "import sys, recall; print(sorted(m for m in ('polars', 'torch', 'gensim', 'faiss') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


BENCH = RECALL.parent / "bench"


def is_submodule(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent is a module, not a package
        return False


@pytest.mark.skipif(not BENCH.is_dir(), reason="no bench/ folder next to the package")
def test_every_name_the_benchmarks_import_from_recall_exists():
    """A benchmark that names a moved or renamed function fails here, not in the next timing session."""
    missing = []
    for path in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recall")):
                continue
            if not HAS_PYSPARK and node.module.startswith("recall.spark"):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name) and not is_submodule(f"{node.module}.{alias.name}"):
                    missing.append(f"{path.name}: from {node.module} import {alias.name}")
    assert not missing, "\n".join(missing)
