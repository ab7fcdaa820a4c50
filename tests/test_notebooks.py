"""Every lesson notebook runs top to bottom at smoke scale, with checks in strict mode, and records its results.

No test here asserts a wall-clock time: budgets are measured and reported by ``python -m lecture_utils course``
(``build/results.json``). The only time limit is the runner's per-cell hang guard, several times what the slowest
cell needs on a busy machine.
"""

import json
from pathlib import Path

import pytest

from lecture_utils import keys, runner

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_smoke_scale(path, tmp_path, prepared):
    res = runner.execute_notebook(path, tmp_path, "smoke")
    assert res["status"] == "ok", f"{path.name}: {res['error']} (executed copy: {tmp_path / 'notebooks'})"
    assert res["cells_executed"] > 0
    recorded, declared = set(res["results"]), keys.lesson_keys(path.name[:2])
    undeclared = {k for k in recorded if keys.find(k, path.name[:2]) is None}
    assert not undeclared, f"{path.name} recorded keys its lesson does not declare (keys.py): {undeclared}"
    missing = {k.name for k in declared if not k.optional and not any(k.pattern.fullmatch(r) for r in recorded)}
    assert not missing, f"{path.name} did not record {missing}"
    for key, value in res["results"].items():
        if key.endswith("accuracy"):
            assert 0 <= value <= 1, (key, value)
    # a headless run prints widgets as tables: no widget comm is opened (they can stall nbclient: config.headless)
    executed = json.loads((tmp_path / "notebooks" / path.name).read_text())
    views = [o for c in executed["cells"] for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    assert not views, f"{path.name} displayed a live widget in a headless run: {views[:1]}"
