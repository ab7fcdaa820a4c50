"""The package's shape: each notebook calls its own lesson's checks."""

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
