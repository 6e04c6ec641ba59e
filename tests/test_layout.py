"""The package's shape: no import cycle between its modules (function-level imports included), and callers
that decide by the declared model interface, never by probing attributes or reading family names."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "aediff"
# Where models are used rather than defined: these must dispatch on model.can(Capability.X) only.
CALLERS = ["cli.py", "requests.py", "app", "evaluation", "export", "reports", "training"]


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


# --- the model interface is the only way into a model outside models/ ----------------------------------------
# No isinstance on a family class (ask model.can(Capability.X)) and no read of a family's own config (ask a
# property or method the interface declares: model.likelihood, model.default_guidance, ...).


def _outside_models() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if (PACKAGE / "models") not in p.parents)


def _family_classes() -> dict[str, type]:
    """Name -> class of every class defined in aediff.models that subclasses Model (the interface itself not)."""
    from aediff.models import Model

    found, todo = {}, list(Model.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("aediff.models."):
            found[cls.__name__] = cls
    return found


def _family_config_fields() -> tuple[set[str], set[str]]:
    """(the names of the families' config classes, the field names of those classes)."""
    import dataclasses

    configs = {c.config_class for c in _family_classes().values() if dataclasses.is_dataclass(c.config_class)}
    return {c.__name__ for c in configs}, {f.name for c in configs for f in dataclasses.fields(c)}


def _name(node: ast.AST) -> str | None:
    """The name a class reference ends in: ``Classifier`` or ``models.Classifier`` -> "Classifier"."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a string annotation
        return node.value.rpartition(".")[2]
    return None


def _flat(nodes: list[ast.AST]) -> list[ast.AST]:
    """Tuples, lists and sets opened: ``(A, B), C`` -> A, B, C."""
    return [e for n in nodes for e in (n.elts if isinstance(n, (ast.Tuple, ast.List, ast.Set)) else [n])]


def family_checks(source: str, families: set[str]) -> list[str]:
    """isinstance / issubclass against a family class, ``type(x) is Family`` (or ==, in) and ``case Family()``
    in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        classes: list[ast.AST] = []
        if isinstance(node, ast.Call) and _name(node.func) in ("isinstance", "issubclass") and len(node.args) == 2:
            classes = _flat(node.args[1:])
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Call) and _name(s.func) == "type" for s in sides):
                classes = _flat(sides)
        elif isinstance(node, ast.MatchClass):
            classes = [node.cls]
        if any(_name(c) in families for c in classes):
            found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    return found


def _config_aliases(function: ast.AST, config_classes: set[str]) -> set[str]:
    """Names in ``function`` that hold a family's config: bound from ``<x>.config`` or annotated with a family's
    config class."""
    aliases = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and _reads_a_model_config(node.value, set()):
            aliases.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.arg) and node.annotation is not None and _name(node.annotation) in config_classes:
            aliases.add(node.arg)
    return aliases


def _reads_a_model_config(node: ast.AST, aliases: set[str]) -> bool:
    """``<x>.config`` for any x but ``self`` (a class's own config), or a name that holds a family's config."""
    if isinstance(node, ast.Attribute) and node.attr == "config":
        return not (isinstance(node.value, ast.Name) and node.value.id == "self")
    return isinstance(node, ast.Name) and node.id in aliases


def config_reach_ins(source: str, config_classes: set[str], fields: set[str]) -> list[str]:
    """Reads of a family's config in ``source``: ``<x>.config.<field>`` (x not ``self``), ``<name>.<field>``
    where the name holds a family's config, ``replace(<a config>, <field>=...)``, and getattr / hasattr of
    "config" or a field name, or on a config. ``field`` is a field of a family's config class (so a run's
    TrainConfig / DataConfig, a diffusers model's ``.config`` and a class's own ``self.config`` pass)."""
    tree = ast.parse(source)
    found = set()
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))]:
        aliases = _config_aliases(scope, config_classes) if scope is not tree else set()
        for node in ast.walk(scope):
            if isinstance(node, ast.Attribute) and node.attr in fields and _reads_a_model_config(node.value, aliases):
                found.add((node.lineno, ast.unparse(node)))
            elif isinstance(node, ast.Call) and node.args:
                name = _name(node.func)
                first, second = node.args[0], node.args[1] if len(node.args) > 1 else None
                named = isinstance(second, ast.Constant) and second.value in {"config", *fields}
                on_config = _reads_a_model_config(first, aliases)
                if name in ("getattr", "hasattr", "setattr", "delattr") and (named or on_config):
                    found.add((node.lineno, ast.unparse(node)))
                elif name == "replace" and on_config and any(k.arg in fields for k in node.keywords):
                    found.add((node.lineno, ast.unparse(node)))
    return [f"line {line}: {text[:80]}" for line, text in sorted(found)]


def test_no_isinstance_on_a_model_family_outside_models():
    families = set(_family_classes())
    found = {str(p.relative_to(PACKAGE)): family_checks(p.read_text(), families) for p in _outside_models()}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_family_check_finder_finds_isinstance_on_a_family():
    families = set(_family_classes())
    assert {"Classifier", "VAE", "DiffusionModel", "LatentDiffusionModel"} <= families and "Model" not in families
    planted = """
if isinstance(judge, Classifier) or issubclass(cls, (models.VAE, int)) or type(m) is DiffusionModel:
    pass
if type(m) in (AEConfig, DAE):
    pass
match m:
    case LatentDiffusionModel():
        pass
"""
    assert len(family_checks(planted, families)) == 5
    fine = "if isinstance(m, Model) and isinstance(x, torch.Tensor) and type(m) is type(n) and m.can(C.CLASSIFY): pass"
    assert family_checks(fine, families) == []


def test_no_family_config_reach_in_outside_models():
    classes, fields = _family_config_fields()
    found = {str(p.relative_to(PACKAGE)): config_reach_ins(p.read_text(), classes, fields) for p in _outside_models()}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_reach_in_finder_finds_family_config_reads():
    classes, fields = _family_config_fields()
    assert {"DiffusionConfig", "VAEConfig", "ClassifierConfig"} <= classes and {"likelihood", "sampling"} <= fields
    planted = """
def f(model, run, c: DiffusionConfig):
    a = model.config.likelihood + run.model.config.sampling.guidance
    config = run.config
    b = config.conditioning.kind, c.process
    d = getattr(config, "conditioning", None), getattr(run, "config"), hasattr(model.config, name)
    e = dataclasses.replace(run.config, sampling=None)
"""
    assert len(config_reach_ins(planted, classes, fields)) == 8
    fine = """
class Trainer:
    def step(self, config: TrainConfig, data: DataConfig, compare: CompareConfig, model):
        x = self.config.likelihood, self.config.lr, config.lr, data.channels, compare.samples
        y = run.training.lr, run.data.channels, unet.config.sample_size, scheduler.config.get("x")
        z = model.likelihood, model.default_guidance, config_to_dict(run.config), getattr(self, name)
        config = run.training
        w = config.seed, dataclasses.replace(config, lr=1)
"""
    assert config_reach_ins(fine, classes, fields) == []


# --- layers: a module imports only from its own layer or below (function-level imports included) ----------------
# Lowest first. A package named here holds all its modules; the root package ``aediff`` is the Python API
# (``aediff.load``, ``aediff.train``), which the report, the page and the CLI call.
LAYERS = [
    ["aediff.version", "aediff.modes", "aediff.errors", "aediff.config", "aediff.device", "aediff.outputs"],
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
