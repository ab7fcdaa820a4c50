"""The command-line entry point behind the Makefile."""

import subprocess
import sys
from pathlib import Path

import pytest

from lecture_utils import __main__ as cli

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "lecture_utils", "--help"], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    for command in ("prepare", "course", "test", "student", "lab", "doctor"):
        assert command in out


def test_student_command_writes_the_release(capsys):
    assert cli.main(["student"]) == 0
    assert sorted(p.name for p in (ROOT / "build" / "student").glob("*.ipynb")) == sorted(
        p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert "Student release" in capsys.readouterr().out


def test_pytest_collecting_nothing_is_a_failure(monkeypatch, prepared, capsys):
    monkeypatch.setattr(cli.subprocess, "call", lambda *a, **k: 5)
    assert cli.main(["test"]) == 1
    assert "no tests" in capsys.readouterr().out
    monkeypatch.setattr(cli.subprocess, "call", lambda *a, **k: 0)
    assert cli.main(["test"]) == 0


def test_unknown_scale_is_refused():
    with pytest.raises(SystemExit):
        cli.main(["course", "--scale", "huge"])


def test_course_trains_the_teacher_before_any_notebook_runs(monkeypatch, prepared, capsys):
    """The teacher is trained by the command itself (no cell time limit), before the first lesson needs it."""
    calls = []
    monkeypatch.setattr(cli, "prepare_teacher", lambda scale, poolings: calls.append(("teacher", scale, poolings)))
    import lecture_utils.runner as runner

    def fake_run_course(src, build, scale=None, only=None):
        calls.append(("notebooks", scale))
        return {"notebooks": {}}

    monkeypatch.setattr(runner, "run_course", fake_run_course)
    assert cli.main(["course", "--scale", "smoke"]) == 0
    assert calls == [("teacher", "smoke", ("cls", "mean")), ("notebooks", "smoke")]
    calls.clear()
    assert cli.main(["course", "--scale", "smoke", "--only", "03"]) == 0
    assert calls[0] == ("teacher", "smoke", ("cls",))  # lesson 05's mean-pooled teacher only when 05 runs


def test_teacher_poolings_follow_the_lessons_that_run():
    assert cli.teacher_poolings(None) == ("cls", "mean")
    assert cli.teacher_poolings(["05"]) == cli.teacher_poolings(["0"]) == ("cls", "mean")
    assert cli.teacher_poolings(["03", "09"]) == ("cls",)


def test_prepare_teacher_loads_the_cached_teacher_and_says_so(prepared, capsys):
    cli.prepare_teacher("smoke", ("cls", "mean"))
    out = capsys.readouterr().out
    assert "The course's teacher at smoke scale" in out and "The mean-pooled teacher (lesson 05) at smoke" in out
