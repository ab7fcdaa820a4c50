"""Progress bars show live in Jupyter and leave plain text (never a dangling widget) in the saved notebook."""

import json

import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from nbformat.v4 import new_code_cell, new_notebook

from lecture_utils import progress, runner

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def test_outside_a_kernel_it_is_a_text_bar_and_respects_the_switches(monkeypatch, capsys):
    monkeypatch.delenv(progress.DISABLE_ENV, raising=False)
    assert not progress.in_notebook_kernel()
    assert list(progress.bar(range(3), total=3, desc="x")) == [0, 1, 2]
    assert progress.bar(range(3), enabled=False).disable
    monkeypatch.setenv(progress.DISABLE_ENV, "1")
    assert progress.bar(range(3)).disable


@pytest.fixture(scope="module")
def executed(tmp_path_factory, prepared):
    nb = new_notebook(cells=[
        new_code_cell("import lecture_utils as lu\nfor _ in lu.progress.bar(range(50), total=50, desc='kept', "
                      "leave=True):\n    pass\nprint('after the bar')"),
        new_code_cell("import torch\nmodel = torch.nn.Linear(4, 2)\nbatches = [(torch.randn(8, 4), "
                      "torch.randint(0, 2, (8,))) for _ in range(3)]\n"
                      "h = lu.training.train(model, batches, max_steps=6, lr=1e-3)\n"
                      "print(lu.training.evaluate(model, batches).examples)"),
    ])
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(progress.DISABLE_ENV, raising=False)
        NotebookClient(nb, kernel_name=runner.ensure_kernel(), timeout=120).execute()
    return nb


@pytest.mark.slow
def test_saved_notebook_holds_no_widget_reference(executed):
    outputs = [o for c in executed.cells for o in c.outputs]
    assert not [o for o in outputs if WIDGET_VIEW in o.get("data", {})], json.dumps(outputs)[:2000]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "kept: 100%" in text and "50/50" in text  # leave=True keeps the final state as text
    assert "after the bar" in text and "24" in text  # the training and evaluation bars left nothing
    assert "0%" not in text.replace("100%", "")


@pytest.mark.slow
def test_html_page_shows_no_frozen_bar(executed):
    body, _ = HTMLExporter().from_notebook_node(executed)
    assert "kept: 100%" in body
    assert "0%|" not in body.replace("100%|", "") and "model not found" not in body


def test_string_flags_and_negative_totals_are_refused():
    from lecture_utils.progress import bar

    with pytest.raises(TypeError, match="enabled"):
        bar(range(3), enabled="no")
    with pytest.raises(TypeError, match="leave"):
        bar(range(3), leave="no")
    with pytest.raises(ValueError, match="total"):
        bar(total=-5)
