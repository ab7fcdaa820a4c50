"""The one declaration of the keys lessons record: well formed, found by name, read by lesson 08's catalogue and the
package README, and every key a notebook cell records is declared where a search finds it."""

import ast
import json
from pathlib import Path

import pytest

from lecture_utils import combine, keys

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _recorded_in_cells(path: Path) -> list[str]:
    """The first argument of every ``lu.record(...)`` in the notebook's code cells, as written (a literal's text, or
    an f-string with its placeholders)."""
    out = []
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "record" and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant):
                    out.append(arg.value)
                else:
                    assert isinstance(arg, ast.JoinedStr), (path.name, ast.get_source_segment(source, arg))
                    out.append(ast.get_source_segment(source, arg)[2:-1])  # f"..." without f and quotes
    return out


def test_every_lesson_declares_its_keys_once():
    assert sorted(keys.LESSON_KEYS) == [p.name[:2] for p in NOTEBOOKS]
    for lesson, declared in keys.LESSON_KEYS.items():
        names = [k.name for k in declared]
        assert len(names) == len(set(names)), lesson


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_a_cell_records_a_declared_key_written_as_declared(path):
    """A literal key is declared as it is; an f-string key is written with the declared placeholders, so a search for
    the declared text finds the cell."""
    lesson = path.name[:2]
    written = _recorded_in_cells(path)
    assert written, path.name
    declared = keys.lesson_keys(lesson)
    names = {k.name for k in declared}
    for key in written:  # an f-string as declared; a literal declared, or one of a declared pattern's names
        assert key in names or ("{" not in key and keys.find(key, lesson) is not None), (path.name, key)
    unused = [k.name for k in declared if k.name not in written and not any(k.pattern.fullmatch(w) for w in written)]
    assert not unused, f"declared but recorded by no cell: {unused}"


def test_find_matches_literals_and_one_part_per_placeholder():
    assert keys.find("layers.top.k3.test_accuracy").unit == "fraction"
    assert keys.find("layers.meanpool.top.k3.test_accuracy").name == "layers.meanpool.{strategy}.k3.test_accuracy"
    assert keys.find("serve.batch.ort_int4.b16.decode_tok_s").unit == "tokens/s"
    assert keys.find("teacher.train_seconds").unit == "s"
    assert keys.find("nothing.like_this") is None and keys.lesson_of("llm.baseline.ppl") == "09"
    assert keys.find("llm.baseline.ppl", "10") is None
    with pytest.raises(KeyError, match="lesson must be one of"):
        keys.lesson_keys("11")
    with pytest.raises(ValueError, match="unit must be one of"):
        keys.Key("a.b", "furlongs", "")
    with pytest.raises(ValueError, match="dotted lower-case"):
        keys.Key("Teacher", "s", "")


def test_lesson_08s_catalogue_reads_only_declared_keys():
    for variant in combine.COURSE_VARIANTS:
        reads = [f"{variant.prefix.replace('*', 'top')}.test_accuracy",
                 *(k for k in (variant.speedup, variant.size_ratio, variant.latency_ratio) if k)]
        for key in reads:
            assert keys.lesson_of(key) == variant.lesson, (variant.label, key)


def test_the_package_readme_shows_the_declared_tables():
    text = (ROOT / "lecture_utils" / "README.md").read_text(encoding="utf-8")
    for lesson in keys.LESSON_KEYS:
        assert keys.markdown_table(lesson) in text, f"regenerate lesson {lesson}'s table: keys.markdown_table"
