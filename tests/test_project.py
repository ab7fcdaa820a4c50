"""The project's own rules: pins in step, a self-contained checkout, a README that says how to run it."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = meta["dependencies"] + meta["optional-dependencies"]["dev"]
    pins = {}
    for dep in deps:
        name, _, version = dep.partition("==")
        assert version, f"{dep!r} is not pinned exactly (use ==)"
        pins[name.strip().lower()] = version.strip()
    return pins


def _environment_pins() -> dict[str, str]:
    text = (ROOT / "environment.yml").read_text()
    pip_section = text.split("- pip:", 1)[1]
    pins = {}
    for name, version in re.findall(r"^\s+-\s+([A-Za-z0-9_.\-]+)==(\S+)\s*$", pip_section, flags=re.M):
        pins[name.lower()] = version
    return pins


def test_torch_is_pinned_to_the_cpu_tested_version():
    assert _pyproject_pins()["torch"] == "2.13.0"


def test_environment_yml_carries_the_same_pins_as_pyproject():
    assert _environment_pins() == _pyproject_pins()
    assert re.search(r"^\s+-\s+python=3\.11\s*$", (ROOT / "environment.yml").read_text(), flags=re.M)


def test_installed_versions_match_the_pins():
    import importlib.metadata as md

    for name, version in _pyproject_pins().items():
        assert md.version(name).split("+")[0] == version, name


def test_nothing_refers_outside_the_project():
    outside = "/".join(["..", "shared"])  # the course's working material, not part of the product
    bad = []
    for path in ROOT.rglob("*"):
        if any(part in {".git", ".venv", ".cache", "build", "__pycache__", ".pytest_cache", ".ruff_cache"}
               for part in path.relative_to(ROOT).parts) or not path.is_file():
            continue
        if path.suffix in {".py", ".ipynb", ".md", ".yml", ".toml", ".csv", ".cfg", ""} or path.name == "Makefile":
            if outside in path.read_text(errors="ignore"):
                bad.append(str(path.relative_to(ROOT)))
    assert not bad, f"these files name a path outside the project: {bad}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make course" in readme
    assert re.search(r"^\s*make test\b", ci, flags=re.M)


def test_no_sys_path_tricks_in_notebooks():
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        text = nb.read_text()
        assert "sys.path" not in text and "%cd" not in text, nb.name
        assert "import lecture_utils as lu" in text, nb.name


def test_notebooks_are_committed_clean_and_valid():
    """Committed without outputs (make course makes the executed copies), valid nbformat with an id on every cell
    (nbformat will refuse cells without one), and unique ids (nbgrader and JupyterLab key on them)."""
    import json

    import nbformat

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        raw = json.loads(path.read_text())
        nbformat.validate(nbformat.reads(path.read_text(), as_version=4))
        ids = [c.get("id") for c in raw["cells"]]
        assert all(ids), f"{path.name}: cells {[i for i, x in enumerate(ids) if not x]} have no id"
        assert len(set(ids)) == len(ids), f"{path.name}: repeated cell ids"
        for i, cell in enumerate(raw["cells"]):
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name} cell {i} has outputs"


def test_the_licence_file_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
