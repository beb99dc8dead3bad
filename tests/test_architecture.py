"""The architecture as a contract, read from the source with `ast` (nothing is imported).

Data flows one way (inputs → layers → config → manifest → index → sink), so the import
graph between lamina's modules must have no cycle, and the layers below must not reach up:
the OCI model depends on nothing but errors, layers do not know about sources, and only the
CLI knows it is a CLI (click, exit codes). Every import counts, at module level or inside a
function (a lazy import hides a dependency, it does not remove it), ``if TYPE_CHECKING:``
ones included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

Graph = dict[str, set[str]]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> Iterator[str]:
    """Every dotted name an import statement anywhere in the module refers to.

    ``from a import b`` refers to a.b when a.b is a module, else to a (b is an attribute).
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield full if full in modules else base


def import_graph(root: Path, top: str) -> tuple[Graph, dict[str, set[str]]]:
    """(edges between the package's own modules, every external top-level name each imports).

    Importing a.b.c is not counted as importing a and a.b: their __init__ run, but that
    is Python's doing, not a dependency the code chose.
    """
    files = {module_name(root, p): p for p in sorted((root / top).rglob("*.py"))}
    graph: Graph = {name: set() for name in files}
    external: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for imported in _imported_names(tree, name, path.name == "__init__.py", set(files)):
            if imported.split(".")[0] != top:
                external[name].add(imported.split(".")[0])
            elif imported in files and imported != name:
                graph[name].add(imported)
            elif imported not in files:
                raise AssertionError(f"{name} imports {imported}, which is not a module of {top}")
    return graph, external


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(graph: Graph, sources: str, allowed: tuple[str, ...] = (), forbidden: tuple[str, ...] = ()) -> list[str]:
    """`module -> target` for each import from a module under `sources` that leaves `allowed`
    (when given) or enters `forbidden`."""
    bad = []
    for module in sorted(m for m in graph if _in(m, sources)):
        for target in sorted(graph[module]):
            if _in(target, sources):
                continue
            if allowed and not any(_in(target, ok) for ok in allowed):
                bad.append(f"{module} -> {target}")
            elif any(_in(target, no) for no in forbidden):
                bad.append(f"{module} -> {target}")
    return bad


def _lamina() -> tuple[Graph, dict[str, set[str]]]:
    return import_graph(SRC, "lamina")


def test_the_graph_sees_lamina_as_it_is() -> None:
    """Guards the reader itself: known edges of the real tree must be found."""
    graph, external = _lamina()
    assert len(graph) > 30
    assert "lamina.model.config" in graph["lamina.image"]
    assert "lamina.errors" in graph["lamina.cli"]
    assert "click" in external["lamina.cli"]


def test_no_import_cycles() -> None:
    found = cycles(_lamina()[0])
    assert not found, "import cycles between modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_model_imports_only_errors() -> None:
    bad = violations(_lamina()[0], "lamina.model", allowed=("lamina.errors",))
    assert not bad, "lamina.model may import only lamina.errors:\n" + "\n".join(bad)


def test_layers_do_not_import_sources() -> None:
    bad = violations(_lamina()[0], "lamina.layers", forbidden=("lamina.sources",))
    assert not bad, "lamina.layers must not import lamina.sources:\n" + "\n".join(bad)


@pytest.mark.parametrize("package, above", [
    ("lamina.sources", ("lamina.registry", "lamina.spec", "lamina.build", "lamina.api")),
    ("lamina.sinks", ("lamina.registry", "lamina.spec", "lamina.build", "lamina.api")),
])
def test_readers_and_writers_do_not_reach_up(package: str, above: tuple[str, ...]) -> None:
    """Sources read inputs and sinks write outputs; what sits above them (the registry client,
    the spec, the build) hands them what they need (a push callable, a lookup), never the
    other way round."""
    bad = violations(_lamina()[0], package, forbidden=above)
    assert not bad, f"{package} must not import {', '.join(above)}:\n" + "\n".join(bad)


def test_nothing_below_the_cli_imports_it() -> None:
    graph = _lamina()[0]
    above = {"lamina.cli", "lamina.__main__"}
    bad = [f"{m} -> lamina.cli" for m in sorted(graph) if m not in above and "lamina.cli" in graph[m]]
    assert not bad, "only lamina.__main__ may import lamina.cli:\n" + "\n".join(bad)


def test_only_the_cli_imports_click() -> None:
    external = _lamina()[1]
    bad = sorted(m for m, names in external.items() if "click" in names and m != "lamina.cli")
    assert not bad, "only lamina.cli may import click: " + ", ".join(bad)


# ---- the checker on made-up trees, so each rule is seen failing


def _tree(root: Path, files: dict[str, str]) -> Graph:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(root, "pkg")[0]


def test_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    graph = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg.b import f\n",
        "pkg/b.py": "def f():\n    from pkg import c\n",
        "pkg/c.py": "from . import a\n",
        "pkg/d.py": "import pkg.a\n",
    })
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_relative_and_package_imports_resolve(tmp_path: Path) -> None:
    graph = _tree(tmp_path, {
        "pkg/__init__.py": "from pkg.sub import thing\n",
        "pkg/errors.py": "",
        "pkg/sub/__init__.py": "from .mod import thing\nfrom ..errors import E\n",
        "pkg/sub/mod.py": "from .. import errors\nfrom pkg.sub import other\nimport json\n",
    })
    assert graph == {
        "pkg": {"pkg.sub"},
        "pkg.errors": set(),
        "pkg.sub": {"pkg.sub.mod", "pkg.errors"},
        "pkg.sub.mod": {"pkg.errors", "pkg.sub"},
    }
    assert cycles(graph) == [["pkg.sub", "pkg.sub.mod"]]


@pytest.mark.parametrize(("allowed", "forbidden", "expected"), [
    (("pkg.errors",), (), ["pkg.model.x -> pkg.sources"]),
    ((), ("pkg.sources",), ["pkg.model.x -> pkg.sources"]),
    ((), ("pkg.errors",), ["pkg.model.x -> pkg.errors"]),
])
def test_layering_rules_report_each_edge(tmp_path: Path, allowed: tuple[str, ...], forbidden: tuple[str, ...],
                                         expected: list[str]) -> None:
    graph = _tree(tmp_path, {
        "pkg/__init__.py": "", "pkg/errors.py": "", "pkg/sources.py": "",
        "pkg/model/__init__.py": "from pkg.model.x import X\n",
        "pkg/model/x.py": "import pkg.errors\nif True:\n    def f():\n        import pkg.sources\n",
    })
    assert violations(graph, "pkg.model", allowed=allowed, forbidden=forbidden) == expected
