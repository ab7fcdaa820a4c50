"""The student release: one source notebook, two audiences.

Solutions sit between nbgrader's markers ``### BEGIN SOLUTION`` and ``### END SOLUTION``. The student release
replaces each region the way nbgrader's ``generate_assignment`` does — code becomes ``# YOUR CODE HERE`` and
``raise NotImplementedError()``, markdown becomes ``YOUR ANSWER HERE`` — clears every output, and keeps the check
cells, so instructors can hand out ``build/student/`` and nbgrader users can take the sources as they are.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"  # how the course writes the markers
END = "### END SOLUTION"
BEGIN_DELIMITER = "BEGIN SOLUTION"  # what nbgrader matches: these words anywhere in a line, in any cell
END_DELIMITER = "END SOLUTION"
CODE_SCAFFOLD = ["# YOUR CODE HERE", "raise NotImplementedError()"]
MARKDOWN_SCAFFOLD = ["YOUR ANSWER HERE"]
CHECK_CALL = re.compile(r"^lu\.checks\.(\w+)\((\w+)\)\s*$")


class ReleaseError(ValueError):
    """A notebook's solution markers or nbgrader metadata are inconsistent."""


def strip_solutions(source: str, cell_type: str = "code") -> str:
    """Replace every solution region of one cell's source with the scaffold, indented like its BEGIN line.

    Matches the markers the way nbgrader does (the words ``BEGIN SOLUTION`` / ``END SOLUTION`` anywhere in a line),
    so the result equals nbgrader's ``ClearSolutions`` on the same cell — and prose must not contain those words.
    """
    out: list[str] = []
    inside = False
    for line in source.split("\n"):
        if BEGIN_DELIMITER in line:
            if inside:
                raise ReleaseError(f"Nested {BEGIN!r} in:\n{source}")
            inside = True
            indent = re.match(r"\s*", line).group(0)
            out.extend(indent + s for s in (CODE_SCAFFOLD if cell_type == "code" else MARKDOWN_SCAFFOLD))
        elif END_DELIMITER in line:
            if not inside:
                raise ReleaseError(f"{END!r} without {BEGIN!r} in:\n{source}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ReleaseError(f"{BEGIN!r} without {END!r} in:\n{source}")
    return "\n".join(out)


def has_solution(source: str) -> bool:
    """True if the source has a solution region (as nbgrader sees it)."""
    return any(BEGIN_DELIMITER in line for line in source.split("\n"))


def _is_solution_cell(cell) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution"))


def exercises(nb: nbformat.NotebookNode) -> list[dict]:
    """The notebook's exercises in order: ``{"grade_id", "solution" (source), "check" (source), "check_name",
    "target"}`` — a solution cell followed (not necessarily at once) by its graded check cell.

    Raises :class:`ReleaseError` if a solution cell lacks nbgrader metadata, ids repeat, or a solution has no
    check after it.
    """
    found: list[dict] = []
    pending: dict | None = None
    ids: set[str] = set()
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if has_solution(cell.source) and not _is_solution_cell(cell):
            raise ReleaseError(f"A cell with a solution region has no nbgrader solution metadata:\n{cell.source}")
        if _is_solution_cell(cell):
            if pending is not None and pending["cell_type"] == "code":  # written answers are graded by hand
                raise ReleaseError(f"Exercise {pending['grade_id']} has no check cell before the next exercise.")
            pending = {"grade_id": meta.get("grade_id"), "solution": cell.source, "cell_type": cell.cell_type}
        if meta.get("grade_id"):
            if meta["grade_id"] in ids:
                raise ReleaseError(f"grade_id {meta['grade_id']!r} is used twice.")
            ids.add(meta["grade_id"])
        if meta.get("grade") and cell.cell_type == "code":
            match = CHECK_CALL.match(cell.source.strip())
            if not (meta.get("locked") and meta.get("points")):
                raise ReleaseError(f"Check cell {meta.get('grade_id')!r} must be locked and carry points.")
            if pending is None or match is None:
                raise ReleaseError(f"Check cell {meta.get('grade_id')!r} must follow a solution cell and read "
                                   f"`lu.checks.<name>(<object>)`, got:\n{cell.source}")
            pending.update(check=cell.source, check_name=match.group(1), target=match.group(2))
            found.append(pending)
            pending = None
    if pending is not None and pending["cell_type"] == "code":
        raise ReleaseError(f"Exercise {pending['grade_id']} has no check cell.")
    return found


def student_notebook(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with every solution region replaced by its scaffold and every output cleared."""
    exercises(nb)  # validates markers and metadata
    out = copy.deepcopy(nb)
    out.metadata.pop("celltoolbar", None)
    for cell in out.cells:
        if has_solution(cell.source):
            cell.source = strip_solutions(cell.source, cell.cell_type)
        elif _is_solution_cell(cell):  # a solution cell without markers is all solution (nbgrader's rule)
            cell.source = "\n".join(CODE_SCAFFOLD if cell.cell_type == "code" else MARKDOWN_SCAFFOLD)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return out


RELEASE_MARK = "lecture_utils_student_release"  # notebook metadata key: this file was written by build_student


def build_student(src: Path | str = "notebooks", dest: Path | str = "build/student") -> list[Path]:
    """Write the student release of every notebook in ``src`` to ``dest``; returns the written paths.

    Refuses (:class:`ReleaseError`) a ``dest`` equal to or inside ``src``, and never replaces a notebook in ``dest``
    that an earlier release did not write (it would be someone's work, or the solutions).
    """
    src, dest = Path(src), Path(dest)
    src_r, dest_r = src.resolve(), dest.resolve()
    if dest_r == src_r or src_r in dest_r.parents:
        raise ReleaseError(f"dest must be outside src: got src={str(src)!r} and dest={str(dest)!r}; writing there "
                           "would replace or mix with the instructor's notebooks. Use e.g. dest='build/student'.")
    paths = sorted(src.glob("*.ipynb"))
    if not paths:
        raise ReleaseError(f"No notebooks in {src}")
    foreign = [dest / p.name for p in paths if (dest / p.name).exists() and not _written_by_release(dest / p.name)]
    if foreign:
        raise ReleaseError(f"dest {str(dest)!r} already holds notebooks that no student release wrote: "
                           f"{', '.join(f.name for f in foreign)}. Move them away or choose another dest; "
                           "nothing was written.")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        student = student_notebook(nbformat.read(path, as_version=4))
        student.metadata[RELEASE_MARK] = True
        target = dest / path.name
        nbformat.write(student, target)
        written.append(target)
    return written


def _written_by_release(path: Path) -> bool:
    try:
        return bool(nbformat.read(path, as_version=4).metadata.get(RELEASE_MARK))
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return False
