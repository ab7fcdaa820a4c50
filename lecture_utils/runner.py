"""Execute the course's notebooks top to bottom and collect what they measured.

``run_course()`` runs every notebook in a fresh kernel at one scale, writes the executed copy and an HTML page
to ``build/``, and merges the numbers each notebook recorded (``lu.record``) into ``build/results.json``::

    {"scale": "laptop", "notebooks": {"00_welcome": {"seconds": 212.4, "status": "ok"}, ...},
     "results": {"teacher.test_accuracy": 0.83, ...}}
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import nbformat

from .config import (
    BUDGET_S,
    HEADLESS_ENV,
    PROGRESS_OFF_ENV,
    RESULTS_ENV,
    SCALE_ENV,
    STRICT_ENV,
    atomic_write,
    get_scale,
)

__all__ = ["KERNEL_NAME", "CELL_TIMEOUT_S", "ensure_kernel", "kernel_env", "execute_notebook", "export_html",
           "notebook_paths", "run_course", "over_budget", "format_summary"]

KERNEL_NAME = "compressing-nn"
# Hang guards, in seconds per cell: several times what the slowest cell needs on a busy machine, so a slow laptop
# is slow, not failed. The lesson budgets (config.BUDGET_S) are what the course run reports against.
CELL_TIMEOUT_S = {"smoke": 900, "laptop": 3600, "full": 7200}


def ensure_kernel() -> str:
    """Install (once) a Jupyter kernel named ``compressing-nn`` that runs this Python; return its name.

    It lives inside this environment (``sys.prefix``), so the runner and JupyterLab use the interpreter that has
    the pinned packages, whatever other kernels the machine has.
    """
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if Path(spec.argv[0]).resolve() == Path(sys.executable).resolve():
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    install(kernel_name=KERNEL_NAME, display_name="Python (compressing-nn)", prefix=sys.prefix)
    return KERNEL_NAME


def kernel_env(scale: str, results_file: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a notebook's kernel runs in: ``base`` (default: a copy of this process's environment, which
    stays as it is) plus the scale, the file ``lu.record`` writes to, strict checks, and no progress bars (a static
    page would show them frozen at 0%)."""
    base = dict(os.environ if base is None else base)
    return {**base, SCALE_ENV: scale, RESULTS_ENV: str(Path(results_file).resolve()), STRICT_ENV: "1",
            PROGRESS_OFF_ENV: "1", HEADLESS_ENV: "1"}


def execute_notebook(path: Path, build: Path, scale: str, timeout_s: int | None = None) -> dict:
    """Run one notebook in a fresh kernel with ``LECTURE_UTILS_SCALE=scale``.

    Writes ``build/notebooks/<stem>.ipynb`` (executed, even on error) and returns ``{"seconds", "status" ("ok" or
    "error"), "error" (message or None), "cells_executed", "results" (what it recorded)}``.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    results_file = build / "results" / f"{path.stem}.json"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.unlink(missing_ok=True)
    env = kernel_env(scale, results_file)
    started: list[int] = []  # index of every cell the kernel started, in order

    def on_cell_start(cell, cell_index, **_kw):
        started.append(cell_index)

    # the kernel listens on localhost only; its start-up warning about unencrypted local sockets is noise here
    client = NotebookClient(nb, kernel_name=ensure_kernel(), timeout=timeout_s or CELL_TIMEOUT_S[scale],
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(path.parent.resolve())}},
                            on_cell_start=on_cell_start)
    error = None
    start = time.perf_counter()
    try:
        client.execute(env=env)
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        lines = str(exc).strip().splitlines()
        error = f"{type(exc).__name__}: {lines[-1][:400] if lines else ''}"
        cell = _failed_cell(nb, started[-1] if started else None)
        if cell is not None:
            error += f" (in cell {cell[0]}: {cell[1]!r})"
    finally:
        seconds = time.perf_counter() - start
    out = build / "notebooks" / path.name
    atomic_write(out, nbformat.writes(nb) + "\n")
    executed = sum(1 for c in nb.cells if c.cell_type == "code" and c.get("execution_count"))
    if error is None and executed == 0:
        error = "no code cell was executed"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    return {"seconds": round(seconds, 1), "status": "ok" if error is None else "error", "error": error,
            "cells_executed": executed, "results": results}


def _failed_cell(nb, last_started: int | None = None) -> tuple[int, str] | None:
    """Index and first line of the cell that failed: the last cell the kernel started (it raised, timed out or
    died in it); without that record, the first cell with an error output."""
    def first_line(cell) -> str:
        return next((line for line in cell.source.splitlines() if line.strip()), "")

    if last_started is not None and 0 <= last_started < len(nb.cells):
        return last_started, first_line(nb.cells[last_started])
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return i, first_line(cell)
    return None


def export_html(executed: Path, dest: Path) -> Path:
    """Write an HTML page of an executed notebook."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    atomic_write(dest, body)
    return dest


