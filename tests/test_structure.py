"""The package's shape: each notebook calls its own lesson's checks."""

import ast
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

import lecture_utils as lu
from lecture_utils.checks import harness

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHECK_CALL = re.compile(r"\blu\.checks\.(\w+)\s*\(")


def _checks_called(path: Path) -> set[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c["cell_type"] == "code"]
    return {name for source in code for name in CHECK_CALL.findall(source)}


def _defined_in(module) -> set[str]:
    return {name for name, fn in inspect.getmembers(module, inspect.isfunction)
            if fn.__module__ == module.__name__ and not name.startswith("_")}


def test_there_is_a_checks_module_for_every_lesson():
    assert len(NOTEBOOKS) >= 10
    for path in NOTEBOOKS:
        importlib.import_module(f"lecture_utils.checks.lesson{path.name[:2]}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_a_notebook_calls_only_its_own_lessons_checks(path):
    lesson = importlib.import_module(f"lecture_utils.checks.lesson{path.name[:2]}")
    allowed = _defined_in(lesson) | set(harness.__all__)
    called = _checks_called(path)
    assert called, f"{path.name} calls no lu.checks.<name>("
    assert called <= allowed, f"{path.name} calls checks of other lessons: {sorted(called - allowed)}"
    assert all(getattr(lu.checks, name, None) is not None for name in called)  # re-exported from lu.checks


# Layers, lowest first: a module may import from its own layer's ALLOWED_SIDEWAYS pairs and from lower layers only.
LAYERS = [
    {"config"},  # the ground floor's own floor: every name and scale, imports nothing of the package
    {"validate", "progress", "results", "keys", "env"},
    {"fetch", "hardware"},  # what the machine holds and can do: downloads and their digests, CPU features, bandwidth
    {"data", "training"},  # the course's data, and running a model on it (train, evaluate, predict)
    {"models", "measure", "memory", "stats"},  # the teacher (trained on the data), and measuring a model by running it
    {"surgery", "quantize", "lottery", "runtime"},  # techniques that later techniques reuse: layer access, 06's
    # quantizers, 07's masked training, 06's ONNX Runtime session
    {"overparam", "distill", "prune", "heads", "lowrank", "combine", "llm"},
    {"plots", "widgets"},
    {"checks", "release", "runner"},
    {"__main__", "__init__"},  # the entry points: the command line and `import lecture_utils`
]
ALLOWED_SIDEWAYS: set[tuple[str, str]] = set()  # none: every import points down a layer


def _imports(path: Path, package: str) -> set[str]:
    """The package's modules that ``path`` imports (``from . import x``, ``from .x import y``, inside functions too)."""
    tree, found = ast.parse(path.read_text(encoding="utf-8")), set()
    inside = path.parent.name != package  # a module of a subpackage (checks/): level 2 reaches the package
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            top = node.level - inside == 1
            if top and node.module:
                found.add(node.module.split(".")[0])
            elif top:
                found.update(a.name for a in node.names)
            elif node.level == 1 and inside:
                found.add(path.parent.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found.update(n.split(".")[1] for n in names if n.startswith(f"{package}.") and n.count(".") >= 1)
    return found


def test_dependencies_point_down():
    package = ROOT / "lecture_utils"
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    modules = {p.stem: p for p in package.glob("*.py")} | {p.name: p for p in package.iterdir()
                                                           if (p / "__init__.py").exists()}
    assert set(modules) == set(layer), f"put every module in a layer: {sorted(set(modules) ^ set(layer))}"
    wrong = []
    for name, path in modules.items():
        for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            for target in _imports(file, package.name) & set(layer):
                if target != name and (layer[target] > layer[name]
                                       or layer[target] == layer[name] and (name, target) not in ALLOWED_SIDEWAYS):
                    wrong.append(f"{file.relative_to(package)} -> {target}")
    assert not wrong, "imports that point up (or sideways, unlisted): " + ", ".join(sorted(wrong))


def _package_modules() -> list[str]:
    package = ROOT / "lecture_utils"
    names = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if rel.name != "__main__":
            names.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
    return names


@pytest.mark.parametrize("name", _package_modules())
def test_every_module_says_what_it_offers(name):
    """``__all__`` in every module: it names what exists, and every public function and class defined there, so
    ``from lecture_utils.x import *`` and the API docs show the module's own helpers and not what it imported."""
    module = importlib.import_module(name)
    offered = getattr(module, "__all__", None)
    assert offered is not None, f"{name} has no __all__"
    assert len(set(offered)) == len(offered), f"{name}.__all__ repeats a name"
    missing = [n for n in offered if not hasattr(module, n) and n != "release"]  # lu.release: imported on use
    assert not missing, f"{name}.__all__ names what it lacks: {missing}"
    if name == "lecture_utils.checks.harness":
        return  # its __all__ is what a notebook may call (the test above); the rest serves the lessons' check modules
    own = {n for n, obj in vars(module).items() if not n.startswith("_") and getattr(obj, "__module__", None) == name
           and (inspect.isfunction(obj) or inspect.isclass(obj))}
    assert own <= set(offered), f"{name} defines public {sorted(own - set(offered))} but leaves them out of __all__"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_exercise_of_a_notebook_is_declared_once_and_named_like_its_check(path):
    """One declaration per exercise: the notebook's graded exercises are exactly its lesson's declared ones, each
    checked as ``lu.checks.<name>(<name>)``, so the name leads to the check, the reference and the wrong answers."""
    import nbformat

    from lecture_utils import release

    found = release.exercises(nbformat.read(path, as_version=4))
    code = [ex for ex in found if ex["cell_type"] == "code"]
    assert all(ex["check_name"] == ex["target"] for ex in code), [(ex["check_name"], ex["target"]) for ex in code]
    declared = {name for name, ex in lu.checks.EXERCISES.items() if ex.lesson == path.name[:2]}
    assert [ex["target"] for ex in code] == sorted(declared, key=[ex["target"] for ex in code].index) \
        and {ex["target"] for ex in code} == declared, (path.name, sorted(declared))


def test_every_declaration_sits_in_its_lessons_module():
    for name, ex in lu.checks.EXERCISES.items():
        assert ex.check.__module__ == f"lecture_utils.checks.lesson{ex.lesson}", name
        assert ex.name == ex.check.__name__ == name
