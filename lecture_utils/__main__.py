"""The course's commands, for every platform: ``python -m lecture_utils <command>``.

    prepare   fetch and verify the offline data (idempotent)
    course    prepare, then execute every notebook at laptop scale into build/ (results in build/results.json)
    test      prepare, lint, then run the whole test suite in parallel (what CI runs)
    check     the fast tier: lint and every test that executes no notebook and starts no server
    student   write the student release to build/student/ (keeps notebooks you edited; --backup-edited)
    lab       open JupyterLab on notebooks/
    doctor    check versions, data and model, and say what to fix

The Makefile only calls these, so Windows and conda users can run the same steps without make.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from .config import DEFAULT_SCALE, SCALE_ENV, SCALES, TEACHER_BUDGET_S, get_scale, project_root


def _root() -> Path:
    root = project_root()
    if root is None:
        sys.exit("Run this from the course checkout (installed with `pip install -e .`): notebooks/ was not found.")
    return root


def cmd_prepare(_args) -> int:
    from .data import prepare_sentiment, sentiment_manifest
    from .runner import ensure_kernel

    path = prepare_sentiment()
    counts = sentiment_manifest()["counts"]
    print(f"✅ Rotten Tomatoes splits in {path}: {counts}")
    from .llm import prepare_llm

    print(f"✅ SmolLM2-135M-Instruct (lesson 09) in {prepare_llm()}")
    print(f"✅ Jupyter kernel {ensure_kernel()!r} uses {sys.executable}")
    return 0


TEACHER_TIME_KEYS = {"cls": "teacher.train_seconds", "mean": "layers.meanpool.teacher.train_seconds"}


def prepare_teacher(scale: str, poolings: tuple[str, ...] = ("cls",)) -> dict[str, float]:
    """Train (once) and cache the fine-tuned teacher at ``scale`` here, with a progress bar and no cell time limit,
    so every lesson loads it in seconds and none can be cut off half-way through training it. ``poolings``: which
    heads ("cls", the course's teacher; "mean", lesson 05's controlled comparison). Returns each one's training
    time in seconds (when it was trained, perhaps in an earlier run) under :data:`TEACHER_TIME_KEYS`."""
    from .models import finetuned_teacher, teacher_dir, teacher_meta

    seconds = {}
    for pooling in poolings:
        name = "the course's teacher" if pooling == "cls" else f"the {pooling}-pooled teacher (lesson 05)"
        if teacher_meta(scale, pooling) is None:
            print(f"▶ Training {name} at {scale} scale once (minutes on a CPU; cached for every lesson)")
        finetuned_teacher(scale, device="cpu" if scale != "full" else None, progress=True, pooling=pooling)
        meta = teacher_meta(scale, pooling)
        print(f"✅ {name[0].upper() + name[1:]} at {scale} scale in {teacher_dir(scale, pooling)} (trained in "
              f"{meta.train_seconds:.0f} s, validation accuracy {meta.validation_accuracy:.4f})")
        seconds[TEACHER_TIME_KEYS[pooling]] = float(meta.train_seconds)
    return seconds


def teacher_poolings(only: list[str] | None) -> tuple[str, ...]:
    """The teachers a course run needs: the course's, and lesson 05's mean-pooled one when lesson 05 runs."""
    return ("cls", "mean") if not only or any("05".startswith(o) or o.startswith("05") for o in only) else ("cls",)


def prepare_serving(scale: str) -> None:
    """Build (once) and cache lesson 10's ONNX Runtime models at ``scale``, with a progress bar: the builder's fp32
    and 4-bit graphs, and the course's own 4-bit weights (RTN symmetric and affine, GPTQ) shipped into the latter."""
    import time

    from .llm import (
        SHIPPED_METHODS,
        build_ort_llm,
        ort_llm_dir,
        ort_llm_meta,
        shipped_options,
        shipped_ort_llm,
        shipped_settings,
    )
    from .progress import bar

    sc = get_scale(scale)
    options = shipped_options(sc)
    steps = [("fp32 graph", lambda: build_ort_llm("fp32", layers=sc.llm_layers)),
             ("4-bit graph", lambda: build_ort_llm("int4", layers=sc.llm_layers))]
    steps += [(f"shipped {m}", lambda m=m: shipped_ort_llm(m, **options)) for m in SHIPPED_METHODS]
    todo = [s for s in steps if not s[0].startswith("shipped")
            or ort_llm_meta(shipped_settings(s[0].split()[1], **options)) is None]
    if any(s[0].startswith("shipped") for s in todo):
        print(f"▶ Building lesson 10's ONNX Runtime models at {scale} scale once (GPTQ takes minutes on a CPU)")
    start = time.perf_counter()
    for _name, build in bar(steps, desc="lesson 10 models"):
        build()
    print(f"✅ Lesson 10's ONNX Runtime models in {ort_llm_dir(shipped_settings('rtn', layers=sc.llm_layers)).parent} "
          f"({time.perf_counter() - start:.0f} s)")


def runs_lesson(only: list[str] | None, number: str) -> bool:
    """Whether a course run with ``--only`` prefixes ``only`` executes lesson ``number`` ("10")."""
    return not only or any(number.startswith(o) or o.startswith(number) for o in only)


