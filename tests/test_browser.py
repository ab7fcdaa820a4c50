"""Lessons in a real browser: JupyterLab (from this environment) in headless Chromium, driven by playwright.

Lessons 01 and 06 are opened at smoke scale in a temporary copy of the notebooks, every cell is run from the Run
menu, and the page must show no error output, every widget as a control (none as "Error displaying widget"), no
widget label cut off, and each widget's output must change when one of its controls changes. Skipped, with one
line saying how to enable it, where Debian's chromium or the playwright package is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from lecture_utils import runner
from lecture_utils.config import HEADLESS_ENV, NBGRADER_ENV, PROGRESS_OFF_ENV, SCALE_ENV, STRICT_ENV

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("LECTURE_UTILS_CHROMIUM", "/usr/bin/chromium"))
LESSONS = ["01_size_problem", "06_quantization"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_GUARD_S = 1800  # a hang guard for one lesson's Run All, not a time budget

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.skipif(
    sync_playwright is None or not CHROMIUM.exists(),
    reason="browser test needs Chromium and playwright: apt-get install -y chromium && pip install -e '.[dev]' "
           "(or run .ci/run, which installs both)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, prepared):
    """JupyterLab on a free localhost port with a token, serving a temporary copy of the lessons."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    root.mkdir()
    for lesson in LESSONS:
        shutil.copy(ROOT / "notebooks" / f"{lesson}.ipynb", root)
    settings = home / "settings"
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))  # every cell in the DOM
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    runner.ensure_kernel()
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in (STRICT_ENV, NBGRADER_ENV, PROGRESS_OFF_ENV, HEADLESS_ENV)}
    env.update({SCALE_ENV: "smoke"})
    env.update(JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTER_DATA_DIR=str(home / "data"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    log = open(home / "lab.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                             "--LabApp.expose_app_in_browser=True", "--allow-root"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: {(home / 'lab.log').read_text()[-2000:]}") from None
                time.sleep(1)
        yield {"base": base, "token": token, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


NOTEBOOK_PANEL = "window.jupyterapp.shell.currentWidget"


def _run_all(page) -> None:
    """Wait for the notebook's kernel, run every cell (the Run menu's command), wait until all have run."""
    page.wait_for_function(f"""() => window.jupyterapp && {NOTEBOOK_PANEL} && {NOTEBOOK_PANEL}.sessionContext
        && {NOTEBOOK_PANEL}.sessionContext.session && {NOTEBOOK_PANEL}.sessionContext.session.kernel
        && {NOTEBOOK_PANEL}.sessionContext.session.kernel.status === 'idle'""", timeout=180_000, polling=1000)
    assert page.evaluate(f"{NOTEBOOK_PANEL}.sessionContext.session.kernel.name") == "compressing-nn"
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # done: the kernel is idle, no cell is queued or running ([*]), and every code cell has run — or one raised
    # (JupyterLab then drops the queue: waiting for the rest would only run into the hang guard)
    page.wait_for_function(f"""() => {{
        const panel = {NOTEBOOK_PANEL};
        const cells = panel.content.widgets.filter(c => c.model.type === 'code');
        const prompts = [...panel.node.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent);
        const failed = cells.some(c => Array.from({{length: c.model.outputs.length}},
                                                  (_, j) => c.model.outputs.get(j).type).includes('error'));
        return (failed || cells.every(c => c.model.executionCount !== null))
            && !prompts.some(t => t.includes('*')) && panel.sessionContext.session.kernel.status === 'idle';
    }}""", timeout=RUN_GUARD_S * 1000, polling=2000)


def _save_and_read(page, path: Path) -> nbformat.NotebookNode:
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function(f"!{NOTEBOOK_PANEL}.context.model.dirty", timeout=60_000)
    return nbformat.read(path, as_version=4)


def _widget_outputs_change(page, panel) -> list[str]:
    """For every widget box with an Output area: change one control, wait for the output text to change.
    Returns a description of each widget that did not react."""
    boxes = panel.locator(".jp-OutputArea-output .widget-vbox:has(.widget-output)")
    stuck = []
    for i in range(boxes.count()):
        box = boxes.nth(i)
        output = box.locator(".widget-output").first
        before = output.inner_text()
        if box.locator("select").count():
            select = box.locator("select").first
            options = select.locator("option").all_inner_texts()
            current = select.evaluate("s => s.options[s.selectedIndex].text")
            select.select_option(label=next(o for o in options if o != current))
            what = "dropdown"
        elif box.locator("input[type=checkbox]").count():
            box.locator("input[type=checkbox]").first.click()
            what = "checkbox"
        else:
            box.locator(".widget-toggle-button:not(.mod-active)").first.click()
            what = "toggle button"
        try:
            page.wait_for_function("([el, old]) => el.innerText !== old", arg=[output.element_handle(), before],
                                   timeout=60_000)
        except Exception:  # noqa: BLE001 - reported below
            stuck.append(f"widget {i}: changing its {what} left the output at {before!r}")
    return stuck


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_runs_in_jupyterlab_and_its_widgets_work(lesson, lab, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{lab['base']}/lab/tree/{lesson}.ipynb?token={lab['token']}&reset")  # only this lesson open
        page.wait_for_function("window.jupyterapp !== undefined", timeout=180_000)
        _run_all(page)
        saved = _save_and_read(page, lab["root"] / f"{lesson}.ipynb")
        errors = [(i, c.source.splitlines()[0], o.get("ename"), o.get("evalue")) for i, c in enumerate(saved.cells)
                  for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, errors
        assert saved.metadata.kernelspec.name == "compressing-nn"
        panel = page.locator(f"[id='{page.evaluate(f'{NOTEBOOK_PANEL}.id')}']")
        text = panel.inner_text()
        assert "Error displaying widget" not in text and "model not found" not in text
        views = page.evaluate(f"""() => {{  // every widget output of the notebook model and what its view shows
            const found = [];
            {NOTEBOOK_PANEL}.content.widgets.forEach((cell, i) => {{
                if (cell.model.type !== 'code') return;
                for (let j = 0; j < cell.model.outputs.length; j++) {{
                    if (!cell.model.outputs.get(j).data['application/vnd.jupyter.widget-view+json']) continue;
                    const node = cell.outputArea.widgets[j] && cell.outputArea.widgets[j].node;
                    found.push({{cell: i, control: !!(node && node.querySelector(
                        '.jupyter-widgets input, .jupyter-widgets select, .jupyter-widgets button'))}});
                }}
            }});
            return found;
        }}""")
        assert views, "the lesson shows no widget"
        assert all(v["control"] for v in views), f"widget outputs without a control: {views}"
        cut = page.evaluate(f"""() => [...{NOTEBOOK_PANEL}.node.querySelectorAll('.jp-OutputArea-output .widget-label, \
.jp-OutputArea-output .widget-checkbox label, .jp-OutputArea-output .widget-label-basic')]
            .filter(e => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)""")
        assert not cut, f"widget labels cut off: {cut}"
        assert not _widget_outputs_change(page, panel)
    except Exception:
        page.screenshot(path=str(lab["root"].parent / f"{lesson}-failure.png"), full_page=True)
        raise
    finally:
        page.close()
