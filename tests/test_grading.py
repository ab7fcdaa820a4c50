"""Grading grades, with the real nbgrader (0.9.6) and the configuration the course ships (grading/).

A course directory gets two assignments: every exercise of every lesson in one notebook (each check at least once,
cheap), and one real lesson end to end. Submissions: the untouched release, a wrong answer in every exercise, the
solutions (and, for the exercises, one wrong answer only). ``nbgrader autograde`` grades them and ``nbgrader
export`` writes the CSV the scores are read back from. ``nbgrader validate`` (the Validate button) must fail the
untouched release and pass the solutions.

The whole matrix (all nine lessons × three submissions) takes longer than the suite allows; run it with
``LECTURE_UTILS_FULL_GRADING=1 python -m pytest tests/test_grading.py -k full``.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import MEASURED
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from lecture_utils import checks, release, runner
from lecture_utils.config import NBGRADER_ENV, SCALE_ENV, STRICT_ENV

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONFIG = ROOT / "grading" / "nbgrader_config.py"
LESSON = "01_size_problem"  # the real lesson graded end to end in every run of the suite
FULL_ENV = "LECTURE_UTILS_FULL_GRADING"

# A plausible wrong answer for every exercise, from its declaration (the body that replaces the solution region).
WRONG = {name: ex.graded_wrong for name, ex in checks.EXERCISES.items()}


def replace_solution(source: str, body: str) -> str:
    """``source`` with its solution region replaced by ``body``, indented like the region's BEGIN line."""
    out, inside = [], False
    for line in source.split("\n"):
        if release.BEGIN_DELIMITER in line:
            inside = True
            indent = re.match(r"\s*", line).group(0)
            out.extend(indent + b for b in body.split("\n"))
        elif release.END_DELIMITER in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def submissions(source: nbformat.NotebookNode, one_wrong: bool = False) -> dict[str, nbformat.NotebookNode]:
    """The submissions for one notebook: untouched release, all wrong, solutions (and one wrong)."""
    exercises = release.exercises(source)
    by_id = {ex["grade_id"]: ex for ex in exercises}

    def answered(wrong_ids: set[str]) -> nbformat.NotebookNode:
        nb = nbformat.reads(nbformat.writes(source), as_version=4)  # a deep copy
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in wrong_ids and by_id[grade_id]["cell_type"] == "code":
                cell.source = replace_solution(cell.source, WRONG[by_id[grade_id]["target"]])
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        return nb

    code_ids = {ex["grade_id"] for ex in exercises if ex["cell_type"] == "code"}
    subs = {"untouched": release.student_notebook(source), "wrong": answered(code_ids), "solution": answered(set())}
    if one_wrong:
        subs["one_wrong"] = answered({exercises[0]["grade_id"]})
    return subs


def exercises_notebook() -> nbformat.NotebookNode:
    """Every exercise of every lesson (solution cell and check cell, with their nbgrader metadata) in one notebook."""
    cells = [new_markdown_cell("# Every exercise of the course"),
             new_code_cell("import math\n\nimport numpy as np\nimport torch\n\nimport lecture_utils as lu"),
             new_code_cell("# what the lessons record before their prediction checks (what those compare with)\n"
                           + "\n".join(f"lu.record({k!r}, {v!r}, quiet=True)" for k, v in MEASURED.items()))]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for ex in release.exercises(nb):
            for cell in nb.cells:
                if cell.metadata.get("nbgrader", {}).get("grade_id") in (ex["grade_id"], ex["grade_id"] + "-check"):
                    copied = nbformat.from_dict(dict(cell))
                    copied["id"] = f"{path.stem[:2]}-{cell['id']}"
                    cells.append(copied)
    nb = new_notebook(cells=cells, metadata=nbformat.read(NOTEBOOKS[0], as_version=4).metadata)
    nbformat.validate(nb)
    return nb


def nbgrader_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (STRICT_ENV, NBGRADER_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env[SCALE_ENV] = "smoke"
    # nbgrader runs the `alembic` command of its environment: the venv's bin/ must be on PATH (an activated venv)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def nbgrader(course: Path, *args: str, timeout: int = 3600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=nbgrader_env(),
                          capture_output=True, text=True, timeout=timeout)
    return proc


def make_course(course: Path, assignments: dict[str, tuple[nbformat.NotebookNode, bool]]) -> None:
    """A course directory with the shipped config, one source notebook per assignment, and every submission."""
    course.mkdir(parents=True)
    shutil.copy(CONFIG, course / "nbgrader_config.py")
    runner.ensure_kernel()
    for name, (nb, _) in assignments.items():
        (course / "source" / name).mkdir(parents=True)
        nbformat.write(nb, course / "source" / name / f"{name}.ipynb")
    for name, (nb, one_wrong) in assignments.items():
        proc = nbgrader(course, "generate_assignment", name, "--force")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        released = nbformat.read(course / "release" / name / f"{name}.ipynb", as_version=4)
        assert [c.source for c in released.cells] == [c.source for c in release.student_notebook(nb).cells]
        for student, sub in submissions(nb, one_wrong).items():
            folder = course / "submitted" / student / name
            folder.mkdir(parents=True)
            nbformat.write(sub, folder / f"{name}.ipynb")