def cmd_course(args) -> int:
    from .runner import run_course

    cmd_prepare(args)
    trained = prepare_teacher(args.scale, teacher_poolings(args.only))
    if runs_lesson(args.only, "10"):
        prepare_serving(args.scale)
    root = _root()
    budget = TEACHER_BUDGET_S.get(get_scale(args.scale).name)
    summary = run_course(root / "notebooks", root / "build", scale=args.scale, only=args.only,
                         preparation={key: (s, budget) for key, s in trained.items()})
    failed = [k for k, v in summary["notebooks"].items() if v["status"] != "ok"]
    print(f"\nExecuted notebooks and HTML pages are in {root / 'build'}; numbers in {root / 'build' / 'results.json'}.")
    if failed:
        print(f"❌ Failed: {', '.join(failed)} (open build/notebooks/<name>.ipynb to see the error).")
    return 1 if failed else 0


LINTED = ("lecture_utils", "tests", "notebooks")  # what ruff checks (its settings: pyproject.toml)
MAX_TEST_WORKERS = 4  # each worker may run a notebook kernel of 1-2 GB: more would not fit a 8-16 GB laptop


def test_workers(cores: int | None = None) -> int:
    """How many pytest workers (pytest-xdist) the suite runs on: one per core, at most :data:`MAX_TEST_WORKERS`.
    Each worker uses one torch thread (tests/conftest.py), so the workers never oversubscribe the cores."""
    return max(1, min(MAX_TEST_WORKERS, cores if cores is not None else (os.cpu_count() or 1)))


def lint(root: Path) -> int:
    """ruff over the package, the tests and the notebooks; 0 when clean."""
    code = subprocess.call([sys.executable, "-m", "ruff", "check", *LINTED], cwd=root)
    print("✅ ruff: clean" if code == 0 else "❌ ruff found problems (above); `ruff check --fix` repairs many.")
    return code


def run_pytest(root: Path, extra: list[str], fast: bool = False) -> int:
    """pytest in parallel with its slowest tests listed; ``fast`` leaves out the tests marked ``slow``. pytest's
    exit code 5 (no test collected) becomes a failure."""
    # one test at a time to whichever worker is free, slowest first (tests/conftest.py: its scheduler and order)
    cmd = [sys.executable, "-m", "pytest", "-n", str(test_workers()), "--dist", "loadscope",
           "--no-loadscope-reorder", "--durations=15"]
    code = subprocess.call([*cmd, *(["-m", "not slow"] if fast else []), *extra], cwd=root)
    if code == 5:
        print("❌ pytest collected no tests: that is a failure, not a pass.")
        return 1
    return code


def _prepare_tests(poolings: tuple[str, ...], serving: bool = False) -> None:
    """The data, the language model, the smoke-scale teachers (and lesson 10's ONNX Runtime models), once, before
    the test workers start: each smoke-scale test then loads them in seconds (a cache lock keeps two builders from
    racing anyway)."""
    start = time.perf_counter()
    cmd_prepare(None)
    from .llm import prepare_llm

    prepare_llm(layers=get_scale("smoke").llm_layers)
    prepare_teacher("smoke", poolings)
    if serving:
        prepare_serving("smoke")
    print(f"✅ Prepared for the tests in {time.perf_counter() - start:.0f} s")


def cmd_test(args) -> int:
    _prepare_tests(("cls", "mean"), serving=True)
    root = _root()
    return lint(root) or run_pytest(root, args.pytest_args)


def cmd_check(args) -> int:
    _prepare_tests(("cls",))
    root = _root()
    return lint(root) or run_pytest(root, args.pytest_args, fast=True)


def cmd_student(args) -> int:
    from .release import build_student

    root = _root()
    report = build_student(root / "notebooks", root / "build" / "student",
                           backup_edited=getattr(args, "backup_edited", False))
    print(f"✅ Student release in {report.dest} (solutions replaced, outputs cleared, checks kept).")
    print(report.summary())
    return 0


def cmd_lab(args) -> int:
    cmd_prepare(args)
    root = _root()
    return subprocess.call([sys.executable, "-m", "jupyterlab", str(root / "notebooks")], cwd=root)


def cmd_doctor(_args) -> int:
    from . import doctor

    rows = doctor()
    return 0 if all(ok for _, ok, _ in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lecture_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("prepare", help="fetch and verify the offline data").set_defaults(fn=cmd_prepare)
    p = sub.add_parser("course", help="execute every notebook into build/")
    p.add_argument("--scale", choices=list(SCALES), default=os.environ.get(SCALE_ENV) or DEFAULT_SCALE)
    p.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 03")
    p.set_defaults(fn=cmd_course)
    p = sub.add_parser("test", help="lint, then the whole test suite in parallel (extra arguments go to pytest)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_test)
    p = sub.add_parser("check", help="the fast tier: lint and the tests not marked slow (extra arguments go to pytest)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_check)
    p = sub.add_parser("student", help="write the student release (never replaces a notebook you edited)")
    p.add_argument("--backup-edited", action="store_true",
                   help="rename each edited notebook to <name>.edited-<n>.ipynb and write a fresh copy in its place")
    p.set_defaults(fn=cmd_student)
    sub.add_parser("lab", help="open JupyterLab on the notebooks").set_defaults(fn=cmd_lab)
    sub.add_parser("doctor", help="check the installation").set_defaults(fn=cmd_doctor)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["test"], ["check"]):  # everything after the command goes to pytest as it is, options included
        args = parser.parse_args(argv[:1])
        args.pytest_args = argv[1:]
    else:
        args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
