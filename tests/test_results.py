import json

import pytest
import torch

import lecture_utils as lu


def test_record_writes_the_results_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "r" / "nb.json"
    monkeypatch.setenv(lu.results.RESULTS_ENV, str(path))
    lu.record("teacher.test_accuracy", 0.8125)
    lu.record("teacher.latency_ms", torch.tensor(12.5))
    data = json.loads(path.read_text())
    assert data["teacher.test_accuracy"] == 0.8125 and data["teacher.latency_ms"] == 12.5
    assert "recorded teacher.test_accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("key", ["accuracy", "Teacher.acc", "teacher..acc", "teacher acc.x", ""])
def test_record_rejects_bad_keys(key):
    with pytest.raises(ValueError, match="dotted"):
        lu.record(key, 1.0)


def test_record_rejects_non_numbers():
    with pytest.raises(TypeError):
        lu.record("a.b", "0.8")
    with pytest.raises(TypeError):
        lu.record("a.b", True)
    with pytest.raises(ValueError, match="finite"):
        lu.record("a.b", float("nan"))