def notebook_paths(src: Path, only: list[str] | None = None) -> list[Path]:
    """The lesson notebooks in order; ``only`` keeps those whose name starts with one of the given prefixes."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"src must be the folder of the course's notebooks, got {str(src)!r}, which is "
                                + ("a file" if src.exists() else "missing"))
    paths = sorted(p for p in src.glob("*.ipynb") if not p.name.startswith("."))
    if not paths:
        raise ValueError(f"No notebooks (*.ipynb) in {str(src)!r}: nothing to run. Pass the folder that holds the "
                         "lessons, e.g. 'notebooks'.")
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
        if not paths:
            raise ValueError(f"No notebook in {src} starts with {only}.")
    return paths


def run_course(src: Path | str = "notebooks", build: Path | str = "build", scale: str | None = None,
               only: list[str] | None = None, html: bool = True,
               preparation: Mapping[str, tuple[float, float | None]] | None = None) -> dict:
    """Execute the notebooks at ``scale`` (default ``$LECTURE_UTILS_SCALE`` or laptop), write ``build/`` and
    ``build/results.json``, print a summary table, and return the summary dict.

    ``preparation``: the one-time steps run before the lessons, ``{key: (seconds, budget_s or None)}`` (e.g.
    ``{"teacher.train_seconds": (612.0, 900)}``); each is recorded as a result and reported against its budget."""
    src, build = Path(src), Path(build)
    sc = get_scale(scale)
    paths = notebook_paths(src, only)
    summary_path = build / "results.json"
    summary = {"scale": sc.name, "notebooks": {}, "results": {}}
    if only and summary_path.exists():  # a partial run updates the last full summary
        previous = json.loads(summary_path.read_text())
        if previous.get("scale") == sc.name:
            summary.update(notebooks=previous.get("notebooks", {}), results=previous.get("results", {}))
    summary["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                          "cpu": _cpu_name()}
    for key, (seconds, budget) in (preparation or {}).items():
        summary.setdefault("preparation", {})[key] = _timed(seconds, "ok", budget)
        summary["results"][key] = seconds
    for path in paths:
        print(f"▶ {path.name} at {sc.name} scale ...", flush=True)
        res = execute_notebook(path, build, sc.name)
        if html:
            export_html(build / "notebooks" / path.name, build / "html" / f"{path.stem}.html")
        budget = BUDGET_S.get(sc.name)
        entry = _timed(res["seconds"], res["status"], budget)
        if res["error"]:
            entry["error"] = res["error"]
        summary["notebooks"][path.stem] = entry
        summary["results"].update(res["results"])
        print(f"  {_mark(entry)} {res['seconds']:.0f} s{_budget_note(res['seconds'], budget)}"
              + (f" — {res['error']}" if res["error"] else ""), flush=True)
        atomic_write(summary_path, json.dumps(summary, indent=2, sort_keys=True))
    print(format_summary(summary))
    return summary


def _timed(seconds: float, status: str, budget: float | None) -> dict:
    """One timed step of a course run: its seconds, status and budget, and whether it stayed within it."""
    return {"seconds": round(float(seconds), 1), "status": status, "budget_s": budget,
            "within_budget": None if budget is None else seconds <= budget}


def _mark(entry: dict) -> str:
    """❌ failed, ⚠️ ran but over its budget, ✅ ran within it (or has none)."""
    return "❌" if entry["status"] != "ok" else "⚠️" if entry.get("within_budget") is False else "✅"


def _cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def over_budget(summary: dict) -> list[str]:
    """Every timed step of ``summary`` (preparation, then notebooks) that ran past its budget, as
    ``"name (seconds s of budget s)"``."""
    steps = {**summary.get("preparation", {}), **summary["notebooks"]}
    return [f"{name} ({e['seconds']:.0f} s of {e['budget_s']:.0f} s)" for name, e in steps.items()
            if e.get("within_budget") is False]


def _budget_note(seconds: float, budget: float | None) -> str:
    """' (budget 300 s)' or ' (over its 300 s budget)'; empty when the scale has no budget."""
    if budget is None:
        return ""
    return f" (budget {budget:.0f} s)" if seconds <= budget else f" (over its {budget:.0f} s budget)"


def format_summary(summary: dict) -> str:
    """The summary as a plain-text table: notebooks with status, time and budget, then every recorded result."""
    machine = summary.get("machine", {})
    lines = [f"\nCourse at {summary['scale']} scale"
             + (f" on {machine['cpu']}, {machine['cpus']} cores" if machine.get("cpu") else ""),
             f"   {'step':<32} {'status':<7} {'seconds':>8} {'budget':>7}"]
    for stem, entry in {**summary.get("preparation", {}), **summary["notebooks"]}.items():
        budget = entry.get("budget_s")
        over = " over budget" if entry.get("within_budget") is False else ""
        lines.append(f"{_mark(entry)} {stem:<32} {entry['status']:<7} {entry['seconds']:>8.1f} "
                     f"{'' if budget is None else f'{budget:.0f}':>7}{over}")
    over = over_budget(summary)
    lines.append(f"⚠️  {len(over)} step(s) over budget: {'; '.join(over)}" if over
                 else "✅ every step within its budget")
    if summary["results"]:
        width = max(len(k) for k in summary["results"])
        lines.append(f"\n{'result':<{width}} {'value':>12}")
        for key, value in sorted(summary["results"].items()):
            lines.append(f"{key:<{width}} {value:>12.4g}")
    return "\n".join(lines)
