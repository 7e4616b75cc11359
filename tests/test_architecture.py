"""The package's structure, checked: layers, private names, function size (docs/ARCHITECTURE.md).

Imports are read from the source with ``ast`` (lazy imports inside functions included), so a
violation is found without importing anything.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pdcr_lab"

#: The layers, bottom first. A module may import from its own layer and the layers below it,
#: never from a layer above (data flow: datasets -> models -> explainers -> results -> analysis ->
#: figures -> studies and user interfaces). docs/ARCHITECTURE.md draws the same picture.
LAYERS: list[tuple[str, ...]] = [
    ("version", "checks", "defaults", "locations", "atomic", "grids", "rois", "schema", "storage", "statistics"),
    ("banks", "interventions", "outcomes", "adapters"),
    ("datasets",),
    ("zoo", "models"),
    ("estimator", "call", "incremental"),
    ("engine", "components", "baselines"),
    ("explainers",),
    ("strategies", "faithfulness"),
    ("viz",),
    ("widgets", "testing", "teaching"),
    ("studies", "sweep"),
    ("dashboard", "cli", "cli_files"),
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    """The package a module belongs to (its folder), dotted."""
    return ".".join(path.relative_to(ROOT).parent.parts)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) of every import of the module, lazy ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _dotted(path) if path.name == "__init__.py" else _package_of(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [alias.name for alias in node.names]
            if not node.module:  # "from . import x": x are modules
                found.extend((node.lineno, f"{module}.{name}", []) for name in names)
            else:
                found.append((node.lineno, module, names))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, []) for alias in node.names)
    return [item for item in found if item[1].split(".")[0] == "pdcr_lab"]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_is_in_a_layer():
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()} - {"__init__"}
    assert tops <= set(LEVEL), f"modules without a layer: {sorted(tops - set(LEVEL))}"


def test_no_module_imports_private_names_of_another_module():
    problems = []
    for path in _modules():
        own = _package_of(path) if path.name != "__init__.py" else _dotted(path)
        for line, module, names in _imports(path):
            parts = module.split(".")
            for depth, part in enumerate(parts):
                if _private(part) and ".".join(parts[:depth]) != own:
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports private module {module}")
                    break
            owner = ".".join(parts[:-1]) if _private(parts[-1]) else module
            for name in names:
                if _private(name) and owner != own:
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports private name {name} from {module}")
    assert not problems, "\n".join(problems)


def test_no_import_runs_back_up_the_layers():
    problems = []
    for path in _modules():
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if top == "__init__":
            continue  # the package's front door re-exports the public API of every layer
        for line, module, _names in _imports(path):
            target = _top(module)
            if target is None or target not in LEVEL or top not in LEVEL:
                continue
            if LEVEL[target] > LEVEL[top]:
                problems.append(f"{path.relative_to(ROOT)}:{line} ({top}, layer {LEVEL[top]}) imports {module} "
                                f"(layer {LEVEL[target]})")
    assert not problems, "\n".join(problems)


def test_analysis_packages_take_effects_not_models_and_datasets():
    problems = []
    for package in ("strategies", "faithfulness", "components"):
        for path in (PACKAGE / package).rglob("*.py"):
            for line, module, _names in _imports(path):
                if _top(module) in ("datasets", "zoo", "studies", "sweep"):
                    problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not problems, "\n".join(problems)


def test_no_function_is_longer_than_200_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 200:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "\n".join(long)


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_import_only_public_names(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    tree = ast.parse("\n".join(lines))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pdcr_lab"):
            parts = node.module.split(".")
            if any(_private(p) for p in parts) or any(_private(a.name) for a in node.names):
                problems.append(f"line {node.lineno}: from {node.module} import {[a.name for a in node.names]}")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            chain = node
            while isinstance(chain, ast.Attribute):
                chain = chain.value
            if isinstance(chain, ast.Name) and chain.id == "pdcr_lab":
                problems.append(f"line {node.lineno}: pdcr_lab...{node.attr}")
    assert not problems, "\n".join(problems)
