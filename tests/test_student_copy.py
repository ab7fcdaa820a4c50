"""The student copy runs top to bottom: every notebook of the student release (what `make student` writes and
nbgrader releases), executed at smoke scale as a student would (interactive checks, no solutions), shows no error
output. Each check says ❌; each cell that needs an unfinished exercise says it uses the course's reference."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from lecture_utils import release, runner
from lecture_utils.checks import NBGRADER_ENV, STRICT_ENV
from lecture_utils.config import HEADLESS_ENV, PROGRESS_OFF_ENV, SCALE_ENV
from lecture_utils.results import RESULTS_ENV

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNELSPEC = {"name": "compressing-nn", "display_name": "Python (compressing-nn)", "language": "python"}
HANG_GUARD_S = 900  # per cell: a guard against a hang, not a time budget


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    dest = tmp_path_factory.mktemp("release") / "student"
    release.build_student(ROOT / "notebooks", dest)
    return dest


def execute(nb: nbformat.NotebookNode, cwd: Path, results: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run ``nb`` in the course's kernel as a student would: interactive checks, smoke scale, errors kept."""
    monkeypatch.delenv(STRICT_ENV, raising=False)
    monkeypatch.delenv(NBGRADER_ENV, raising=False)
    monkeypatch.setenv(SCALE_ENV, "smoke")
    monkeypatch.setenv(RESULTS_ENV, str(results))
    monkeypatch.setenv(PROGRESS_OFF_ENV, "1")
    monkeypatch.setenv(HEADLESS_ENV, "1")  # a test client, like the runner: widgets print (config.headless)
    NotebookClient(nb, kernel_name=runner.ensure_kernel(), timeout=HANG_GUARD_S, allow_errors=True,
                   extra_arguments=["--IPKernelApp.log_level=ERROR"],
                   resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_student_notebook_runs_top_to_bottom(name, student_dir, tmp_path, monkeypatch, prepared):
    nb = execute(nbformat.read(student_dir / name, as_version=4), student_dir, tmp_path / "results.json",
                 monkeypatch)
    errors = [(i, c.source.splitlines()[0], o.get("ename"), o.get("evalue")) for i, c in enumerate(nb.cells)
              for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{name}: {errors}"
    text = {i: "".join(o.get("text", "") for o in c.get("outputs", [])) for i, c in enumerate(nb.cells)}
    checks = [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade")
              and c.cell_type == "code"]
    assert checks and all("❌" in text[i] and "not implemented yet" in text[i] for i in checks), name
    uses = [i for i, c in enumerate(nb.cells) if "lu.checks.use(" in c.source]
    assert all("has not passed its check yet" in text[i] for i in uses), name


def test_every_notebook_asks_for_the_course_kernel():
    assert runner.KERNEL_NAME == KERNELSPEC["name"]
    for path in NOTEBOOKS:
        assert nbformat.read(path, as_version=4).metadata.kernelspec == KERNELSPEC, path.name
    assert '"Python (compressing-nn)"' in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_first_cell_in_a_kernel_without_the_package_says_what_to_do_in_one_line(tmp_path, monkeypatch):
    """Every notebook's first code cell, in a kernel where ``import lecture_utils`` fails: one line, no traceback."""
    firsts = [next(c.source for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code")
              for p in NOTEBOOKS]
    hide = "import sys\nsys.modules['lecture_utils'] = None  # what a kernel without the package sees"
    nb = new_notebook(cells=[new_code_cell(hide), *[new_code_cell(src) for src in firsts]])
    execute(nb, tmp_path, tmp_path / "results.json", monkeypatch)
    assert not nb.cells[0].outputs
    for path, cell in zip(NOTEBOOKS, nb.cells[1:], strict=True):
        assert [o.output_type for o in cell.outputs] == ["error"], (path.name, cell.outputs)
        (line,) = cell.outputs[0].traceback
        assert "no module 'lecture_utils'" in line and "Python (compressing-nn)" in line and "pip install" in line
        assert "\n" not in line.strip()
