"""The student release: one source notebook, two audiences.

Solutions sit between nbgrader's markers ``### BEGIN SOLUTION`` and ``### END SOLUTION``. The student release
replaces each region the way nbgrader's ``generate_assignment`` does — code becomes ``# YOUR CODE HERE`` and
``raise NotImplementedError()``, markdown becomes ``YOUR ANSWER HERE`` — clears every output, and keeps the check
cells, so instructors can hand out ``build/student/`` and nbgrader users can take the sources as they are.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import validate
from .config import atomic_write

__all__ = ["BEGIN", "CODE_SCAFFOLD", "END", "MARKDOWN_SCAFFOLD", "RELEASE_MARK", "Release", "ReleaseError",
           "build_student", "exercises", "has_solution", "strip_solutions", "student_notebook", "work_hash"]

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
    source = validate.text(source, "source")
    cell_type = validate.choice(cell_type, "cell_type", ["code", "markdown", "raw"])
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
EDITED_SUFFIX = ".edited"  # a kept notebook's backup: 01_x.ipynb -> 01_x.edited-1.ipynb (with backup_edited=True)


def work_hash(nb: nbformat.NotebookNode) -> str:
    """SHA-256 of what a student can change in a notebook: each cell's type, source and attachments, in order.

    Outputs, execution counts and metadata (kernel, widget state, cell ids, collapsed/scrolled) are left out:
    opening, running and saving a notebook in JupyterLab rewrites those without any work being done, and running
    it again reproduces them.
    """
    cells = [[c.get("cell_type"), c.get("source", ""), c.get("attachments") or {}] for c in nb.get("cells", [])]
    return hashlib.sha256(json.dumps(cells, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass
class Release:
    """What :func:`build_student` did in ``dest``. ``written``: notebooks it wrote (new, or its own unedited earlier
    copy refreshed); ``current``: its unedited earlier copy was already what this release writes, left as it was
    (outputs included); ``kept``: edited since the release wrote them, NOT replaced; ``backups``: with
    ``backup_edited=True``, each edited notebook's new name (the fresh copy took its place)."""

    dest: Path
    written: list[Path] = field(default_factory=list)
    current: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    backups: dict[Path, Path] = field(default_factory=dict)

    def summary(self) -> str:
        """Several lines for a person: what was written, what was kept and how to get a fresh copy of it."""
        lines = [f"Student release in {self.dest}: {len(self.written)} written, {len(self.current)} already up to "
                 f"date, {len(self.kept)} kept because you edited them."]
        for old, new in self.backups.items():
            lines.append(f"  {old.name}: your edited copy is now {new.name}; {old.name} is a fresh copy.")
        if self.kept:
            lines.append("  Kept (edited since the release wrote them, not replaced): "
                         + ", ".join(p.name for p in self.kept))
            lines.append("  For a fresh copy of one, rename or move your edited file and run the release again, or "
                         "run `python -m lecture_utils student --backup-edited`, which renames each edited "
                         f"notebook to <name>{EDITED_SUFFIX}-<n>.ipynb and writes a fresh copy in its place.")
        return "\n".join(lines)


def build_student(src: Path | str = "notebooks", dest: Path | str = "build/student",
                  backup_edited: bool = False) -> Release:
    """Write the student release of every notebook in ``src`` (a folder) to ``dest``; returns a :class:`Release`.

    Never loses anyone's work:

    - refuses (:class:`ReleaseError`, nothing written) a ``dest`` equal to or inside ``src``, and a ``dest`` that
      holds a notebook no student release wrote (someone's work, or the solutions);
    - each notebook it writes carries, in its metadata, a hash of what it wrote (:func:`work_hash`: cell types,
      sources and attachments). On the next release, a copy whose hash still matches — unedited, even if it was
      run and saved — is replaced by the new release (or left as it is if the release did not change); an edited
      one is **kept** and listed in ``Release.kept``. With ``backup_edited=True`` an edited notebook is first
      copied to ``<name>.edited-<n>.ipynb`` (a new name, never an existing file) and then replaced by a fresh copy;
    - every write is atomic (a temporary file, then one rename): an interrupted release leaves the old file.
    """
    src, dest = Path(src), Path(dest)
    backup_edited = validate.flag(backup_edited, "backup_edited")
    if src.is_file():
        raise ReleaseError(f"src must be the folder of the source notebooks, got the file {str(src)!r}; pass its "
                           f"folder, {str(src.parent)!r}.")
    if not src.is_dir():
        raise ReleaseError(f"src must be a folder of notebooks, got {str(src)!r}, which does not exist.")
    if dest.exists() and not dest.is_dir():
        raise ReleaseError(f"dest must be a folder, got {str(dest)!r}, which is a file; nothing was written.")
    src_r, dest_r = src.resolve(), dest.resolve()
    if dest_r == src_r or src_r in dest_r.parents:
        raise ReleaseError(f"dest must be outside src: got src={str(src)!r} and dest={str(dest)!r}; writing there "
                           "would replace or mix with the instructor's notebooks. Use e.g. dest='build/student'.")
    paths = sorted(src.glob("*.ipynb"))
    if not paths:
        raise ReleaseError(f"No notebooks in {src}")
    students = {path.name: student_notebook(nbformat.read(path, as_version=4)) for path in paths}
    for student in students.values():
        student.metadata[RELEASE_MARK] = {"work_sha256": work_hash(student)}
    existing = {name: _read(dest / name) for name in students if (dest / name).exists()}
    foreign = [name for name, nb in existing.items() if nb is None or not nb.metadata.get(RELEASE_MARK)]
    if foreign:
        raise ReleaseError(f"dest {str(dest)!r} already holds notebooks that no student release wrote: "
                           f"{', '.join(foreign)}. Move them away or choose another dest; nothing was written.")
    report = Release(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, student in students.items():
        target, old = dest / name, existing.get(name)
        if old is not None:
            now = work_hash(old)
            if now == student.metadata[RELEASE_MARK]["work_sha256"]:  # what this release writes: nothing to lose
                if old.metadata[RELEASE_MARK] == student.metadata[RELEASE_MARK]:
                    report.current.append(target)
                    continue
            elif now != _released_hash(old, student):
                if not backup_edited:
                    report.kept.append(target)
                    continue
                report.backups[target] = _backup(target)
        atomic_write(target, nbformat.writes(student) + "\n")
        report.written.append(target)
    return report


def _released_hash(old: nbformat.NotebookNode, new: nbformat.NotebookNode) -> str | None:
    """The hash of what the release wrote into ``old``. A copy from before hashes were recorded (its mark is
    ``True``) counts as unedited only if it equals what this release writes."""
    mark = old.metadata[RELEASE_MARK]
    if isinstance(mark, dict) and isinstance(mark.get("work_sha256"), str):
        return mark["work_sha256"]
    return new.metadata[RELEASE_MARK]["work_sha256"]


def _backup(target: Path) -> Path:
    """Copy ``target`` to the first free ``<stem>.edited-<n>.ipynb`` (exclusive create: never an existing file)."""
    data = target.read_bytes()
    for n in itertools.count(1):
        backup = target.with_name(f"{target.stem}{EDITED_SUFFIX}-{n}{target.suffix}")
        try:
            with open(backup, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except FileExistsError:
            continue
        return backup
    raise AssertionError("unreachable")


def _read(path: Path) -> nbformat.NotebookNode | None:
    try:
        return nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return None