def autograde(course: Path, names: list[str]) -> dict[tuple[str, str], tuple[float, float]]:
    """Autograde every submission of ``names`` and read the scores back from ``nbgrader export``'s CSV:
    ``{(assignment, student): (score, max_score)}``."""
    for name in names:
        proc = nbgrader(course, "autograde", name, "--force")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = nbgrader(course, "export", "--to", "grades.csv")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(course / "grades.csv", newline="") as f:
        return {(r["assignment"], r["student_id"]): (float(r["score"]), float(r["max_score"]))
                for r in csv.DictReader(f)}


def points(nb: nbformat.NotebookNode) -> float:
    return sum(c.metadata.get("nbgrader", {}).get("points", 0) for c in nb.cells
               if c.metadata.get("nbgrader", {}).get("grade"))


# every test here grades with the one course directory that `graded` builds (conftest keeps them on one worker)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graded(tmp_path_factory, prepared):
    course = tmp_path_factory.mktemp("grading") / "course"
    assignments = {"exercises": (exercises_notebook(), True),
                   LESSON: (nbformat.read(ROOT / "notebooks" / f"{LESSON}.ipynb", as_version=4), False)}
    make_course(course, assignments)
    return course, assignments, autograde(course, list(assignments))


def test_every_check_earns_its_points_only_for_a_right_answer(graded):
    _, assignments, scores = graded
    full = points(assignments["exercises"][0])
    assert full == sum(len(release.exercises(nbformat.read(p, as_version=4))) for p in NOTEBOOKS)
    assert scores[("exercises", "untouched")] == (0, full)
    assert scores[("exercises", "wrong")] == (0, full)
    assert scores[("exercises", "solution")] == (full, full)
    assert scores[("exercises", "one_wrong")] == (full - 1, full)  # a wrong answer costs exactly its points


def test_a_real_lesson_is_graded_end_to_end(graded):
    course, assignments, scores = graded
    full = points(assignments[LESSON][0])
    assert full >= 2
    assert [scores[(LESSON, s)] for s in ("untouched", "wrong", "solution")] == [(0, full), (0, full), (full, full)]
    # the graded solution ran every cell without an error (no cell died of a timeout or of a missing name)
    graded_nb = nbformat.read(course / "autograded" / "solution" / LESSON / f"{LESSON}.ipynb", as_version=4)
    errors = [o for c in graded_nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    # in the untouched release only the check cells failed; every other cell ran on the course's reference
    untouched = nbformat.read(course / "autograded" / "untouched" / LESSON / f"{LESSON}.ipynb", as_version=4)
    failed = [c.metadata.get("nbgrader", {}).get("grade_id") for c in untouched.cells
              if any(o.output_type == "error" for o in c.get("outputs", []))]
    assert failed == [ex["grade_id"] + "-check" for ex in release.exercises(assignments[LESSON][0])]


def test_validate_fails_the_untouched_release_and_passes_the_solutions(graded):
    course, _, _ = graded
    untouched = nbgrader(course, "validate", "submitted/untouched/exercises/exercises.ipynb")
    assert "Success!" not in untouched.stdout and "failed" in untouched.stdout.lower(), untouched.stdout[-2000:]
    solution = nbgrader(course, "validate", "submitted/solution/exercises/exercises.ipynb")
    assert "Success! Your notebook passes all the tests." in solution.stdout, solution.stdout[-2000:]


@pytest.mark.skipif(os.environ.get(FULL_ENV) != "1", reason=f"the full lesson × submission matrix takes long; set "
                    f"{FULL_ENV}=1 to run it")
def test_full_matrix(tmp_path, prepared):
    course = tmp_path / "course"
    assignments = {p.stem: (nbformat.read(p, as_version=4), False) for p in NOTEBOOKS}
    make_course(course, assignments)
    scores = autograde(course, list(assignments))
    print("\nlesson                         untouched      wrong   solution")
    for name in assignments:
        row = [scores[(name, s)] for s in ("untouched", "wrong", "solution")]
        print(f"{name:<30} " + " ".join(f"{got:>4g}/{full:<4g}" for got, full in row))
    for name, (nb, _) in assignments.items():
        full = points(nb)
        assert [scores[(name, s)] for s in ("untouched", "wrong", "solution")] == [(0, full), (0, full),
                                                                                   (full, full)], name
