"""The import graph of bertlite/ is layered and has no circle.

Every module belongs to a layer, and imports only modules of its own layer or lower ones, even inside a function:
nn -> models / data -> tasks -> checkpoints -> sources / inference -> cli -> scripts. Imports are read with ``ast``
from the source, so a function-level or a ``TYPE_CHECKING`` import counts as much as a top-level one, and nothing
runs. There are no exceptions: where two modules want each other, the shared piece moves down a layer, or the
dispatcher moves up one (as ``sources`` did for the checkpoint readers).

    layer  modules                                                 what they are
    0      bertlite.nn.*, errors, atomic, memory, precision        building blocks; leaf utilities for any layer
    1      bertlite.models.*, bertlite.data.*, positions           networks; tokenizers, data modules, batching;
                                                                   the sequence-length rule
    2      bertlite.tasks.*                                        LightningModules, callbacks, optimizers
    3      checkpoints, model_folder, bertlite.interop.*           reading and writing model files
    4      sources, inference, attention_maps, bertlite (``load``) opening any model source; using a trained model,
                                                                   without the training stack
    5      bertlite.cli.*, predict, generate, finetune, pretrain   entry points (the last four: ``python -m`` forms)
    6      scripts.*                                               benchmarks and tools outside the package
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import bertlite

PACKAGE = Path(bertlite.__file__).resolve().parent

# (module or package prefix, layer): the longest matching prefix decides a module's layer.
LAYERS: dict[str, int] = {
    "bertlite.nn": 0,
    "bertlite.errors": 0,
    "bertlite.atomic": 0,
    "bertlite.memory": 0,
    "bertlite.precision": 0,
    "bertlite.models": 1,
    "bertlite.data": 1,
    "bertlite.positions": 1,  # the sequence-length rule, which the tasks, inference and the CLI all apply
    "bertlite.tasks": 2,
    "bertlite.checkpoints": 3,
    "bertlite.model_folder": 3,
    "bertlite.interop": 3,
    "bertlite": 4,  # the package itself: bertlite.load, which is inference's load
    "bertlite.sources": 4,  # opens a checkpoint file, a model folder or hf:<folder>: the readers sit below
    "bertlite.inference": 4,
    "bertlite.attention_maps": 4,
    "bertlite.cli": 5,
    "bertlite.predict": 5,
    "bertlite.generate": 5,
    "bertlite.finetune": 5,
    "bertlite.pretrain": 5,
    "scripts": 6,
}
PACKAGES_WITH_SUBMODULES = ("bertlite.nn", "bertlite.models", "bertlite.data", "bertlite.tasks", "bertlite.interop",
                            "bertlite.cli", "scripts")

# Packages that inference and the networks must not pull in: importing them costs seconds, and predicting
# needs none of them. The networks may be used without Lightning or Hydra.
TRAINING_PACKAGES = {"lightning", "hydra", "datasets", "omegaconf"}
NETWORK_LAYERS_REFUSE = {"lightning", "hydra", "omegaconf"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    """The layer of the longest prefix of ``module`` in LAYERS; None where no row covers it."""
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or (prefix in PACKAGES_WITH_SUBMODULES and module.startswith(prefix + ".")):
            return LAYERS[prefix]
    return None


@functools.cache
def imported_names(module: str, path: Path) -> frozenset[str]:
    """Every module name ``module`` imports, wherever the import statement is; ``from package import name``
    names the submodule when ``name`` is one, else the package."""
    known = modules()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return frozenset(names)


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the bertlite (and scripts) modules it imports (cached: read it, never change it)."""
    return {module: {name for name in imported_names(module, path)
                     if name.split(".")[0] in ("bertlite", "scripts") and name != module}
            for module, path in modules().items()}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for name in graph.get(todo.pop(), ()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def edges_on_a_circle(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """The imports (a, b) where b leads back to a."""
    return {(a, b) for a, targets in graph.items() for b in targets if a in reachable(graph, b)}


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in graph.items() for b in targets
            if layer_of(b) is not None and layer_of(b) > layer_of(a)}


def test_every_module_has_a_layer():
    unplaced = sorted(module for module in modules() if layer_of(module) is None)
    assert not unplaced, f"add these modules to LAYERS in {Path(__file__).name}: {unplaced}"


def test_no_module_imports_a_module_of_a_higher_layer():
    upward = upward_imports(import_graph())
    described = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})" for a, b in sorted(upward)]
    assert not described, "imports go down the layers, never up:\n" + "\n".join(described)


def test_the_import_graph_has_no_circle():
    circles = edges_on_a_circle(import_graph())
    described = [f"{a} imports {b}, which leads back to {a}" for a, b in sorted(circles)]
    assert not described, "modules import each other:\n" + "\n".join(described)


def test_inference_reaches_no_training_package():
    graph = import_graph()
    reached = {"bertlite", "bertlite.inference"} | reachable(graph, "bertlite") | reachable(graph, "bertlite.inference")
    paths = modules()
    offenders = {module: sorted({name.split(".")[0] for name in imported_names(module, paths[module])}
                                & TRAINING_PACKAGES) for module in sorted(reached) if module in paths}
    offenders = {module: found for module, found in offenders.items() if found}
    assert not offenders, f"bertlite.load reaches modules that import the training stack: {offenders}"


def test_networks_import_neither_lightning_nor_hydra():
    paths = modules()
    offenders = {module: sorted({name.split(".")[0] for name in imported_names(module, path)} & NETWORK_LAYERS_REFUSE)
                 for module, path in paths.items() if module.startswith(("bertlite.nn", "bertlite.models"))}
    offenders = {module: found for module, found in offenders.items() if found}
    assert not offenders, f"the networks must run without Lightning and Hydra: {offenders}"
