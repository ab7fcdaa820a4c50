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


@pytest.mark.parametrize("key", ["accuracy", "Teacher.acc", "teacher..acc", "teacher acc.x", "", "teacher.acc\n",
                                 " teacher.acc", "teacher.acc\t"])
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


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.sampled_from([float("nan"), float("inf"), -float("inf")]),
       st.sampled_from([float, "numpy", "tensor"]))
def test_record_refuses_non_finite_values_in_any_wrapping(x, kind):
    import numpy as np
    import torch

    value = {float: x, "numpy": np.float32(x), "tensor": torch.tensor(x)}[kind]
    with pytest.raises(ValueError, match="must be finite"):
        lu.record("test.value", value, quiet=True)
    assert "test.value" not in lu.results.recorded()


def test_record_refuses_many_numbers_complex_and_bools():
    import numpy as np
    import torch

    with pytest.raises(TypeError, match="one real number, got Tensor with 3 elements"):
        lu.record("test.value", torch.tensor([0.1, 0.2, 0.3]), quiet=True)
    with pytest.raises(TypeError, match="one real number"):
        lu.record("test.value", np.complex64(1 + 2j), quiet=True)
    with pytest.raises(TypeError, match="one real number"):
        lu.record("test.value", True, quiet=True)
    with pytest.raises(TypeError, match="quiet must be True or False"):
        lu.record("test.value", 0.5, quiet="yes")


def test_record_refuses_a_huge_int_and_a_results_path_that_is_a_folder(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="finite.*too large"):
        lu.record("a.huge", 10 ** 400)
    monkeypatch.setenv(lu.results.RESULTS_ENV, str(tmp_path))
    with pytest.raises(IsADirectoryError, match="folder"):
        lu.record("a.b", 1.0, quiet=True)
