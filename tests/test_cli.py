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


def test_student_command_writes_the_release(tmp_path, monkeypatch, capsys):
    """Into a copy of the checkout: the test suite never writes where a user works (build/student/)."""
    import shutil

    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    monkeypatch.setattr(cli, "_root", lambda: tmp_path)
    assert cli.main(["student"]) == 0
    assert sorted(p.name for p in (tmp_path / "build" / "student").glob("*.ipynb")) == sorted(
        p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert "Student release" in capsys.readouterr().out


def _fake_calls(monkeypatch, lint_code: int, pytest_code: int) -> list[list[str]]:
    """Record the commands the CLI starts instead of running them: ruff exits ``lint_code``, pytest ``pytest_code``."""
    calls: list[list[str]] = []

    def call(cmd, *args, **kwargs):
        calls.append(list(cmd))
        return lint_code if "ruff" in cmd else pytest_code

    monkeypatch.setattr(cli.subprocess, "call", call)
    monkeypatch.setattr(cli, "prepare_teacher", lambda scale, poolings: None)
    monkeypatch.setattr(cli, "prepare_serving", lambda scale: None)
    return calls


def test_pytest_collecting_nothing_is_a_failure(monkeypatch, prepared, capsys):
    _fake_calls(monkeypatch, 0, 5)
    assert cli.main(["test"]) == 1
    assert "no tests" in capsys.readouterr().out
    _fake_calls(monkeypatch, 0, 0)
    assert cli.main(["test"]) == 0


def test_test_and_check_lint_first_and_run_in_parallel(monkeypatch, prepared, capsys):
    calls = _fake_calls(monkeypatch, 1, 0)
    assert cli.main(["test"]) == 1  # lint fails: no test runs
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "ruff", "check"] and "notebooks" in calls[0]
    calls = _fake_calls(monkeypatch, 0, 0)
    assert cli.main(["check", "-k", "llm"]) == 0
    pytest_cmd = calls[1]
    assert pytest_cmd[1:3] == ["-m", "pytest"] and "--durations=15" in pytest_cmd and pytest_cmd[-2:] == ["-k", "llm"]
    assert pytest_cmd[pytest_cmd.index("-m", 3) + 1] == "not slow"  # the fast tier leaves the slow tests out
    assert pytest_cmd[pytest_cmd.index("-n") + 1] == str(cli.test_workers())
    calls = _fake_calls(monkeypatch, 0, 0)
    assert cli.main(["test"]) == 0 and "not slow" not in calls[1]


def test_workers_are_one_per_core_up_to_a_limit():
    assert cli.test_workers(1) == 1 and cli.test_workers(2) == 2
    assert cli.test_workers(64) == cli.MAX_TEST_WORKERS and cli.test_workers(0) == 1


def test_unknown_scale_is_refused():
    with pytest.raises(SystemExit):
        cli.main(["course", "--scale", "huge"])


def test_course_trains_the_teacher_before_any_notebook_runs(monkeypatch, prepared, capsys):
    """The teacher is trained by the command itself (no cell time limit), before the first lesson needs it."""
    calls = []
    def fake_prepare_teacher(scale, poolings):
        calls.append(("teacher", scale, poolings))
        return {cli.TEACHER_TIME_KEYS[p]: 12.5 for p in poolings}

    monkeypatch.setattr(cli, "prepare_teacher", fake_prepare_teacher)
    import lecture_utils.runner as runner

    def fake_run_course(src, build, scale=None, only=None, preparation=None):
        calls.append(("notebooks", scale))
        # the teachers' training times go to the summary, each with the preparation budget of this scale
        assert preparation == {cli.TEACHER_TIME_KEYS[p]: (12.5, cli.TEACHER_BUDGET_S["smoke"])
                               for p in calls[0][2]}
        return {"notebooks": {}}

    monkeypatch.setattr(runner, "run_course", fake_run_course)
    monkeypatch.setattr(cli, "prepare_serving", lambda scale: calls.append(("serving", scale)))
    assert cli.main(["course", "--scale", "smoke"]) == 0
    assert calls == [("teacher", "smoke", ("cls", "mean")), ("serving", "smoke"), ("notebooks", "smoke")]
    calls.clear()
    assert cli.main(["course", "--scale", "smoke", "--only", "03"]) == 0
    assert calls[0] == ("teacher", "smoke", ("cls",))  # lesson 05's mean-pooled teacher only when 05 runs
    assert ("serving", "smoke") not in calls  # lesson 10's exports only when lesson 10 runs


def test_teacher_poolings_follow_the_lessons_that_run():
    assert cli.teacher_poolings(None) == ("cls", "mean")
    assert cli.teacher_poolings(["05"]) == cli.teacher_poolings(["0"]) == ("cls", "mean")
    assert cli.teacher_poolings(["03", "09"]) == ("cls",)


def test_prepare_teacher_loads_the_cached_teacher_and_says_so(prepared, capsys):
    seconds = cli.prepare_teacher("smoke", ("cls", "mean"))
    assert set(seconds) == {"teacher.train_seconds", "layers.meanpool.teacher.train_seconds"}
    assert all(s > 0 for s in seconds.values())
    out = capsys.readouterr().out
    assert "The course's teacher at smoke scale" in out and "The mean-pooled teacher (lesson 05) at smoke" in out
