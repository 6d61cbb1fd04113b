"""The package's dependencies point one way (docs/architecture.md, "Layers").

Every module of `cardioformer_jax` is parsed with `ast` (nothing is imported) and each
import, at module level or inside a function, becomes an edge between *units*: a
subpackage (``data``, ``training``, ...) or a top-level module (``config_lib``, each
command). A unit may import itself and the units of lower layers only; units of one layer
may not import each other. Any import cycle between units is reported as well.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

PACKAGE = "cardioformer_jax"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

# Lowest first. A unit imports only its own modules and units of lower layers.
COMMANDS = ("main", "benchmark", "build_dataset", "evaluate", "export", "predict",
            "synthetic", "torch_import", "torch_reference", "tune")
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("core",)),  # paths, run files and logging, progress, mesh, metrics
    ("ops", ("ops",)),  # the model's kernels
    ("models", ("models",)),
    ("data", ("data",)),
    ("config_lib", ("config_lib",)),  # the config schema: reads models and data
    ("training", ("training",)),  # the programs and the training loop
    ("aot", ("aot",)),  # the training programs compiled for absent TPU slices, GPU nodes
    ("benchmarking", ("benchmarking",)),  # the benchmark's measurements
    ("interop/evaluation/tuning", ("interop", "evaluation", "tuning")),  # side by side
    ("commands", COMMANDS),  # side by side: no command imports another
)
# The package's own __init__ (its version) is below everything and imports nothing.
ROOT_UNIT = "__init__"


@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement: `module` (in file `path`, line `line`) imports `target`."""

    module: str
    target: str
    path: str
    line: int

    def describe(self) -> str:
        return f"{self.path}:{self.line}: {self.module} imports {self.target}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    """``cardioformer_jax.data.windows`` -> ``data``; ``cardioformer_jax.main`` -> ``main``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_UNIT


def _resolve(name: str, known: set[str]) -> str | None:
    """The package module `name` refers to: itself, else its longest known prefix (a name
    defined in a package's __init__); None outside the package."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def parse_imports(root: Path = ROOT) -> list[Import]:
    """Every import between the package's modules, function-level ones included."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root): f for f in files}
    known = set(modules)
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")
                    anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import name`: a submodule when one exists, else pkg itself.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known
                           else base for alias in node.names]
            for target in dict.fromkeys(targets):  # once per statement
                resolved = _resolve(target, known)
                if resolved is not None and resolved != module:
                    edges.append(Import(module, resolved, str(path.relative_to(root.parent)),
                                        node.lineno))
    return edges


Layers = Sequence[tuple[str, Sequence[str]]]


def _ranks(layers: Layers) -> dict[str, int]:
    ranks = {ROOT_UNIT: -1}
    for rank, (_, units) in enumerate(layers):
        for unit in units:
            ranks[unit] = rank
    return ranks


def layer_violations(edges: Iterable[Import],
                     layers: Layers = LAYERS) -> list[str]:
    """One message per import of a higher layer, of a unit of the same layer, or of or
    by a unit that `layers` does not place."""
    ranks = _ranks(layers)
    names = {rank: name for rank, (name, _) in enumerate(layers)}
    names[-1] = PACKAGE
    problems = []
    for edge in edges:
        source, target = unit_of(edge.module), unit_of(edge.target)
        if source == target:
            continue
        unplaced = [u for u in (source, target) if u not in ranks]
        if unplaced:
            problems.append(f"{edge.describe()}: {' and '.join(unplaced)} has no layer; "
                            "add it to LAYERS here and to docs/architecture.md")
        elif ranks[target] > ranks[source]:
            problems.append(f"{edge.describe()}: {source} (layer {names[ranks[source]]}) "
                            f"imports the higher layer {names[ranks[target]]}")
        elif ranks[target] == ranks[source]:
            problems.append(f"{edge.describe()}: {source} and {target} are side by side "
                            f"in layer {names[ranks[source]]} and may not import each other")
    return problems


def unit_cycles(edges: Iterable[Import]) -> list[str]:
    """One message per set of units that import each other in a cycle, naming the
    imports between them (Tarjan's strongly connected components)."""
    edges = list(edges)
    graph: dict[str, set[str]] = {}
    for edge in edges:
        source, target = unit_of(edge.module), unit_of(edge.target)
        graph.setdefault(source, set())
        graph.setdefault(target, set())
        if source != target:
            graph[source].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    problems = []
    for component in components:
        inside = [e.describe() for e in edges
                  if unit_of(e.module) in component and unit_of(e.target) in component
                  and unit_of(e.module) != unit_of(e.target)]
        problems.append(f"import cycle between {', '.join(sorted(component))}:\n    "
                        + "\n    ".join(inside))
    return problems


def _report(problems: Sequence[str], what: str) -> str:
    return f"{len(problems)} {what} (docs/architecture.md, 'Layers'):\n  " + "\n  ".join(
        problems)


# --- the package ----------------------------------------------------------------------------


def test_no_import_cycle_between_units():
    problems = unit_cycles(parse_imports())
    assert not problems, _report(problems, "import cycles between subpackages or modules")


def test_no_import_of_a_higher_or_sibling_layer():
    problems = layer_violations(parse_imports())
    assert not problems, _report(problems, "imports against the layer order")


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(f)) for f in ROOT.rglob("*.py")}
    placed = set(_ranks(LAYERS))
    assert units <= placed, f"no layer in LAYERS for {sorted(units - placed)}"
    assert not placed - units - {ROOT_UNIT}, f"LAYERS names {sorted(placed - units)}, " \
        "which the package does not have"


def test_imports_are_found():
    # Function-level imports count, and `from pkg import module` resolves to the module.
    edges = {(e.module, e.target) for e in parse_imports()}
    assert (f"{PACKAGE}.benchmark", f"{PACKAGE}.benchmarking") in edges
    assert (f"{PACKAGE}.models.cardioformer", f"{PACKAGE}.ops.dropout") in edges


# --- the checks themselves ------------------------------------------------------------------


def _edges(pairs: Mapping[str, Sequence[str]]) -> list[Import]:
    return [Import(f"{PACKAGE}.{source}", f"{PACKAGE}.{target}", f"{source}.py", 1)
            for source, targets in pairs.items() for target in targets]


def test_checks_report_upward_sibling_and_unplaced_imports():
    layers = (("core", ("core",)), ("data", ("data",)), ("training", ("training",)),
              ("top", ("evaluation", "tuning")))
    problems = layer_violations(_edges({
        "data.input_pipeline": ["training.sharding", "core.paths"],
        "evaluation.report": ["tuning.search", "training.steps"],
        "training.steps": ["training.swa", "newthing.x"],
    }), layers)
    assert len(problems) == 3, problems
    assert "data.input_pipeline imports cardioformer_jax.training.sharding" in problems[0]
    assert "imports the higher layer training" in problems[0]
    assert "side by side" in problems[1]
    assert "newthing has no layer" in problems[2]


def test_checks_report_cycles():
    edges = _edges({"benchmark": ["interop.torch_reference"],
                    "interop.torch_reference": ["benchmark", "models.layers"],
                    "models.layers": ["ops.attention"]})
    (problem,) = unit_cycles(edges)
    assert problem.startswith("import cycle between benchmark, interop:")
    assert "interop.torch_reference imports cardioformer_jax.benchmark" in problem
    assert not unit_cycles(edges[2:])
