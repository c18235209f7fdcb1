"""The package's layout: imports flow from the entry points down to the kernels, never back.

:data:`LAYERS` says which layer each module belongs to; a module imports only modules of its
own layer or of layers below it (and no cycles). A new module gets a line in the table."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "saliencymixplus"

#: Lowest first. A name covers the module and, for a package, its submodules (``training``:
#: ``training.*``); ``saliencymixplus`` is the package's ``__init__``. Above them all: train.py,
#: tools/ and benchmarks/, outside the package.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("shared facts and files", ("files", "datasets", "interrupts")),
    ("kernels", ("_C", "_extension", "ops")),
    ("mixers", ("mix", "label_noise", "saliencymixplus")),
    ("networks", ("models",)),
    ("file formats", ("precompute_command", "cache", "checkpoint_file")),
    ("where images and maps come from", ("saliency", "rawdata", "folders", "demo", "demo_hard")),
    ("transforms", ("transforms", "tv_tensors")),
    ("data sets for training, refreshed maps", ("data", "refresh")),
    ("the cache tool", ("precompute",)),
    ("training", ("training",)),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (also inside functions).
    ``from P import x`` is an edge to ``P.x`` when that is a module, else to ``P``; importing
    ``a.b.c`` is also an edge to the packages ``a`` and ``a.b`` (their ``__init__`` runs first),
    except those that contain the importer (already running)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names]
            found.update(s if s in modules else target for s in subs)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    for m in list(found):  # importing a.b.c runs a's and a.b's __init__ first
        parts = m.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return {m for m in found if m in modules and m != name and not name.startswith(m + ".")}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    compiled = {"saliencymixplus._C"}  # the extension (built, or missing on a CPU-less build): a leaf
    return {name: _imports(p, name, set(files) | compiled) for name, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules ``a -> b -> ... -> a`` if the graph has a cycle, else None. Importing a
    package's ``__init__`` from a module inside it counts as an edge like any other."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_reads_relative_and_function_level_imports():
    g = import_graph()
    assert "saliencymixplus.cache" in g["saliencymixplus.precompute"]  # from .cache import ...
    assert "saliencymixplus.precompute" in g["saliencymixplus.training.runner"]  # inside a function
    assert "saliencymixplus.ops" in g["saliencymixplus.mix"]


def test_the_package_has_no_import_cycles():
    """Not even through imports inside functions, which Python tolerates at run time."""
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module`` (a full name), or None when it has none."""
    short = "saliencymixplus" if module == "saliencymixplus" else module.removeprefix("saliencymixplus.")
    for i, (_, names) in enumerate(LAYERS):
        if any(short == n or short.startswith(n + ".") for n in names):
            return i
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``"a (layer) -> b (layer)"`` for each import of a module of a higher layer."""
    up = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            la, lb = layer_of(a), layer_of(b)
            if la is not None and lb is not None and lb > la:
                up.append(f"{a} ({LAYERS[la][0]}) -> {b} ({LAYERS[lb][0]})")
    return up


def test_upward_imports_are_found():
    graph = {"saliencymixplus.cache": {"saliencymixplus.files", "saliencymixplus.rawdata"},
             "saliencymixplus.training.loop": {"saliencymixplus.mix", "saliencymixplus.training.config"},
             "saliencymixplus.ops": {"saliencymixplus"}}
    assert upward_imports(graph) == [
        "saliencymixplus.cache (file formats) -> saliencymixplus.rawdata (where images and maps come from)",
        "saliencymixplus.ops (kernels) -> saliencymixplus (mixers)"]


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if layer_of(m) is None] == [], "add it to LAYERS"
    listed = [n for _, names in LAYERS for n in names]
    assert len(listed) == len(set(listed)), "a module listed in two layers"


def test_imports_flow_down_the_layers():
    """Not even through imports inside functions: a format module that loads the data sets to
    spell a message, or a loader that imports the training code, is an upward import."""
    assert upward_imports(import_graph()) == []
