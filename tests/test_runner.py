"""The runner executes notebooks in a fresh kernel and collects their recorded results."""

import json
import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from lecture_utils import runner


def _write(path, cells):
    nbformat.write(new_notebook(cells=cells), path)


@pytest.mark.slow
def test_run_course_collects_results_and_reports_errors(tmp_path, capsys):
    src = tmp_path / "notebooks"
    src.mkdir()
    _write(src / "00_ok.ipynb", [new_markdown_cell("# ok"), new_code_cell(
        "import lecture_utils as lu, os\nlu.record('demo.value', 2.5)\nlu.record('demo.scale_is_smoke', "
        f"float(os.environ['{runner.SCALE_ENV}'] == 'smoke'))")])
    _write(src / "01_fails.ipynb", [new_code_cell("raise RuntimeError('broken on purpose')")])
    _write(src / "02_empty.ipynb", [new_markdown_cell("only prose")])
    summary = runner.run_course(src, tmp_path / "build", scale="smoke", html=True)
    assert summary["results"] == {"demo.value": 2.5, "demo.scale_is_smoke": 1.0}
    nbs = summary["notebooks"]
    assert nbs["00_ok"]["status"] == "ok" and nbs["00_ok"]["seconds"] > 0
    assert nbs["01_fails"]["status"] == "error" and "broken on purpose" in nbs["01_fails"]["error"]
    assert nbs["02_empty"]["status"] == "error" and "no code cell" in nbs["02_empty"]["error"]
    on_disk = json.loads((tmp_path / "build" / "results.json").read_text())
    assert on_disk["notebooks"] == nbs and on_disk["results"] == summary["results"]
    assert (tmp_path / "build" / "notebooks" / "00_ok.ipynb").exists()
    assert (tmp_path / "build" / "html" / "00_ok.html").read_text().count("demo.value") >= 1
    assert "demo.value" in capsys.readouterr().out  # the summary table


@pytest.mark.slow
def test_only_selects_by_prefix_and_merges(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    _write(src / "00_a.ipynb", [new_code_cell("import lecture_utils as lu; lu.record('a.x', 1)")])
    _write(src / "01_b.ipynb", [new_code_cell("import lecture_utils as lu; lu.record('b.x', 2)")])
    runner.run_course(src, tmp_path / "build", scale="smoke", html=False)
    summary = runner.run_course(src, tmp_path / "build", scale="smoke", only=["01"], html=False)
    assert set(summary["notebooks"]) == {"00_a", "01_b"} and summary["results"] == {"a.x": 1.0, "b.x": 2.0}


def test_format_summary_lists_notebooks_and_results():
    text = runner.format_summary({"scale": "laptop", "notebooks": {"00_x": {"status": "ok", "seconds": 3.0}},
                                  "results": {"teacher.test_accuracy": 0.8321}})
    assert "00_x" in text and "teacher.test_accuracy" in text and "0.8321" in text


@pytest.mark.slow
def test_the_failed_or_timed_out_cell_is_named_and_the_callers_environment_is_untouched(tmp_path, monkeypatch):
    monkeypatch.delenv(runner.STRICT_ENV, raising=False)
    src = tmp_path / "notebooks"
    src.mkdir()
    _write(src / "00_slow.ipynb", [new_code_cell("x = 1"), new_markdown_cell("prose"),
                                   new_code_cell("\n# sleeps past the limit\nimport time\ntime.sleep(60)"),
                                   new_code_cell("y = 2")])
    res = runner.execute_notebook(src / "00_slow.ipynb", tmp_path / "build", "smoke", timeout_s=3)
    assert res["status"] == "error" and "CellTimeoutError" in res["error"]
    assert "(in cell 2: '# sleeps past the limit')" in res["error"], res["error"]
    _write(src / "01_raises.ipynb", [new_code_cell("a = 1"), new_code_cell("b = 2"),
                                     new_code_cell("raise ValueError('here')"), new_code_cell("c = 3")])
    res = runner.execute_notebook(src / "01_raises.ipynb", tmp_path / "build", "smoke")
    assert "(in cell 2: \"raise ValueError('here')\")" in res["error"], res["error"]
    # the kernel got strict mode and the scale; this process did not
    assert runner.STRICT_ENV not in os.environ


@pytest.mark.slow
def test_summary_reports_each_notebook_against_its_budget(tmp_path, monkeypatch):
    src = tmp_path / "notebooks"
    src.mkdir()
    _write(src / "00_a.ipynb", [new_code_cell("x = 1")])
    for budget, within in ((1e9, True), (1e-9, False)):  # budgets no run can miss / meet, whatever the machine
        monkeypatch.setitem(runner.BUDGET_S, "smoke", budget)
        entry = runner.run_course(src, tmp_path / "build", scale="smoke", html=False)["notebooks"]["00_a"]
        assert entry["budget_s"] == budget and entry["within_budget"] is within
    text = runner.format_summary({"scale": "laptop", "notebooks": {
        "00_x": {"status": "ok", "seconds": 400.0, "budget_s": 300, "within_budget": False},
        "01_y": {"status": "ok", "seconds": 100.0, "budget_s": 300, "within_budget": True}}, "results": {}})
    assert "⚠️ 00_x" in text and "✅ 01_y" in text and "over budget" in text
    assert "1 step(s) over budget: 00_x (400 s of 300 s)" in text
    # the one-time preparation is recorded and reported against its own budget, before the lessons
    summary = runner.run_course(src, tmp_path / "build", scale="smoke", html=False,
                                preparation={"teacher.train_seconds": (75.0, 60.0)})
    assert summary["results"]["teacher.train_seconds"] == 75.0
    assert summary["preparation"]["teacher.train_seconds"]["within_budget"] is False
    assert runner.over_budget(summary)[0] == "teacher.train_seconds (75 s of 60 s)"
    assert summary["machine"]["cpu"]


def test_the_kernels_environment_is_built_without_touching_this_process(tmp_path, monkeypatch):
    monkeypatch.delenv(runner.STRICT_ENV, raising=False)
    monkeypatch.setenv(runner.SCALE_ENV, "laptop")
    before = dict(os.environ)
    env = runner.kernel_env("smoke", tmp_path / "r.json")
    assert dict(os.environ) == before  # the caller keeps its scale and stays lenient
    assert env[runner.SCALE_ENV] == "smoke" and env[runner.STRICT_ENV] == "1" and env[runner.PROGRESS_OFF_ENV] == "1"
    assert env[runner.RESULTS_ENV] == str((tmp_path / "r.json").resolve())
    assert env["PATH"] == os.environ["PATH"]  # the rest of this environment is passed on
    assert runner.kernel_env("smoke", tmp_path / "r.json", base={})[runner.SCALE_ENV] == "smoke"


def test_run_course_refuses_a_folder_without_notebooks(tmp_path):
    import pytest

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No notebooks"):
        runner.run_course(tmp_path / "empty", tmp_path / "build", scale="smoke")
    with pytest.raises(FileNotFoundError, match="missing"):
        runner.run_course(tmp_path / "nowhere", tmp_path / "build", scale="smoke")
    assert not (tmp_path / "build").exists()
