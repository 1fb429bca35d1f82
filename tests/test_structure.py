"""Package structure: no import cycles among fercli's modules.

Every ``import fercli...`` and ``from fercli... import`` is counted, at module level and inside
functions alike: a lazy import hides a cycle from the interpreter, not from the reader. Imports under
``if TYPE_CHECKING:`` are left out: they exist for type hints and never run. Any chain
A -> B -> ... -> A between modules is a cycle, with one exception: a package's ``__init__``
importing its own submodules (to re-export them, or lazily like ``fercli.__getattr__``) is the
package's job, not a dependency of the package on its users. A submodule that imports its package
back while that package's ``__init__`` imports submodules at load time is checked separately.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "fercli"


def module_files() -> dict[str, Path]:
    """Every fercli module's dotted name -> its file (``fercli.models`` for fercli/models/__init__.py)."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a fercli module (a symbol import names its module)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _is_type_checking_block(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:``: imports for type hints only, which never run."""
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


def _walk_runtime(tree: ast.AST) -> list[ast.AST]:
    """Every node except those inside ``if TYPE_CHECKING:`` blocks."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        todo.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking_block(child))
    return out


def _module_level(tree: ast.Module) -> list[ast.AST]:
    """The nodes that run when the module loads: everything outside function bodies."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        out.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(child for child in ast.iter_child_nodes(node) if not _is_type_checking_block(child))
    return out


def imports_of(module: str, path: Path, modules: dict[str, Path], eager_only: bool = False) -> set[str]:
    """The fercli modules ``module`` imports anywhere in its file (``eager_only``: at load time),
    resolved to module granularity."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in _module_level(tree) if eager_only else _walk_runtime(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from fercli.pkg import name` imports fercli.pkg.name when that is a module, else fercli.pkg.
            names.update(f"{target}.{alias.name}" for alias in node.names)
    out = {m for m in (_resolve(n, modules) for n in names if n.split(".")[0] == "fercli") if m}
    out.discard(module)
    return out


def import_graph(eager_only: bool = False) -> dict[str, set[str]]:
    """Module -> the fercli modules it imports (``eager_only``: at load time)."""
    modules = module_files()
    return {m: imports_of(m, p, modules, eager_only) for m, p in modules.items()}


def _is_own_submodule(package: str, module: str) -> bool:
    return module.startswith(package + ".")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected component with more than one module.

    Edges from a package ``__init__`` to its own submodules are left out (see the module docstring).
    """
    edges = {m: {t for t in targets if not _is_own_submodule(m, t)} for m, targets in graph.items()}
    # Tarjan's strongly connected components, iteratively.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    components.append(sorted(comp))
    return [_cycle_in(comp, edges) for comp in components]


def _cycle_in(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module, as ``[a, b, ..., a]``."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for t in sorted(edges[node] & members):
                if t == start:
                    return paths[node] + [start]
                if t not in paths:
                    paths[t] = paths[node] + [t]
                    nxt_frontier.append(t)
        frontier = nxt_frontier
    return component  # unreachable for a real component


def test_the_graph_sees_lazy_and_symbol_imports() -> None:
    graph = import_graph()
    assert "fercli.models.init" in graph["fercli.models.factory"]  # `from fercli.models.init import ...`
    assert "fercli.models.registry" in graph["fercli.models"]  # a package re-exporting its submodules
    assert "fercli.checkpoint" in graph["fercli.calibration"]  # imported inside run_calibrate


def test_the_cycle_finder_finds_chains_and_ignores_a_package_s_own_submodules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "p": {"p.x"}, "p.x": {"d"}, "d": {"p"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert find_cycles({"p": {"p.x", "q"}, "q": {"p"}}) == [["p", "q", "p"]]  # not a submodule: a cycle


def test_models_never_import_checkpoint() -> None:
    graph = import_graph()
    for module, targets in graph.items():
        if module == "fercli.models" or module.startswith("fercli.models."):
            assert "fercli.checkpoint" not in targets, module


def test_no_submodule_imports_its_eagerly_loading_package() -> None:
    # `fercli.pkg.x` importing `fercli.pkg` runs (or finds half-run) an __init__ that imports
    # fercli.pkg's submodules at load time: a real cycle; import the sibling module instead.
    eager = import_graph(eager_only=True)
    graph = import_graph()
    back = [f"{m} -> {pkg}" for pkg, targets in eager.items() if any(_is_own_submodule(pkg, t) for t in targets)
            for m in graph if _is_own_submodule(pkg, m) and pkg in graph[m]]
    assert not back, "submodules importing their own package back:\n" + "\n".join(back)


def test_no_import_cycles() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles among fercli modules:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_config_validator_names_an_existing_class() -> None:
    """fercli.config finds a stage's validator by its config class's module and name: a class that
    moves without its key silently loses its validation, so every key must name a real class."""
    import importlib

    from fercli.config import VALIDATORS

    for key in VALIDATORS:
        module, _, name = key.rpartition(".")
        cls = getattr(importlib.import_module(module), name, None)
        assert isinstance(cls, type), f"{key}: no such class"
        assert f"{cls.__module__}.{cls.__qualname__}" == key, f"{key}: the class is defined in {cls.__module__}"
