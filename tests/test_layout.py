"""The package's shape: no import cycle between its modules (function-level imports included), and callers
that decide by the declared model interface, never by probing attributes or reading family names."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "aediff"
# Where models are used rather than defined: these must dispatch on model.can(Capability.X) only.
CALLERS = ["cli.py", "app", "evaluation", "export", "reports", "training"]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imported(module: str, node: ast.AST, modules: dict[str, Path]) -> list[str]:
    """The package modules an import statement loads (the longest known prefix of each name)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            here = module.split(".") if modules[module].name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
        # `from a import b` loads the module a.b when there is one, else takes the name b from a
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    else:
        return []
    found = []
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.append(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            graph[module].update(_imported(module, node, modules))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _is_family(node: ast.AST) -> bool:
    return (
        (isinstance(node, ast.Attribute) and node.attr == "family")
        or (isinstance(node, ast.Name) and node.id == "family")
        or (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value == "family")
    )


def _is_text(node: ast.AST) -> bool:
    """A string literal, or a tuple / list / set of them."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_is_text(e) for e in node.elts)
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def probes(source: str) -> list[str]:
    """hasattr / getattr calls, and a ``family`` (attribute, key or name) compared with a family's name, in
    ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr"):
            found.append(f"line {node.lineno}: {node.func.id}()")
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_family(s) for s in sides) and any(_is_text(s) for s in sides):
                found.append(f"line {node.lineno}: a family compared with a name")
    return found


@pytest.mark.parametrize("where", CALLERS)
def test_callers_dispatch_on_capabilities_not_on_attributes_or_family_names(where):
    paths = [PACKAGE / where] if where.endswith(".py") else sorted((PACKAGE / where).rglob("*.py"))
    found = {str(p.relative_to(PACKAGE)): probes(p.read_text()) for p in paths}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_probe_finder_finds_probes():
    assert len(probes("if hasattr(m, 'x') and m.family == 'vae' and d['family'] != 'ae': pass")) == 3
    assert len(probes("if family in ('ae', 'vae') or getattr(m, 'denoiser', None): pass")) == 2
    assert probes("if model.can(Capability.LATENT) and family is not None and a == b.family: pass") == []


# --- layers: a module imports only from its own layer or below (function-level imports included) ----------------
# Lowest first. A package named here holds all its modules; the root package ``aediff`` is the Python API
# (``aediff.load``, ``aediff.train``), which the report, the page and the CLI call.
LAYERS = [
    ["aediff.version", "aediff.modes", "aediff.errors", "aediff.config", "aediff.device"],
    ["aediff.blocks", "aediff.metrics", "aediff.diffusion"],
    ["aediff.data"],
    ["aediff.models"],
    ["aediff.runs"],
    ["aediff.training", "aediff.evaluation", "aediff.export", "aediff.environment"],
    ["aediff"],
    ["aediff.reports", "aediff.app", "aediff.requests"],
    ["aediff.cli"],
]


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    """The index of the layer that holds ``module`` (the longest name of a layer that is it or a package above
    it; the root package holds only itself); None when no layer does."""
    found = [
        (len(name), i)
        for i, names in enumerate(layers)
        for name in names
        if module == name or (module.startswith(name + ".") and name != "aediff")
    ]
    return max(found)[1] if found else None


def upward_imports(graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    """Every import of a module from a higher layer, and every module no layer holds."""
    found = [f"{m}: in no layer" for m in sorted(graph) if layer_of(m, layers) is None]
    for module in sorted(graph):
        here = layer_of(module, layers)
        for imported in sorted(graph[module]):
            there = layer_of(imported, layers)
            if here is not None and there is not None and there > here:
                found.append(f"{module} -> {imported}")
    return found


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports(import_graph(), LAYERS) == []


def test_the_layer_checker_finds_an_upward_import():
    graph = import_graph()
    assert graph["aediff.runs.loading"] and "aediff.export.sources" not in graph["aediff.runs.loading"]
    graph["aediff.runs.loading"].add("aediff.export.sources")  # runs reaching up into export, as it once did
    graph["aediff.metrics.stats"].add("aediff")  # the version read from the API package, as the report once did
    graph["aediff.newcomer"] = set()
    assert upward_imports(graph, LAYERS) == [
        "aediff.newcomer: in no layer",
        "aediff.metrics.stats -> aediff",
        "aediff.runs.loading -> aediff.export.sources",
    ]


def test_the_import_graph_sees_function_level_imports():
    assert "aediff.export" in import_graph()["aediff"]  # ``aediff.load`` imports it inside a function
